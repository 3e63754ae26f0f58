import torch

from birdbridge.data.synthetic import SyntheticWorld
from birdbridge.encoders.species_text import TextEmbeddingCache, cache_key, teacher_species_text
from birdbridge.encoders.teacher import Teacher
from birdbridge.taxonomy import prompts


def _species():
    return SyntheticWorld(0, n_orders=1, n_families=2, n_genera=2, n_species=2).species


def test_teacher_never_called_on_a_cache_hit(tmp_path, tiny_open_clip_dir):
    species = _species()
    loads = []

    def load():
        loads.append(1)
        return Teacher.load(str(tiny_open_clip_dir))

    cache = TextEmbeddingCache(tmp_path)
    first = cache.get_many(str(tiny_open_clip_dir), species, ["common", "taxonomic"], "single", load)
    assert len(loads) == 1 and cache.misses == 2 and cache.hits == 0

    def must_not_load():
        raise AssertionError("teacher loaded on a cache hit")

    again = TextEmbeddingCache(tmp_path).get_many(str(tiny_open_clip_dir), species, ["common", "taxonomic"], "single", must_not_load)
    for k in first:
        assert torch.equal(first[k], again[k])
    assert first["common"].shape == (len(species), 64)


def test_text_tower_called_once_per_miss(tmp_path, tiny_open_clip_dir):
    teacher = Teacher.load(str(tiny_open_clip_dir))
    cache = TextEmbeddingCache(tmp_path)
    species = _species()
    cache.get(str(tiny_open_clip_dir), species, "common", "single", lambda: teacher)
    cache.get(str(tiny_open_clip_dir), species, "common", "single", lambda: teacher)
    assert teacher.text_calls == 1


def test_key_covers_recipe_species_and_teacher(tmp_path, tiny_open_clip_dir):
    species = _species()
    tid = str(tiny_open_clip_dir)
    k = cache_key(tid, species, "common", "single")
    assert k != cache_key(tid, species, "scientific", "single")
    assert k != cache_key(tid, species, "common", "openai")
    assert k != cache_key(tid, species[:-1], "common", "single")
    assert k != cache_key("hf-hub:imageomics/bioclip-2", species, "common", "single")
    # a local teacher whose weights change in place gets a new key
    w = next(tiny_open_clip_dir.glob("*.safetensors"))
    data = w.read_bytes()
    try:
        w.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        assert cache_key(tid, species, "common", "single") != k
    finally:
        w.write_bytes(data)


def test_tree_of_life_recipe_normalise_average_renormalise(tiny_open_clip_dir):
    teacher = Teacher.load(str(tiny_open_clip_dir))
    sp = _species()[0]
    got = teacher_species_text(teacher, [sp], "taxonomic_common", "openai")[0]
    each = teacher.encode_text(prompts(sp, "taxonomic_common", "openai"))
    assert each.shape[0] == 80
    assert torch.allclose(each.norm(dim=1), torch.ones(80), atol=1e-5)
    want = each.mean(0)
    want = want / want.norm()
    assert torch.allclose(got, want, atol=1e-6)
