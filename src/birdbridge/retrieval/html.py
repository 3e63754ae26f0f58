"""One HTML page for search results: open it from disk, mail it, archive it.

CSS sits in a ``<style>`` block; each photo found is inlined once as a base64 JPEG
thumbnail (a CSS class per photo, however many recordings found it), each recording gets
a spectrogram (matplotlib) and a player. A page of up to :data:`INLINE_MAX_RECORDINGS`
recordings is self-contained: recordings and spectrograms are inline data URIs, nothing is
fetched when it opens. A batch page (more recordings) opens with a per-recording summary
table and stays light: each player links the recording by its path relative to the page
(``preload="none"``: nothing is read until played) and spectrograms are small JPEGs, so
70 recordings make a page of about a megabyte instead of 20. The only other links are the
attributions' licence and source URLs, as plain anchors.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .results import SearchResult, Window

AUDIO_MIME = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg",
              "AIFF": "audio/aiff", "W64": "audio/wav", "RF64": "audio/wav"}
SPECTROGRAM_MAX_S = 120.0  # longer recordings: the spectrogram shows the first two minutes
INLINE_MAX_RECORDINGS = 5  # more than this is a batch page: recordings linked, not inlined
AUDIO_EXCERPT_SR = 22_050

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;background:#fafaf7;color:#222}
h1{font-size:1.4rem;margin:0 0 .3rem} .sub{color:#666;font-size:.9rem;margin-bottom:1.2rem}
section.query{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;margin-bottom:1.5rem}
section.query h2{font-size:1.1rem;margin:0 0 .5rem;word-break:break-all}
.meta{color:#555;font-size:.85rem;margin:.3rem 0} .err{color:#a00}
img.spec{max-width:100%;height:auto;display:block;margin:.5rem 0;border:1px solid #eee}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:.8rem;margin-top:.6rem}
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:.4rem;background:#fcfcfc}
.thumb{width:100%;aspect-ratio:1/1;background:#eee center/cover no-repeat;border-radius:4px}
table.summary{border-collapse:collapse;font-size:.85rem;margin-bottom:1.5rem;background:#fff}
table.summary td,table.summary th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
figcaption{font-size:.8rem;line-height:1.3} .score{font-weight:600} .sp{font-style:italic;color:#333}
.attr{color:#777;font-size:.72rem;word-break:break-word} .attr a{color:#557}
.guess{font-size:.85rem} .missing{display:flex;align-items:center;justify-content:center;aspect-ratio:1/1;background:#eee;color:#999}
"""

def _b64(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

def thumbnail_data_uri(path: str | Path, px: int = 160) -> str | None:
    """A JPEG thumbnail (longest side ``px``) as a data URI, or None when the image is unusable now."""
    from ..data.images import load_image
    from ..errors import BadInputError

    try:
        im = load_image(path)
    except BadInputError:
        return None
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82)
    return _b64(buf.getvalue(), "image/jpeg")

def audio_data_uri(path: str | Path, max_bytes: int = 4_000_000) -> tuple[str | None, str]:
    """``(data URI, note)``: the file itself when small, else a mono WAV excerpt that fits."""
    import soundfile as sf

    from ..data.audio import load_audio
    from ..errors import BadInputError

    p = Path(path)
    try:
        fmt = sf.info(str(p)).format
    except Exception:  # noqa: BLE001 - the player is optional; the query result says why
        return None, "audio not playable"
    if p.stat().st_size <= max_bytes and fmt in AUDIO_MIME:
        return _b64(p.read_bytes(), AUDIO_MIME[fmt]), ""
    seconds = max(1.0, (max_bytes - 1024) / (2 * AUDIO_EXCERPT_SR))
    try:
        wave = load_audio(p, AUDIO_EXCERPT_SR, max_duration_s=seconds, reject_silent=False)
    except BadInputError:
        return None, "audio not playable"
    buf = io.BytesIO()
    sf.write(buf, wave, AUDIO_EXCERPT_SR, format="WAV", subtype="PCM_16")
    return _b64(buf.getvalue(), "audio/wav"), f"player: first {seconds:.0f} s"

