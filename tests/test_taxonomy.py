import random

import pytest

from birdbridge.taxonomy import (
    PROMPT_TYPES,
    Species,
    prompt_body,
    prompts,
    resolve_prompt_types,
    sample_prompt_types,
    taxonomic_string,
)

WARBLER = Species(
    id="3517", scientific_name="Setophaga coronata", common_name="Yellow-rumped Warbler",
    order="Passeriformes", family="Parulidae", genus="Setophaga", epithet="coronata",
)


def test_exact_bioclip_prompt_strings():
    assert prompts(WARBLER, "scientific") == ["a photo of Setophaga coronata."]
    assert prompts(WARBLER, "common") == ["a photo of Yellow-rumped Warbler."]
    assert prompts(WARBLER, "taxonomic") == ["a photo of Animalia Chordata Aves Passeriformes Parulidae Setophaga coronata."]
    assert prompts(WARBLER, "scientific_common") == ["a photo of Setophaga coronata with common name Yellow-rumped Warbler."]
    assert prompts(WARBLER, "taxonomic_common") == [
        "a photo of Animalia Chordata Aves Passeriformes Parulidae Setophaga coronata with common name Yellow-rumped Warbler."
    ]


def test_ranks_capitalised_epithet_lower_case():
    sp = Species(id="x", scientific_name="setophaga Coronata", kingdom="animalia", phylum="chordata", class_="aves",
                 order="passeriformes", family="parulidae")
    assert taxonomic_string(sp) == "Animalia Chordata Aves Passeriformes Parulidae Setophaga coronata"


def test_missing_common_name_falls_back_to_scientific():
    sp = Species(id="x", scientific_name="Sayornis nigricans")
    assert prompt_body(sp, "common") == "Sayornis nigricans"
    assert prompt_body(sp, "scientific_common") == "Sayornis nigricans with common name Sayornis nigricans"


def test_openai_templates_are_the_80_imagenet_ones():
    ps = prompts(WARBLER, "common", "openai")
    assert len(ps) == 80 and len(set(ps)) == 80
    assert all("Yellow-rumped Warbler" in p for p in ps)
    assert "a bad photo of a Yellow-rumped Warbler." in ps


def test_mixed_is_the_papers_three_types_and_is_seeded():
    # the paper samples common names, scientific names and taxonomic descriptions
    assert resolve_prompt_types("mixed") == ("common", "scientific", "taxonomic")
    a = sample_prompt_types("mixed", 500, random.Random(1))
    b = sample_prompt_types("mixed", 500, random.Random(1))
    assert a == b and set(a) == {"common", "scientific", "taxonomic"}
    assert sample_prompt_types("common", 3, random.Random(0)) == ["common"] * 3


def test_prompt_type_lists_name_any_of_the_five():
    assert resolve_prompt_types(["taxonomic_common", "common"]) == ("taxonomic_common", "common")
    assert resolve_prompt_types(["mixed", "common", "scientific_common"]) == (
        "common", "scientific", "taxonomic", "scientific_common")  # expanded, no repeats
    assert resolve_prompt_types(list(PROMPT_TYPES)) == PROMPT_TYPES
    assert set(sample_prompt_types(["scientific_common", "taxonomic_common"], 200, random.Random(0))) == {
        "scientific_common", "taxonomic_common"}
    with pytest.raises(ValueError, match="unknown prompt type"):
        resolve_prompt_types(["common", "latin"])
    with pytest.raises(ValueError, match="no prompt types"):
        resolve_prompt_types([])


def test_unknown_prompt_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown prompt type"):
        prompt_body(WARBLER, "latin")
    with pytest.raises(ValueError, match="unknown template set"):
        prompts(WARBLER, "common", "imagenet")


def test_real_inat_taxonomy_prompts(shared_data):
    from birdbridge.data.inat_sounds import load_inat_sounds

    col = load_inat_sounds(shared_data / "inat_sounds" / "test.json", species=["Sayornis nigricans"])
    (sp,) = [s for s in col.species if s.scientific_name == "Sayornis nigricans"]
    assert prompts(sp, "taxonomic_common") == [
        "a photo of Animalia Chordata Aves Passeriformes Tyrannidae Sayornis nigricans with common name Black Phoebe."
    ]
