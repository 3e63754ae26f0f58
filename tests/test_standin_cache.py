"""The stand-in cache (issue 25 item 4): a hit gives the very weights a fresh pretraining gives."""

from __future__ import annotations

import pytest


def _tensors(d, name):
    from safetensors.torch import load_file

    return load_file(str(d / name))


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bool((a[k] == b[k]).all()), k


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from birdbridge.data.synthetic import SyntheticWorld, load_world

    w = SyntheticWorld(0)
    root = tmp_path_factory.mktemp("world")
    w.write(root)
    return w, load_world(root)


def test_teacher_and_student_from_the_cache_are_bit_identical_to_fresh(world, tmp_path, monkeypatch):
    from birdbridge.distill import standin_cache
    from birdbridge.distill.standins import pretrain_clap, train_teacher

    w, coll = world
    monkeypatch.setenv(standin_cache.CACHE_ENV, str(tmp_path / "cache"))
    heard = []
    for run in ("fresh", "miss", "hit"):
        cache = run != "fresh"
        t = train_teacher(coll, tmp_path / run / "teacher", steps=3, seed=0, cache=cache,
                          progress=lambda s, n, loss: heard.append((run, loss)))
        s = pretrain_clap(coll, w, tmp_path / run / "student", steps=3, seed=0, cache=cache,
                          progress=lambda s, n, loss: heard.append((run, loss)))
        assert (t / "open_clip_config.json").is_file() and (s / "config.json").is_file()
    for name, f in (("teacher", "open_clip_model.safetensors"), ("student", "model.safetensors")):
        fresh = _tensors(tmp_path / "fresh" / name, f)
        _same(fresh, _tensors(tmp_path / "miss" / name, f))
        _same(fresh, _tensors(tmp_path / "hit" / name, f))
    # the hit trained nothing: one report per model, with no loss
    assert [loss for run, loss in heard if run == "hit"] == [None, None]
    assert all(loss is not None for run, loss in heard if run != "hit")
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "cache").iterdir())
    assert entries == ["student", "teacher"]


def test_the_key_changes_with_what_the_weights_depend_on(world, tmp_path, monkeypatch):
    from birdbridge.distill import standin_cache

    base = {"steps": 3, "seed": 0}
    k = standin_cache.cache_key("teacher", base)
    assert k == standin_cache.cache_key("teacher", dict(base))
    assert k != standin_cache.cache_key("teacher", {**base, "seed": 1})
    assert k != standin_cache.cache_key("teacher", {**base, "steps": 4})
    assert k != standin_cache.cache_key("student", base)
    monkeypatch.setattr(standin_cache, "code_digest", lambda: "other code")
    assert k != standin_cache.cache_key("teacher", base)


def test_off_trains_in_place_and_keeps_nothing(world, tmp_path, monkeypatch):
    from birdbridge.distill import standin_cache
    from birdbridge.distill.standins import train_teacher

    monkeypatch.setenv(standin_cache.CACHE_ENV, "off")
    assert standin_cache.cache_root() is None
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train_teacher(world[1], tmp_path / "t", steps=2, seed=0)
    assert (tmp_path / "t" / "open_clip_model.safetensors").is_file()
    assert not (tmp_path / "home").exists()