def spectrogram_data_uri(path: str | Path, windows: Sequence[Window] = (), highlight: int | None = None, *,
                         small: bool = False) -> str | None:
    """A log-magnitude spectrogram (PNG; ``small``: a lighter JPEG); a cyan bar marks the window that found the top hit."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import soundfile as sf

    from ..data.audio import load_audio
    from ..errors import BadInputError

    try:
        sr = min(int(sf.info(str(path)).samplerate), 32_000)
        wave = load_audio(path, sr, max_duration_s=SPECTROGRAM_MAX_S, reject_silent=False)
    except (BadInputError, RuntimeError, OSError):
        return None
    fig, ax = plt.subplots(figsize=(8, 2.0), dpi=60 if small else 90)
    nfft = 512 if sr > 20_000 else 256
    with np.errstate(divide="ignore"):  # digital silence: log10(0) is drawn as the floor colour anyway
        ax.specgram(wave + 1e-9, NFFT=nfft, Fs=sr, noverlap=nfft // 2, cmap="magma")
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("Hz", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(0, len(wave) / sr)
    if highlight is not None and 0 <= highlight < len(windows):
        w = windows[highlight]  # a bar along the top: shading would tint the spectrogram itself
        ax.axvspan(w.start_s, w.end_s, ymin=0.93, ymax=1.0, color="cyan", lw=0)
    fig.tight_layout()
    buf = io.BytesIO()
    if small:
        fig.savefig(buf, format="jpeg", pil_kwargs={"quality": 60})
    else:
        fig.savefig(buf, format="png")
    plt.close(fig)
    return _b64(buf.getvalue(), "image/jpeg" if small else "image/png")

_CC = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z\-]+)/([0-9.]+)", re.I)

def licence_label(licence: str) -> str:
    """``https://creativecommons.org/licenses/by-sa/2.0/deed.en`` → ``CC BY-SA 2.0``."""
    m = _CC.search(licence or "")
    if m:
        return "CC0 " + m.group(3) if m.group(2).lower() == "zero" else f"CC {m.group(2).upper()} {m.group(3)}"
    return licence

def _link(url: str, label: str) -> str:
    # Only http(s) becomes a link: a metadata value like "javascript:..." stays inert text.
    if url.startswith(("https://", "http://")):
        return f'<a href="{html.escape(url, quote=True)}" rel="noopener noreferrer">{html.escape(label)}</a>'
    return html.escape(label or url)

def attribution_html(author: str, licence: str, source: str) -> str:
    parts = []
    if author:
        parts.append(f"© {html.escape(author)}")
    if licence:
        parts.append(_link(licence, licence_label(licence)))
    if source:
        parts.append(_link(source, "source") if source.startswith(("https://", "http://")) else html.escape(source))
    return " · ".join(parts)

def _species_label(common: str, scientific: str, species_id: str) -> str:
    if common and scientific:
        return f'{html.escape(common)} <span class="sp">({html.escape(scientific)})</span>'
    if scientific:
        return f'<span class="sp">{html.escape(scientific)}</span>'
    return html.escape(species_id) if species_id else "species unknown"

def _recording_link(path: str, base: Path | None) -> str:
    """The recording as a URL relative to the page's folder (absolute ``file:`` URL when none is given)."""
    import os
    from urllib.parse import quote

    p = Path(path).resolve()
    if base is None:
        return p.as_uri()
    try:
        return quote(Path(os.path.relpath(p, base)).as_posix())
    except ValueError:  # another drive (Windows)
        return p.as_uri()


