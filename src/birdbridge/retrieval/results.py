"""The result schemas of search and detection: one shape per result kind, for every front end.

``birdbridge search --format json``, ``POST /search``, the served page's script and the
Python API (:func:`~birdbridge.retrieval.search.search_audio`) all give a
:class:`SearchResult`; ``birdbridge detect --format json`` and
:func:`~birdbridge.retrieval.detect.detect_audio` give a :class:`DetectionResult`. The
JSON is ``to_dict()`` of these dataclasses, field for field; docs/SEARCH_SCHEMA.md
documents it. A field that does not apply to a front end is ``null``, never left out
(the server does not reveal file paths; the CLI has no image URLs), so one parser reads
both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

SEARCH_SCHEMA = "birdbridge.search/1"
DETECT_SCHEMA = "birdbridge.detect/1"


@dataclass
class Window:
    """A stretch of the recording that was embedded on its own (seconds from the start)."""

    index: int
    start_s: float
    end_s: float


@dataclass
class Hit:
    """One indexed photo, ranked by its score over the recording's windows."""

    rank: int
    id: int  # the image's id in the index (GET /images/{id} on the server)
    score: float  # cosine, aggregated over windows (max or mean)
    path: str | None  # the photo on disk; null in server answers
    name: str  # the photo's file name
    species_id: str = ""
    scientific_name: str = ""
    common_name: str = ""
    author: str = ""
    license: str = ""
    source: str = ""
    best_window: Window = field(default_factory=lambda: Window(0, 0.0, 0.0))  # the window that scored highest
    image_url: str | None = None  # server only
    thumbnail_url: str | None = None  # server only
    # the photo's species' softmax share among the candidates' species at the model's temperature
    # (retrieval/confidence.py); null when not computed
    confidence: float | None = None

    @property
    def window_start_s(self) -> float:
        return self.best_window.start_s

    @property
    def window_end_s(self) -> float:
        return self.best_window.end_s


@dataclass
class Detection:
    """One row of a per-window table: a species and its score in one window."""

    start_s: float
    end_s: float
    rank: int  # 1 = the window's best species
    score: float  # cosine of the window with the species' text (detect) or its best photo (search)
    species_id: str = ""
    scientific_name: str = ""
    common_name: str = ""
    image: str | None = None  # search: the window's best photo of this species; detect: null
    # in [0, 1]: softmax over the species at the temperature distillation learned (retrieval/confidence.py)
    confidence: float | None = None


class _Outcome:
    """What every per-recording result answers: did the recording work, and its JSON form."""

    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult(_Outcome):
    """Everything one recording's search gives."""

    path: str  # the recording (in a server answer: "upload")
    duration_s: float = 0.0
    aggregate: str = "max"
    k: int = 0
    windows: list[Window] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    species_guess: list[dict] | None = None  # [{species_id, scientific_name, common_name, score}], best first
    detections: list[Detection] = field(default_factory=list)  # per-window species, when asked (search --format csv)
    error: str | None = None  # a BadInputError reason when the recording could not be used
    error_detail: str = ""
    schema: str = SEARCH_SCHEMA


@dataclass
class DetectionResult(_Outcome):
    """Per-window species of one recording (``birdbridge detect``)."""

    path: str
    duration_s: float = 0.0
    windows: list[Window] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    error: str | None = None
    error_detail: str = ""
    schema: str = DETECT_SCHEMA


UPLOAD = "upload"  # a server answer's `path`: the client's file name is never echoed (nor used as a path)


def for_server(result: SearchResult, image_url: Callable[[int], tuple[str, str]]) -> SearchResult:
    """The same result as a server answers it: no file paths, image and thumbnail URLs instead."""
    hits = []
    for h in result.hits:
        url, thumb = image_url(h.id)
        hits.append(replace(h, path=None, image_url=url, thumbnail_url=thumb))
    dets = [replace(d, image=Path(d.image).name if d.image else None) for d in result.detections]
    return replace(result, path=UPLOAD, hits=hits, detections=dets)



__all__ = ["SEARCH_SCHEMA", "DETECT_SCHEMA", "Window", "Hit", "Detection", "SearchResult", "DetectionResult",
           "for_server"]
