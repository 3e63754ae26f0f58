"""Species records and the text prompts that name them.

The prompt strings follow BioCLIP / pybioclip exactly, because the teacher's text
space was trained on them: the taxonomic string is the seven Linnaean ranks joined
by spaces (ranks capitalised, the specific epithet lower-case), optionally followed
by `` with common name X``; a missing common name is replaced by the scientific name.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
PROMPT_TYPES: tuple[str, ...] = (
    "common",
    "scientific",
    "taxonomic",
    "scientific_common",
    "taxonomic_common",
)
MIXED = "mixed"
# The paper samples these three per training example; ``mixed`` names them. The two
# ``*_common`` formats stay available by name (they are BioCLIP's, not the paper's mix).
PAPER_PROMPT_TYPES: tuple[str, ...] = ("common", "scientific", "taxonomic")
TEMPLATE_SETS: tuple[str, ...] = ("single", "openai")


@dataclass(frozen=True)
class Species:
    """One species with its full taxonomy. ``id`` is the stable label used everywhere."""

    id: str
    scientific_name: str
    common_name: str = ""
    kingdom: str = "Animalia"
    phylum: str = "Chordata"
    class_: str = "Aves"
    order: str = ""
    family: str = ""
    genus: str = ""
    epithet: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.scientific_name.strip():
            raise ValueError(f"species {self.id!r} has an empty scientific name")
        parts = self.scientific_name.split()
        # Genus and epithet fall out of the binomial when a source only gives the name.
        if not self.genus and parts:
            object.__setattr__(self, "genus", parts[0])
        if not self.epithet and len(parts) > 1:
            object.__setattr__(self, "epithet", " ".join(parts[1:]))

    def rank(self, rank: str) -> str:
        """The taxon at ``rank`` (one of :data:`RANKS`); ``species`` is the binomial."""
        if rank == "species":
            return self.scientific_name
        if rank == "class":
            return self.class_
        if rank not in RANKS:
            raise ValueError(f"unknown rank {rank!r}; expected one of {RANKS}")
        return getattr(self, rank)

    @property
    def display_common_name(self) -> str:
        return self.common_name.strip() or self.scientific_name

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Species":
        d = dict(d)
        if "class" in d and "class_" not in d:
            d["class_"] = d.pop("class")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        extra = {k: v for k, v in d.items() if k not in known}
        kwargs = {k: ("" if v is None else str(v)) for k, v in d.items() if k in known}
        return cls(**kwargs, extra=extra)


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:] if word else word


def taxonomic_string(sp: Species) -> str:
    """``Animalia Chordata Aves Passeriformes Parulidae Setophaga coronata``."""
    ranks = [sp.kingdom, sp.phylum, sp.class_, sp.order, sp.family, sp.genus]
    words = [_cap(r.strip()) for r in ranks if r and r.strip()]
    if sp.epithet:
        words.append(sp.epithet.strip().lower())
    return " ".join(words)


def scientific_string(sp: Species) -> str:
    genus = _cap(sp.genus.strip()) if sp.genus else ""
    epithet = sp.epithet.strip().lower()
    name = f"{genus} {epithet}".strip()
    return name or sp.scientific_name


def prompt_body(sp: Species, prompt_type: str) -> str:
    """The species' name in one of the BioCLIP text formats (no template)."""
    common = sp.display_common_name
    if prompt_type == "common":
        return common
    if prompt_type == "scientific":
        return scientific_string(sp)
    if prompt_type == "taxonomic":
        return taxonomic_string(sp)
    if prompt_type == "scientific_common":
        return f"{scientific_string(sp)} with common name {common}"
    if prompt_type == "taxonomic_common":
        return f"{taxonomic_string(sp)} with common name {common}"
    raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {PROMPT_TYPES} (or 'mixed' in training)")


def templates(template_set: str) -> list[Callable[[str], str]]:
    """``single`` = BioCLIP's ``a photo of {}.``; ``openai`` = the 80 OpenAI ImageNet templates."""
    if template_set == "single":
        return [lambda c: f"a photo of {c}."]
    if template_set == "openai":
        # The same 80 lambdas pybioclip uses; open_clip ships them.
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    raise ValueError(f"unknown template set {template_set!r}; expected one of {TEMPLATE_SETS}")


def prompts(sp: Species, prompt_type: str, template_set: str = "single") -> list[str]:
    """All template strings for one species; the teacher averages their embeddings."""
    body = prompt_body(sp, prompt_type)
    return [t(body) for t in templates(template_set)]


def resolve_prompt_types(prompt_types: str | Sequence[str]) -> tuple[str, ...]:
    """The concrete prompt types a training recipe samples from, in order, without repeats.

    ``prompt_types`` is one name or a list of names; each is a prompt type or ``mixed``
    (the paper's three: :data:`PAPER_PROMPT_TYPES`)."""
    names = [prompt_types] if isinstance(prompt_types, str) else list(prompt_types)
    if not names:
        raise ValueError(f"no prompt types given; expected some of {PROMPT_TYPES + (MIXED,)}")
    out: dict[str, None] = {}
    for name in names:
        if name == MIXED:
            out.update(dict.fromkeys(PAPER_PROMPT_TYPES))
        elif name in PROMPT_TYPES:
            out[name] = None
        else:
            raise ValueError(f"unknown prompt type {name!r}; expected one of {PROMPT_TYPES + (MIXED,)}")
    return tuple(out)


def sample_prompt_types(prompt_types: str | Sequence[str], n: int, rng: random.Random) -> list[str]:
    """One prompt type per example: fixed, or drawn uniformly from the resolved list."""
    types = resolve_prompt_types(prompt_types)
    if len(types) == 1:
        return [types[0]] * n
    return [rng.choice(types) for _ in range(n)]


def species_index(species: Sequence[Species]) -> dict[str, int]:
    ids = [s.id for s in species]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate species ids: {dup[:5]}")
    return {s: i for i, s in enumerate(ids)}
