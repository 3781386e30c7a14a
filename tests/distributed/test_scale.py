"""2-process CPU runs (gloo) of SFT, RM, DPO and PPO under DDP and FSDP2 (ModelParallelStrategy).

Each method runs a few steps under both strategies from the same seed and data: ranks must stay in
sync (same steps, identical parameters, metrics reduced over ranks) and FSDP2 must train the same
model as DDP (the global batch is the same; only reduction order differs).
"""

from __future__ import annotations

import pytest
import torch
from launch import assert_ranks_in_sync, run_fit

pytestmark = pytest.mark.slow

TASK = ["--data.task_sizes", '{"train": 96, "val": 16, "test": 16}']
METHODS = {
    "sft": ["--config", "configs/sft.yaml", "--trainer.max_steps", "3", "--trainer.max_epochs", "3",
            "--data.batch_size", "2"],
    "rm": ["--config", "configs/reward.yaml", *TASK, "--trainer.max_steps", "4", "--data.batch_size", "8",
           "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"],
    # precomputed reference: the no-grad pass before training runs on every rank
    "dpo": ["--config", "configs/dpo.yaml", "--model.init_from", "null", "--data.train", "null", "--data.val", "null",
            *TASK, "--trainer.max_steps", "4", "--data.batch_size", "8", "--trainer.val_check_interval", "2",
            "--trainer.limit_val_batches", "1", "--trainer.callbacks", "[]",
            "--model.reference_cache", "{tmp}/refcache"],
    # sampled rollouts: generation lengths differ between ranks; steps = iterations x ppo_epochs x minibatches
    "ppo": ["--config", "configs/ppo.yaml", "--model.model", "lit-rlhf:tiny-llama", *TASK,
            "--data.batch_size", "8", "--model.num_mini_batches", "2", "--model.ppo_epochs", "2",
            "--model.sampling", '{"max_new_tokens": 12, "temperature": 1.0}', "--trainer.max_steps", "8",
            "--trainer.callbacks", "[]"],
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_ddp_and_fsdp2_train_in_sync(method, tmp_path):
    torch.set_num_threads(1)
    args = [a.replace("{tmp}", str(tmp_path)) for a in METHODS[method]]
    ddp = run_fit(args, tmp_path / "ddp", "ddp")
    assert_ranks_in_sync(ddp)
    fsdp2 = run_fit(args, tmp_path / "fsdp2", "fsdp2")
    assert_ranks_in_sync(fsdp2)
    assert fsdp2[0]["global_step"] == ddp[0]["global_step"]
    for name, p in ddp[0]["final"].items():
        torch.testing.assert_close(fsdp2[0]["final"][name], p, rtol=1e-4, atol=2e-5, msg=f"FSDP2 vs DDP: {name}")


NAN_ON_RANK_1 = ['--trainer.callbacks+={"class_path": "rank_probe.NaNOnRank", "init_args": {"rank": 1, "batch": 1}}']


def test_nonfinite_loss_on_one_rank_skips_the_update_on_every_rank(tmp_path):
    ranks = run_fit([*METHODS["rm"], *NAN_ON_RANK_1, "--model.nonfinite", "skip"], tmp_path, "ddp")
    assert [r["skipped_updates"] for r in ranks] == [1, 1]
    assert_ranks_in_sync(ranks)


def test_nonfinite_loss_on_one_rank_stops_every_rank(tmp_path):
    out = run_fit([*METHODS["rm"], *NAN_ON_RANK_1], tmp_path, "ddp", timeout=240, expect_failure=True)
    assert "RewardModel: non-finite loss" in out and "at step 1" in out