def _query_section(res: SearchResult, n: int, thumbs: dict, thumb_px: int, audio_max_bytes: int,
                   batch: bool, base: Path | None) -> str:
    e = html.escape
    out = [f'<section class="query" id="q{n}"><h2>{e(Path(res.path).name)}</h2>']
    if not res.ok:
        out.append(f'<p class="err">could not use this recording: {e(res.error or "")} {e(res.error_detail)}</p></section>')
        return "\n".join(out)
    out.append(f'<p class="meta">{res.duration_s:.1f} s · {len(res.windows)} window(s) · score = {e(res.aggregate)} '
               f'cosine over windows</p>')
    if batch:
        link = _recording_link(res.path, base)
        out.append(f'<audio controls preload="none" src="{e(link)}"></audio> <span class="meta">{e(res.path)}</span>')
    else:
        uri, note = audio_data_uri(res.path, audio_max_bytes)
        if uri:
            out.append(f'<audio controls preload="none" src="{uri}"></audio> <span class="meta">{e(note)}</span>')
    spec = spectrogram_data_uri(res.path, res.windows, res.hits[0].best_window.index if res.hits else None, small=batch)
    if spec:
        out.append(f'<img class="spec" alt="spectrogram of {e(Path(res.path).name)}" src="{spec}">')
    if res.species_guess:
        g = ", ".join(f"{_species_label(s['common_name'], s['scientific_name'], s['species_id'])} {s['score']:.2f}"
                      for s in res.species_guess[:3])
        out.append(f'<p class="guess">species guess (zero-shot): {g}</p>')
    out.append('<div class="grid">')
    for h in res.hits:
        if h.id not in thumbs:
            thumbs[h.id] = thumbnail_data_uri(h.path, thumb_px) if h.path else None
        label = e(h.common_name or h.scientific_name or h.name)
        # each photo's pixels are in the page once (a CSS class), however many recordings found it
        img = (f'<div class="thumb i{h.id}" role="img" aria-label="{label}"></div>' if thumbs[h.id]
               else '<div class="missing">image missing</div>')
        out.append(
            f'<figure class="hit" data-species="{e(h.species_id)}">{img}<figcaption>'
            f'<span class="score">#{h.rank} · {h.score:.3f}</span><br>{_species_label(h.common_name, h.scientific_name, h.species_id)}'
            f'<br><span class="meta">best window {h.window_start_s:.1f}–{h.window_end_s:.1f} s</span>'
            f'<br><span class="attr">{attribution_html(h.author, h.license, h.source)}</span></figcaption></figure>')
    out.append("</div></section>")
    return "\n".join(out)


def _summary(results: Sequence[SearchResult]) -> str:
    """One row per recording: what it found first, so a batch reads at a glance."""
    e = html.escape
    rows = ['<table class="summary"><tr><th>#</th><th>recording</th><th>length</th><th>top photo</th><th>score</th>'
            '<th>best window</th><th>species guess</th></tr>']
    for n, r in enumerate(results, start=1):
        name = f'<a href="#q{n}">{e(Path(r.path).name)}</a>'
        if not r.ok:
            rows.append(f'<tr><td>{n}</td><td>{name}</td><td colspan="5" class="err">not used: {e(r.error or "")}</td></tr>')
            continue
        cells = ["", "", ""]
        if r.hits:
            top = r.hits[0]
            cells = [_species_label(top.common_name, top.scientific_name, top.species_id), f"{top.score:.3f}",
                     f"{top.window_start_s:.1f}–{top.window_end_s:.1f} s"]
        guess = ""
        if r.species_guess:
            g = r.species_guess[0]
            guess = f"{_species_label(g['common_name'], g['scientific_name'], g['species_id'])} {g['score']:.2f}"
        rows.append(f"<tr><td>{n}</td><td>{name}</td><td>{r.duration_s:.1f} s</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + f"<td>{guess}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def render_html(results: Sequence[SearchResult], *, title: str = "birdbridge: pictures of the singer",
                subtitle: str = "", thumb_px: int = 160, audio_max_bytes: int = 4_000_000,
                page_dir: str | Path | None = None) -> str:
    """The whole page as a string (write it with :func:`write_html`, which knows where it goes).

    ``page_dir``: the folder the page will be written to; a batch page links recordings
    relative to it (absolute ``file:`` links when None).
    """
    thumbs: dict[int, str | None] = {}
    batch = len(results) > INLINE_MAX_RECORDINGS
    base = Path(page_dir).resolve() if page_dir is not None else None
    sections = "\n".join(_query_section(r, n, thumbs, thumb_px, audio_max_bytes, batch, base)
                          for n, r in enumerate(results, start=1))
    summary = _summary(results) if len(results) > 1 else ""
    photos = "".join(f'.i{i}{{background-image:url("{uri}")}}' for i, uri in thumbs.items() if uri)
    sub = html.escape(subtitle) if subtitle else f"{len(results)} recording(s)"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}{photos}</style></head>\n<body>"
            f'<h1>{html.escape(title)}</h1><div class="sub">{sub}</div>\n{summary}\n{sections}\n</body></html>\n')


def write_html(results: Sequence[SearchResult], out: str | Path, **kwargs) -> Path:
    from ..io import atomic_write_text

    out = Path(out)
    atomic_write_text(out, render_html(results, page_dir=kwargs.pop("page_dir", out.parent), **kwargs))
    return out


__all__ = ["render_html", "write_html", "thumbnail_data_uri", "audio_data_uri", "spectrogram_data_uri", "licence_label",
           "INLINE_MAX_RECORDINGS"]
