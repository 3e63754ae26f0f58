"""Third-party noise, kept out of birdbridge's own output unless ``--verbose`` asks for it.

By default a verb prints its own progress and results only. What is silenced is named
here, one entry each, and matched by *message*, never by module (a blanket filter once
hid a real defect): Lightning's INFO banners and its litlogger/litmodels adverts,
Lightning's pytree deprecation notice, Hugging Face's loading/saving progress bars,
TFLite's "Created TensorFlow Lite XNNPACK delegate" line, mpg123's resync notes for a
file that is not MPEG audio, and Ray's note on actor restarts (``--engine ray``). Third-party
warnings not listed here still show.

The last three are written by C libraries straight to file descriptor 2, which Python's
``sys.stderr`` never sees: :func:`native_stderr` points fd 2 at a temporary file around
the call and afterwards writes back every line that is not listed noise (so nothing else
is lost, only delayed by the call).

``--verbose`` (``BIRDBRIDGE_VERBOSE=1``, inherited by torchrun/srun ranks and data-loader
workers) turns all of it off: everything shows, each line once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from typing import Iterator

VERBOSE_ENV = "BIRDBRIDGE_VERBOSE"

# Lines C libraries write to fd 2 that tell a user nothing (the reason reaches them as a skip).
NATIVE_NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite \S+ delegate for \S+\.?"  # LiteRT, once per interpreter
    rb"|Note: (Illegal Audio-MPEG-Header|Trying to resync|Hit end of \(available\) data during resync"
    rb"|Skipped \d+ bytes in input)"  # mpg123 probing a file that is not MPEG audio
    rb"|\[src/libmpg123/[^\]]*\] (warning|error|note): "  # mpg123's own diagnostics of a broken stream
    # Ray's core worker on every Ray Data actor pool (--engine ray): restarts are Ray Data's business
    rb"|\[[0-9 :,-]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
    rb"object store and max_restarts > 0\.).*$"
)
# torch deprecated the autograd all_gather the contrastive loss needs (its replacement lacks a
# gloo backward); Lightning's own all_gather hits it too
ALL_GATHER_DEPRECATED = r"torch\.distributed\.nn\.functional\.all_gather is deprecated"
# Python warnings that are known to be benign here, by message.
BENIGN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 on torch 2.14's pytree
    ALL_GATHER_DEPRECATED,  # Lightning 2.6 (each DDP step asks whether every rank has clips) on torch 2.14
)
# Lightning's loggers: INFO lines (device banners, adverts) show only with --verbose.
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# What Lightning says at fit time about choices birdbridge made on purpose; hidden around
# trainer.fit() whatever the verbosity, because no user can act on them.
LIGHTNING_FIT_NOTICES = (
    r".*does not have many workers.*",  # num_workers is the config's choice
    r".*deterministic.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's use of a torch API torch deprecated
    # DistillData resumes mid-epoch through its own checkpoint state, which this Lightning
    # check (it looks for a stateful DataLoader) does not see
    r".*dataloader is not resumable.*",
)
EVAL_MODE_NOTICE = r".*module\(s\) in eval mode at the start of training.*"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def _quiet_cli() -> bool:
    # "0": the CLI without --verbose. Unset (the Python API) leaves third-party logging as it is.
    return os.environ.get(VERBOSE_ENV) == "0"


def configure(verbose_output: bool) -> None:
    """The CLI's output policy, set once at start-up, before the noisy libraries are imported."""
    os.environ[VERBOSE_ENV] = "1" if verbose_output else "0"
    # "lightning" has its own console handler and also propagates to the root handler
    # that open_clip's first logging.info() installs: every Lightning line came out twice.
    logging.getLogger("lightning").propagate = False
    if verbose_output:
        return
    # read by huggingface_hub and transformers at import: no "Loading weights" bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for message in BENIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    settle_lightning()


def settle_lightning() -> None:
    """Lightning sets its loggers to INFO when imported: call this after importing it. Acts for
    the CLI without ``--verbose`` only; Python API users keep Lightning's own settings."""
    if not _quiet_cli():
        return
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def lightning_fit(eval_mode_intended: bool) -> Iterator[None]:
    """Around ``trainer.fit``: :data:`LIGHTNING_FIT_NOTICES` hidden, and Lightning's eval-mode
    notice too when eval mode is what was configured (a frozen encoder, ``encoder_mode: eval``)."""
    with warnings.catch_warnings():
        for message in LIGHTNING_FIT_NOTICES + ((EVAL_MODE_NOTICE,) if eval_mode_intended else ()):
            warnings.filterwarnings("ignore", message)
        yield


@contextlib.contextmanager
def lightning_logs_quiet() -> Iterator[None]:
    """Lightning's INFO banners ("GPU available ...") held back during the block, whatever the
    verbosity: a job that trains several models (``birdbridge eval``) would print them once per
    model, burying its own progress lines. Only the log level is raised: warnings still show."""
    loggers = [logging.getLogger(n) for n in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_capture = None


@contextlib.contextmanager
def native_stderr() -> Iterator[None]:
    """Hold back the known noise C libraries write to fd 2 during the block; pass the rest on.

    Re-entrant and thread-safe: overlapping blocks share one capture, restored by the last to leave.
    """
    global _depth, _saved_fd, _capture
    if verbose():
        yield
        return
    with _lock:
        if _depth == 0:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            try:
                _capture = tempfile.TemporaryFile()
                _saved_fd = os.dup(2)
                os.dup2(_capture.fileno(), 2)
            except OSError:  # no fd 2 (a daemon) or no temp space: leave stderr alone
                _capture, _saved_fd = None, None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved_fd is not None:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _capture.seek(0)
                kept = [ln for ln in _capture.read().splitlines(keepends=True) if not NATIVE_NOISE.match(ln.rstrip(b"\r\n"))]
                _capture.close()
                _capture, _saved_fd = None, None
                if kept:
                    os.write(2, b"".join(kept))
