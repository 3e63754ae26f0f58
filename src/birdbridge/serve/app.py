"""HTTP front end: upload or record a sound, get pictures of the singer back.

``create_app(model, index, settings)`` returns a FastAPI app:

``POST /search``        multipart field ``audio`` (+ optional ``k`` as form field or query)
                        → a search result in the shared schema (docs/SEARCH_SCHEMA.md:
                        ``{path, duration_s, k, windows, hits: [...], species_guess, ...}``,
                        as ``birdbridge search --format json`` gives per recording)
``GET  /images/{id}``   an indexed image by integer id (``?max_side=N`` for a JPEG thumbnail);
                        only ids in the index resolve, a request never names a path
``GET  /``              the upload / microphone page
``GET  /health``        liveness and what is loaded; ``/openapi.json`` is FastAPI's schema

Uploads are checked by content, not by name or header: the bytes go to a temp file that
libsndfile must recognise as audio (415 otherwise). Too large a body or too long a
recording gives 413, bad parameters 422, a search that runs too long 504. Every error is a
short JSON object ``{"error": reason, "detail": text}``; tracebacks go to the server log only.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import BadInputError, BirdbridgeError

log = logging.getLogger("birdbridge.serve")
IMAGE_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
              "BMP": "image/bmp", "TIFF": "image/tiff"}
# Multipart framing (boundaries, part headers, a small k field) on top of the file itself.
MULTIPART_SLACK = 64 * 1024


@dataclass
class ServeSettings:
    max_upload_bytes: int = 20 * 2**20
    max_duration_s: float = 300.0
    default_k: int = 12
    max_k: int = 100
    request_timeout_s: float = 60.0
    guess_species: bool = True
    cache_dir: str | None = None
    window_s: float | None = None
    hop_s: float | None = None
    aggregate: str = "max"
    max_concurrent_searches: int = 1  # the model is CPU-heavy; queue rather than thrash


def _error(status: int, reason: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"error": reason, "detail": detail}, status_code=status)


class _TooLarge(BaseException):
    # BaseException, not Exception: FastAPI's form parser turns any Exception raised while
    # reading the body into "400 error parsing the body"; this must reach the middleware.
    pass


class BodyLimitMiddleware:
    """Stops reading a request body past ``max_bytes`` (declared or streamed) with a 413."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _error(413, "too_large", f"request body over {self.max_bytes} bytes")(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _error(413, "too_large", f"request body over {self.max_bytes} bytes")(scope, receive, send)


def _parse_k(raw, settings: ServeSettings) -> int:
    if raw in (None, ""):
        return settings.default_k
    if not re.fullmatch(r"\s*\d{1,6}\s*", str(raw)):
        raise ValueError(f"k must be an integer between 1 and {settings.max_k}, got {str(raw)[:20]!r}")
    k = int(raw)
    if not 1 <= k <= settings.max_k:
        raise ValueError(f"k must be between 1 and {settings.max_k}, got {k}")
    return k


# Reasons from load_audio: "unreadable" means not audio at all; the rest is audio we cannot use.
_NOT_AUDIO = {"unreadable", "missing"}


