"""Issue 25, points 1 and 2: input errors answered before torch & co. load, every wrong input at once.

The console script runs from another directory with the heavy libraries *poisoned*: a folder
first on ``PYTHONPATH`` holds ``torch``, ``transformers``, ``lightning``, ``open_clip`` and
``faiss`` packages whose import prints ``POISONED`` and exits 97. A verb that imports any of
them before it has checked its inputs exits 97 instead of 2 -- deterministic, no timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).with_name("birdbridge"))
HEAVY = ("torch", "transformers", "lightning", "pytorch_lightning", "open_clip", "faiss")


@pytest.fixture(scope="module")
def poisoned_env(tmp_path_factory):
    poison = tmp_path_factory.mktemp("poison")
    for name in HEAVY:
        (poison / name).mkdir()
        (poison / name / "__init__.py").write_text(
            f"import sys\nsys.stderr.write('POISONED: {name} imported before the inputs were checked\\n')\n"
            "sys.stderr.flush()\nimport os\nos._exit(97)\n")
    path = os.pathsep.join(p for p in (str(poison), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _run(env, cwd, *args, extra_env=None):
    return subprocess.run([BIN, *map(str, args)], cwd=cwd, env={**env, **(extra_env or {})}, capture_output=True,
                          text=True, timeout=120)


def _one_error_line(res) -> str:
    assert "POISONED" not in res.stderr, res.stderr
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and not res.stdout.strip()
    return lines[0]


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, birdbridge.cli; heavy = [m for m in %r if m in sys.modules]; "
            "assert not heavy, heavy" % (HEAVY,))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _cases(tmp: Path) -> dict[str, tuple[list, list[str]]]:
    (tmp / "bad.yaml").write_text("data: {kind: folder, path: .}\ntrain: {bogus: 1}\n")
    (tmp / "eval.yaml").write_text("eval_data: {kind: ssw60, path: nowhere}\n")
    (tmp / "runs").mkdir(exist_ok=True)
    return {
        "train": (["train", "bad.yaml", "--out", "run"], ["unknown key 'bogus'"]),
        "train-missing": (["train", "missing.yaml", "--out", "run"], ["config file not found: missing.yaml"]),
        "eval": (["eval", "eval.yaml", "--out", "table"], ["eval_data.path nowhere"]),
        "search": (["search", "--model", "runs/modle", "--index", "idx", "rec.wav"],
                   ["no such model folder: runs/modle", "idx: not an image index", "no such file: rec.wav"]),
        "detect": (["detect", "--model", "runs/modle", "--species-list", "species.txt", "rec.wav"],
                   ["no such model folder", "species list not found: species.txt", "no such file: rec.wav"]),
        "embed-audio": (["embed-audio", "--model", "runs/modle", "--out", "a.npy", "rec.wav"],
                        ["no such model folder", "no such file: rec.wav"]),
        "embed-images": (["embed-images", "--teacher", "teachr", "--out", "i.npy", "photo.jpg"],
                         ["no such teacher folder: teachr", "no such file: photo.jpg"]),
        "embed-text": (["embed-text", "--teacher", "teachr", "--out", "t.npy", "@names.txt"],
                       ["no such teacher folder", "text list names.txt not found"]),
        "index": (["index", "photos", "--out", "idx", "--kind", "faiss-flatt"], ["not a folder or CSV: photos",
                                                                                  "faiss-flatt"]),
        "serve": (["serve", "--model", "runs/modle", "--index", "idx"], ["no such model folder", "not an image index"]),
        "inspect": (["inspect", "folder", "nowhere"], ["nowhere"]),
        "data prepare": (["data", "prepare", "folder", "nowhere", "--out", "shards"], ["nowhere"]),
        "score": (["score", "q.parquet", "g.parquet"], ["q.parquet"]),
    }


def test_every_verb_answers_an_input_error_before_torch_loads(poisoned_env, tmp_path):
    for verb, (args, wanted) in _cases(tmp_path).items():
        line = _one_error_line(_run(poisoned_env, tmp_path, *args))
        for w in wanted:
            assert w in line, (verb, w, line)
    assert not any((tmp_path / p).exists() for p in ("run", "table", "a.npy", "i.npy", "t.npy", "idx", "shards"))


def test_search_names_every_wrong_path_at_once(poisoned_env, tmp_path):
    (tmp_path / "runs" / "model").mkdir(parents=True)
    res = _run(poisoned_env, tmp_path, "search", "--model", "runs/modle", "--index", "missing", "rec.wav", "rec2.wav")
    line = _one_error_line(res)
    assert line.startswith("error: 4 inputs are wrong: (1) ")
    assert "runs/modle" in line and "did you mean runs/model?" in line
    assert "missing: not an image index" in line and "rec.wav" in line and "rec2.wav" in line
    assert "searching" not in res.stderr  # no progress before the answer


def test_a_mistyped_model_path_shaped_like_a_hub_id_is_reported_up_front_online(poisoned_env, tmp_path):
    """``runs/modle`` with no ``runs/`` here reads as a hub id (ORG/NAME, the one rule of encoders/hub.py);
    not offline, Preflight asks the hub at once (here a refused port) and names it with the other wrong paths."""
    env = {k: v for k, v in poisoned_env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    res = _run(env, tmp_path, "search", "--model", "runs/modle", "--index", "idx", "rec.wav")
    line = _one_error_line(res)
    assert line.startswith("error: 3 inputs are wrong: (1) no such model folder: runs/modle, and as a Hugging Face hub "
                           "id: model 'runs/modle' is not available"), line
    assert "cannot be reached" in line and "idx: not an image index" in line and "no such file: rec.wav" in line
    assert "searching" not in res.stderr
    # the explicit hub spelling stays a hub id, said as such
    line = _one_error_line(_run(env, tmp_path, "search", "--model", "hf-hub:org/name", "--index", "idx", "rec.wav"))
    assert "(1) model 'hf-hub:org/name' is not available" in line and "no such model folder" not in line, line


def test_a_hub_that_answers_it_has_no_such_model_is_reported_up_front(poisoned_env, tmp_path):
    """Online and reachable (a local stand-in for the hub: 200 on its root, 401 RepoNotFound on
    /api/models/...): the hub's own "no such repo" names the mistyped path with the other wrong inputs."""
    import http.server
    import threading

    class Hub(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            found = not self.path.startswith("/api/models/")
            self.send_response(200 if found else 401)  # as huggingface.co answers a missing repo
            if not found:
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("X-Error-Message", "Repository not found")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in poisoned_env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
        line = _one_error_line(_run(env, tmp_path, "search", "--model", "runs/modle", "--index", "idx", "rec.wav"))
    finally:
        server.shutdown()
    assert line.startswith("error: 3 inputs are wrong: (1) no such model folder: runs/modle, and as a Hugging Face hub "
                           "id: model 'runs/modle' is not available: the hub has no model runs/modle"), line
    assert "idx: not an image index" in line and "idx: not an image index" in line, line


@pytest.mark.parametrize("args", [
    ["search", "--model", "m", "--index", "i", "rec.wav"],
    ["embed-audio", "--model", "m", "--out", "a.npy", "rec.wav"],
    ["detect", "--model", "m", "--species-list", "s.txt", "rec.wav"],
    ["serve", "--model", "m", "--index", "i"],
], ids=lambda a: a[0])
def test_an_absent_cuda_is_answered_without_torch(poisoned_env, tmp_path, args):
    # CUDA_VISIBLE_DEVICES="" hides every GPU on any machine: the cheap check is certain of it
    line = _one_error_line(_run(poisoned_env, tmp_path, *args, "--device", "cuda", extra_env={"CUDA_VISIBLE_DEVICES": ""}))
    assert "device 'cuda' is not available: CUDA_VISIBLE_DEVICES='' hides every GPU; use cpu (or auto)" in line


def test_a_hub_id_missing_from_the_cache_offline_is_answered_without_torch(poisoned_env, tmp_path):
    line = _one_error_line(_run(poisoned_env, tmp_path, "embed-audio", "--model", "someorg/nomodel", "--out", "a.npy",
                                "rec.wav", extra_env={"HF_HOME": str(tmp_path / "hf")}))
    assert "'someorg/nomodel' is not available" in line and "HF_HUB_OFFLINE" in line and "no such file: rec.wav" in line


def test_train_checks_the_accelerator_without_torch(poisoned_env, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "ok.yaml").write_text("data: {kind: folder, path: data}\ntrain: {teacher: nope}\n")
    line = _one_error_line(_run(poisoned_env, tmp_path, "train", "ok.yaml", "--out", "run", "--accelerator", "gpu",
                                extra_env={"CUDA_VISIBLE_DEVICES": "-1"}))
    assert "no such teacher folder: nope" in line and "accelerator 'gpu' is not available" in line


def test_precheck_device_reads_the_machine_without_torch(monkeypatch):
    from birdbridge import devices
    from birdbridge.errors import DeviceNotAvailableError

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for ok in ("cpu", "auto", None):
        devices.precheck_device(ok)
    with pytest.raises(DeviceNotAvailableError, match="not a device"):
        devices.precheck_device("tpu")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(devices.os.path, "exists", lambda p: False if p == "/proc/driver/nvidia" else os.path.lexists(p))
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DeviceNotAvailableError, match="no NVIDIA GPU or driver"):
        devices.precheck_device("cuda:1")
    with pytest.raises(DeviceNotAvailableError, match="exists on macOS only"):
        devices.precheck_device("mps")
    # a driver present: the cheap check cannot rule CUDA out and leaves it to torch (resolve_device)
    monkeypatch.setattr("glob.glob", lambda pattern: ["/dev/nvidia0"])
    devices.precheck_device("cuda")


def test_precheck_device_reads_a_cpu_only_torch_build(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from birdbridge import devices
    from birdbridge.errors import DeviceNotAvailableError

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text("__version__ = '2.5.0+cpu'\ncuda: Optional[str] = None\n")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: SimpleNamespace(origin=str(tmp_path / "torch" / "__init__.py")))
    with pytest.raises(DeviceNotAvailableError, match="CPU-only build"):
        devices.precheck_device("cuda")


def test_detects_option_lists_agree_with_the_factory():
    from birdbridge.cli import detect
    from birdbridge.encoders import factory

    assert detect.RUNTIMES == factory.RUNTIMES and detect.PRECISIONS == factory.PRECISIONS
