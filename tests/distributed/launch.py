"""Run ``lit-rlhf fit`` in 2 CPU processes (gloo) with a hard timeout, and read what each rank ended with."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_in_group

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# every run: CPU, no logger/progress bar, small data; the test appends its own overrides
COMMON = ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1"]


def run_fit(args: list[str], tmp_path: Path, scale: str | None = "ddp", timeout: float = 300,
            expect_failure: bool = False) -> list[dict] | str:
    """``lit-rlhf fit <args> --config configs/scale/<scale>.yaml`` in a new process group.

    A run that has not finished after ``timeout`` seconds is killed (the whole group: both ranks) and the
    test fails with the run's output; a failing run fails the test with its output.

    Returns:
        per-rank dicts written by :class:`rank_probe.RankProbe` (``global_step``, ``metrics``, ``final``, ...);
        with ``expect_failure``, the output of the run, which must have failed (in time).
    """
    probe = tmp_path / "probe"
    scale_args = ["--config", str(ROOT / "configs" / "scale" / f"{scale}.yaml")] if scale else []
    callback = {"class_path": "rank_probe.RankProbe", "init_args": {"folder": str(probe)}}
    cmd = [sys.executable, "-m", "lit_rlhf", "fit", *args, *scale_args, *COMMON,
           "--trainer.default_root_dir", str(tmp_path / "run"), f"--trainer.callbacks+={json.dumps(callback)}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    returncode, out = run_in_group(cmd, ROOT, env, timeout)
    if returncode is None:
        pytest.fail(f"run did not finish in {timeout:.0f}s (killed):\n{' '.join(cmd)}\n{out[-4000:]}")
    if expect_failure:
        assert returncode != 0, f"the run should have failed:\n{out[-3000:]}"
        return out
    if returncode != 0:
        pytest.fail(f"run failed (exit {returncode}):\n{' '.join(cmd)}\n{out[-6000:]}")
    world = 2 if scale else 1
    return [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in range(world)]


def assert_ranks_in_sync(ranks: list[dict]) -> None:
    """Same step count, identical parameters (which moved), and metrics reduced over ranks (equal everywhere)."""
    first = ranks[0]
    assert first["global_step"] > 0
    moved = [n for n, p in first["final"].items() if not torch.equal(p, first["initial"][n])]
    assert moved, "no trainable parameter changed"
    for other in ranks[1:]:
        assert other["global_step"] == first["global_step"]
        assert other["batches"] == first["batches"]
        assert other["final"].keys() == first["final"].keys()
        for name, p in first["final"].items():
            assert torch.equal(p, other["final"][name]), f"ranks disagree on {name}"
        assert first["metrics"], "no metrics logged"
        assert other["metrics"].keys() == first["metrics"].keys()
        for key in first["metrics"]:
            assert other["metrics"][key] == pytest.approx(first["metrics"][key], rel=1e-6, abs=1e-7), key
