"""The search page in a real headless Chromium: upload a clip, click search, see the singer.

Uses Debian's ``/usr/bin/chromium`` (``make browser``, part of ``make test``, installs it)
through the PyPI ``playwright`` package; no browser is ever downloaded. The answer is the
shared search schema (docs/SEARCH_SCHEMA.md); a failed upload must clear the previous
clip's photos and species guess.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_serve import running_server  # noqa: E402 - tests/ is on sys.path under pytest

CHROMIUM = Path(os.environ.get("BIRDBRIDGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser_ready():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's 'chromium' package; `make test` tries apt-get)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the 'playwright' Python package is not installed (pip install -e '.[dev]')")


def test_upload_search_and_see_the_right_species_then_a_failed_upload_clears_it(browser_ready, demo_run, tmp_path):
    from playwright.sync_api import sync_playwright

    from birdbridge.data.synthetic import load_world
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_collection

    out = demo_run[0]
    world = load_world(out / "world")
    index_dir = tmp_path / "index"
    ImageIndex.build(index_dir, Teacher.load(str(out / "teacher")), records_from_collection(world, ("test",)))
    from birdbridge.retrieval.search import search_audio

    # a clip the model gets right offline (accuracy is test_search.py's job; this is the page's)
    candidates = [a for a in world.audio_split("test") if a.species_id in {s.id for s in world.species[3:6]}]
    found = search_audio(str(out / "model"), index_dir, [world.resolve(a.path) for a in candidates], k=1)
    clip = next(a for a, r in zip(candidates, found) if r.hits[0].species_id == a.species_id)
    species = clip.species_id
    shot = tmp_path / "page.png"

    with running_server(out / "model", index_dir, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900})
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#file", str(world.resolve(clip.path)))
            page.fill("#k", "8")
            page.click("#search")
            page.wait_for_selector("#results figure.hit img", timeout=60_000)
            # wait until the thumbnails have actually loaded from /images/{id}
            page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=30_000)
            figures = page.query_selector_all("#results figure.hit")
            assert len(figures) == 8
            assert figures[0].get_attribute("data-species") == species
            assert world.species_by_id[species].scientific_name in figures[0].inner_text()
            assert "8 images" in page.inner_text("#status")
            assert "species guess" in page.inner_text("#guess")
            page.screenshot(path=str(shot), full_page=True)
            # a failed upload next: the previous clip's photos and guess must not stay as if they were its answer
            bad = tmp_path / "notes.wav"
            bad.write_text("field notes, not a recording\n")
            page.set_input_files("#file", str(bad))
            page.click("#search")
            page.wait_for_selector("#status.err", timeout=60_000)
            assert "415" in page.inner_text("#status") and "not_audio" in page.inner_text("#status")
            assert page.query_selector_all("#results figure") == [] and page.inner_text("#guess").strip() == ""
            # and a good clip after it is answered again
            page.set_input_files("#file", str(world.resolve(clip.path)))
            page.click("#search")
            page.wait_for_selector("#results figure.hit", timeout=60_000)
            assert page.query_selector_all("#results figure.hit")[0].get_attribute("data-species") == species
        finally:
            browser.close()
    data = shot.read_bytes()
    assert len(data) > 10_000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("BIRDBRIDGE_KEEP_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(data)
