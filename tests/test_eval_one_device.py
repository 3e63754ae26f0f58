"""`birdbridge eval` never repeats itself per rank: it trains on one device or takes checkpoints.

With ``devices: auto`` on a multi-GPU machine Lightning would pick DDP, and its launcher
re-runs ``sys.argv`` once per GPU: the whole evaluation, once per rank. So inside an
evaluation ``auto`` means one device, a multi-device request is refused with a line that
names the two ways out, and distilled checkpoints can be given instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from birdbridge.config import from_dict
from birdbridge.errors import ConfigError
from birdbridge.evaluate.eval_config import EvalConfig
from birdbridge.evaluate.runner import run_eval

BIN = Path(sys.executable).with_name("birdbridge")


def _cfg(**kw) -> EvalConfig:
    return from_dict(EvalConfig, {"synthetic": {"seed": 0}, "train_preset": "demo", **kw})


def test_training_inside_eval_uses_one_device():
    assert _cfg().train_config().devices == 1
    assert _cfg(train={"devices": "auto"}).train_config().devices == 1
    assert _cfg(train={"devices": 1, "accelerator": "gpu"}).train_config().devices == 1


@pytest.mark.parametrize("train", [{"devices": 2}, {"devices": -1}, {"devices": "0,1"}, {"num_nodes": 2},
                                   {"strategy": "ddp"}])
def test_multi_device_training_inside_eval_is_refused(train):
    with pytest.raises(ConfigError) as err:
        _cfg(train=train)
    msg = str(err.value)
    assert "\n" not in msg and "birdbridge eval trains on one device" in msg
    assert "train.devices: 1" in msg and "birdbridge train" in msg and "distilled_model:" in msg


def test_given_checkpoints_need_no_training_so_devices_do_not_matter():
    cfg = _cfg(train={"devices": 4}, distilled_model="/models/distilled", methods=["distilled"])
    assert not cfg.trains_here()
    with pytest.raises(ConfigError, match="one device"):  # an arm that would still train here
        _cfg(train={"devices": 4}, distilled_model="/models/distilled", prompt_ablation=["common"])
    ok = _cfg(train={"devices": 4}, distilled_model="/m", prompt_ablation=["common"], ablation_models={"common": "/c"},
              unseen={"distilled_model": "/s"})
    assert not ok.trains_here()
    with pytest.raises(ConfigError, match="'ablation_models' names 'taxonomic'"):
        _cfg(prompt_ablation=["common"], ablation_models={"taxonomic": "/t"})


def test_eval_launched_once_per_rank_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="launched as 2 .* without torchrun"):
        run_eval(_cfg(), tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_in_one_line(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"synthetic": {"seed": 0}, "train_preset": "demo", "train": {"devices": 2}}))
    env = {**os.environ, "COLUMNS": "1000"}  # rich wraps long lines at the terminal width (80 without one)
    res = subprocess.run([str(BIN), "eval", str(cfg), "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "birdbridge eval trains on one device" in lines[0], res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
