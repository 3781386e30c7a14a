"""GRPO in 2 CPU processes (gloo) under DDP and FSDP2: each rank samples its own prompts and keeps every group
of G completions on that rank; ranks stay in sync, and FSDP2 trains the same model as DDP."""

from __future__ import annotations

import pytest
import torch
from launch import assert_ranks_in_sync, run_fit

pytestmark = pytest.mark.slow

G = 4
ARGS = ["--config", "configs/grpo.yaml", "--model.model", "lit-rlhf:tiny-llama", "--model.group_size", str(G),
        "--model.reward_fn", "rank_probe.length_reward", "--model.num_mini_batches", "2",
        "--model.sampling", '{"max_new_tokens": 8, "temperature": 1.0}', "--model.dynamic_sampling", "true",
        "--model.clip_high", "0.28", "--data.task_sizes", '{"train": 64, "val": 8, "test": 8}',
        "--data.batch_size", "3", "--trainer.max_steps", "4", "--trainer.callbacks", "[]"]


def assert_groups_intact(ranks: list[dict]) -> None:
    """Every rank's last buffer is whole groups of G rows of one prompt, and no prompt is on two ranks."""
    seen = []
    for r in ranks:
        prompts = r["buffer_prompts"]
        assert prompts and len(prompts) % G == 0, len(prompts)
        groups = [prompts[i:i + G] for i in range(0, len(prompts), G)]
        assert all(len(set(g)) == 1 for g in groups), groups
        seen.append({g[0] for g in groups})
    assert not seen[0] & seen[1]  # the ranks' prompt batches are disjoint: no group spans ranks


def test_grpo_groups_stay_on_their_rank_under_ddp_and_fsdp2(tmp_path):
    torch.set_num_threads(1)
    ddp = run_fit(ARGS, tmp_path / "ddp", "ddp")
    assert_ranks_in_sync(ddp)
    assert_groups_intact(ddp)
    assert ddp[0]["global_step"] == 4
    fsdp2 = run_fit(ARGS, tmp_path / "fsdp2", "fsdp2")
    assert_ranks_in_sync(fsdp2)
    assert_groups_intact(fsdp2)
    for name, p in ddp[0]["final"].items():
        torch.testing.assert_close(fsdp2[0]["final"][name], p, rtol=1e-4, atol=2e-5, msg=f"FSDP2 vs DDP: {name}")