def create_app(model, index, settings: ServeSettings | None = None, *, allow_teacher_mismatch: bool = False,
               device: str = "cpu") -> FastAPI:
    """``model``: distilled checkpoint id/dir or loaded embedder; ``index``: directory or :class:`ImageIndex`.
    ``allow_teacher_mismatch`` only warns when their teachers differ; ``device`` runs the model."""
    from ..retrieval.index import ImageIndex
    from ..retrieval.confidence import model_logit_scale
    from ..retrieval.search import load_search_model, search_wave, species_text_matrix

    settings = settings or ServeSettings()
    index = index if isinstance(index, ImageIndex) else ImageIndex.open(index)
    model = load_search_model(model, index, allow_teacher_mismatch=allow_teacher_mismatch, device=device)
    scale = model_logit_scale(model)[0]  # the temperature confidences are computed at
    species_text = None
    if settings.guess_species and index.species():
        try:
            species_text = species_text_matrix(index, model, None, settings.cache_dir)
        except BirdbridgeError as err:  # the teacher's text tower may not be loadable here
            log.warning("species guess disabled: %s", err)
    gate = threading.BoundedSemaphore(settings.max_concurrent_searches)

    app = FastAPI(title="birdbridge", version=__version__,
                  description="Upload a bird recording; get the indexed photos nearest to it in the teacher's space.")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes + MULTIPART_SLACK)
    app.state.settings, app.state.index, app.state.model = settings, index, model
    app.state.species_guess = len(species_text[0]) if species_text is not None else 0

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors())
        return _error(422, "bad_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal_error", "the server failed on this request; see its log")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__, "images": index.count, "dim": index.dim,
                "teacher": index.teacher_id, "index_kind": index.kind, "model": model.name,
                "species_guess": species_text is not None, "max_upload_bytes": settings.max_upload_bytes,
                "max_duration_s": settings.max_duration_s}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(_page_html())

    @functools.lru_cache(maxsize=1024)
    def _thumb(image_id: int, side: int) -> bytes | None:
        from ..data.images import load_image

        try:
            im = load_image(index.metadata([image_id])[0]["path"])
        except BadInputError:
            return None
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    @app.get("/images/{image_id}")
    def image(image_id: str, max_side: int | None = None):
        # The id is matched as digits and looked up in the index: nothing from the request
        # ever becomes part of a filesystem path.
        if not re.fullmatch(r"\d{1,12}", image_id) or int(image_id) >= index.count:
            return _error(404, "not_found", "no indexed image with this id")
        i = int(image_id)
        path = Path(index.metadata([i])[0]["path"])
        if not path.is_file():
            return _error(404, "image_missing", "the indexed file is no longer on disk")
        if max_side is not None:
            if not 16 <= max_side <= 2048:
                return _error(422, "bad_request", "max_side must be between 16 and 2048")
            data = _thumb(i, max_side)
            if data is None:
                return _error(404, "image_missing", "the indexed file can no longer be decoded")
            return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
        try:
            from ..data.images import image_info

            mime = IMAGE_MIME.get(image_info(path)["format"], "application/octet-stream")
        except BadInputError:
            return _error(404, "image_missing", "the indexed file can no longer be decoded")
        return FileResponse(path, media_type=mime, headers={"Cache-Control": "max-age=3600"})

    @app.post("/search")
    async def search(request: Request, audio: UploadFile = File(..., description="a recording (any format libsndfile reads)"),
                     k: str | None = Form(None, description="number of images (form field or query parameter)")):
        try:
            k_val = _parse_k(k if k not in (None, "") else request.query_params.get("k"), settings)
        except ValueError as err:
            return _error(422, "bad_k", str(err))
        data = await audio.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            return _error(413, "too_large", f"upload over {settings.max_upload_bytes} bytes")
        if not data:
            return _error(422, "empty", "the uploaded file is empty")
        try:
            result = await asyncio.wait_for(run_in_threadpool(_search_bytes, data, k_val), settings.request_timeout_s)
        except asyncio.TimeoutError:
            return _error(504, "timeout", f"search took longer than {settings.request_timeout_s:.0f} s")
        except _UploadRejected as rej:
            return _error(rej.status, rej.reason, rej.detail)
        from ..retrieval.results import for_server

        # the CLI's schema, with URLs instead of the server's file paths
        return for_server(result, lambda i: (f"/images/{i}", f"/images/{i}?max_side=256")).to_dict()

    def _search_bytes(data: bytes, k: int):
        import soundfile as sf

        from ..data.audio import load_audio

        with tempfile.TemporaryDirectory(prefix="birdbridge-upload-") as tmp:
            path = os.path.join(tmp, "upload")  # no extension: the format is sniffed from content
            with open(path, "wb") as fh:
                fh.write(data)
            try:
                info = sf.info(path)
            except Exception as err:  # noqa: BLE001 - libsndfile says "not audio" in many ways
                raise _UploadRejected(415, "not_audio", "the upload is not an audio file libsndfile can decode") from err
            if info.samplerate <= 0 or info.frames <= 0:
                raise _UploadRejected(422, "empty", "the recording has no samples")
            if info.frames / info.samplerate > settings.max_duration_s:
                raise _UploadRejected(413, "too_long", f"recording is {info.frames / info.samplerate:.1f} s; "
                                                       f"the limit is {settings.max_duration_s:.0f} s")
            try:
                wave = load_audio(path, model.sample_rate, max_duration_s=settings.max_duration_s)
            except BadInputError as err:
                status = 415 if err.reason in _NOT_AUDIO else 422
                raise _UploadRejected(status, "not_audio" if status == 415 else err.reason, err.detail) from None
        with gate:
            return search_wave(model, index, wave, k, path="upload", window_s=settings.window_s, hop_s=settings.hop_s,
                               aggregate=settings.aggregate, species_text=species_text, scale=scale)

    return app


class _UploadRejected(Exception):
    def __init__(self, status: int, reason: str, detail: str = ""):
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


@functools.lru_cache(maxsize=1)
def _page_html() -> str:
    return resources.files("birdbridge.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def describe(app: FastAPI, url: str) -> list[str]:
    """What a server serves, in a few lines: where, which index and model, and how to ask it."""
    index, model, settings = app.state.index, app.state.model, app.state.settings
    model_teacher = (getattr(getattr(model, "model", None), "meta", None) or {}).get("teacher_id") or "?"
    n_species = len(index.species())
    guess = (f"on, over {app.state.species_guess} species" if app.state.species_guess
             else "off" + (" (--no-guess-species)" if not settings.guess_species else " (the index names no species)"))
    return [
        f"serving {url}/ (search page), POST {url}/search, GET {url}/images/{{id}}, GET {url}/health",
        f"  index  {os.path.abspath(index.root)}: {index.count} images of {n_species} species, {index.dim}-d {index.kind}, "
        f"teacher {index.teacher_id}",
        f"  model  {model.name} (distilled onto teacher {model_teacher}; {model.sample_rate} Hz, "
        f"{model.window_samples / model.sample_rate:g} s windows)",
        f"  species guess {guess}; uploads up to {settings.max_upload_bytes / 2**20:g} MB and "
        f"{settings.max_duration_s:g} s",
        f"  ask it: curl -F audio=@clip.wav -F k=12 {url}/search   (multipart field 'audio'; 'k' optional)",
    ]


def serve(model, index, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "info", *, allow_teacher_mismatch: bool = False, device: str = "cpu", announce=None) -> None:
    """Run the app with uvicorn (blocking); ``announce(line)`` first hears what is served (:func:`describe`)."""
    import socket

    import uvicorn

    app = create_app(model, index, settings, allow_teacher_mismatch=allow_teacher_mismatch, device=device)
    # listening on every interface: others reach it by this machine's name
    url = f"http://{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"
    for line in describe(app, url):
        (announce or log.info)(line)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_keep_alive=5, limit_concurrency=64)
