"""The two-command path of ``configs/grpo_prm.yaml``: a PRM run (``configs/prm.yaml`` on the trap task) writes
``runs/prm``, then the GRPO run reads its newest checkpoint as the step-reward source. Both shrunk to a few steps
(tiny data, tiny untrained policy in place of the quickstart SFT)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_rlhf.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_prm_run_then_grpo_prm_run(tmp_path, monkeypatch, fitted_trainers):
    monkeypatch.chdir(tmp_path)  # the configs' relative runs/ folders land here
    main(["fit", "--config", str(ROOT / "configs" / "prm.yaml"), "--data.init_args.task.init_args.trap_rule",
          "first_multiply", "--data.task_sizes", '{"train": 96, "val": 16, "test": 16}', "--trainer.max_steps=3",
          "--trainer.limit_val_batches=1", *QUIET])
    assert sorted(Path("runs/prm").rglob("*.ckpt")), "the prm run wrote no checkpoint under runs/prm"
    main(["fit", "--config", str(ROOT / "configs" / "grpo_prm.yaml"), "--model.model=lit-rlhf:tiny-llama",
          "--model.group_size=4", "--model.sampling", '{"max_new_tokens": 16, "temperature": 1.0}',
          "--data.task_sizes", '{"train": 16, "val": 4, "test": 4}', "--data.batch_size=2", "--trainer.max_steps=2",
          *QUIET])
    prm_trainer, grpo_trainer = fitted_trainers
    assert grpo_trainer.state.finished and grpo_trainer.global_step == 2
    module = grpo_trainer.lightning_module
    assert module.dense_rewards and "rewards/prm" in module.last_metrics and "rewards/gold" in module.last_metrics
    step_rewards = module.buffer["step_rewards"]
    assert step_rewards.shape == module.buffer["response_mask"].shape
    assert torch.isfinite(step_rewards).all() and bool((step_rewards != 0).any())
