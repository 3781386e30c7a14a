"""Preference strength: statistics by hand, row alignment, and the Secrets-II noise-detection claim."""

import json

import pytest
import torch
from conftest import word_pairs

from lit_rlhf.cli import main
from lit_rlhf.eval.strength import strength_statistics


def test_statistics_are_mean_and_population_std():
    d = torch.tensor([[1.0, -1.0], [3.0, -1.0], [2.0, 2.0]])
    mean, std = strength_statistics(d)
    assert torch.allclose(mean, torch.tensor([2.0, 0.0]))
    # population std: sqrt(((1-2)^2 + (3-2)^2 + 0) / 3) = sqrt(2/3); sqrt((1 + 1 + 4) / 3) = sqrt(2)
    assert torch.allclose(std, torch.tensor([(2 / 3) ** 0.5, 2 ** 0.5]))


@pytest.fixture
def config(tmp_path):
    word_pairs(tmp_path / "train.jsonl", 512, 0, noise=0.25)
    path = tmp_path / "rm.yaml"
    path.write_text(f"""
model:
  class_path: lit_rlhf.modules.RewardModel
  init_args:
    model: {{name: "lit-rlhf:tiny-llama", config: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
            num_attention_heads: 2, num_key_value_heads: 2}}}}
    optimizer: {{class_path: torch.optim.AdamW, init_args: {{lr: 0.003}}}}
data:
  class_path: lit_rlhf.data.PreferenceDataModule
  init_args: {{train: {tmp_path / 'train.jsonl'}, batch_size: 16, max_length: 64}}
trainer: {{accelerator: cpu, max_epochs: 1, logger: false, enable_checkpointing: false, enable_progress_bar: false,
          enable_model_summary: false, default_root_dir: {tmp_path}}}
""")
    return path


def test_ensemble_strength_finds_the_flipped_pairs(config, tmp_path):
    out, plot = tmp_path / "with_strength.jsonl", tmp_path / "strength.png"
    main(["strength", "--members", "3", "--output", str(out), "--plot", str(plot), "--config", str(config)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 512 and all({"strength_mean", "strength_std", "chosen", "rejected"} <= r.keys() for r in rows)
    assert plot.stat().st_size > 10_000
    noise_rate = sum(r["noisy"] for r in rows) / len(rows)
    rows.sort(key=lambda r: r["strength_mean"])
    bottom = rows[: len(rows) // 5]
    precision = sum(r["noisy"] for r in bottom) / len(bottom)
    below_zero = sum(r["strength_mean"] < 0 for r in rows) / len(rows)
    assert precision >= 0.8, precision  # paper: the weakest pairs are the mislabelled ones
    assert abs(below_zero - noise_rate) < 0.1, (below_zero, noise_rate)


def test_reward_differences_follow_row_order_and_mark_filtered_rows(tiny_spec, tmp_path):
    from conftest import write_jsonl

    from lit_rlhf.data import PreferenceDataModule
    from lit_rlhf.eval.strength import reward_differences
    from lit_rlhf.modules import RewardModel

    rows = [{"prompt": "q", "chosen": "a" * n, "rejected": "b"} for n in (3, 80, 5)]  # the 80-char row is too long
    rm = RewardModel(model=tiny_spec)
    dm = PreferenceDataModule(train=write_jsonl(tmp_path / "p.jsonl", rows), max_length=32)
    dm.tokenizer = rm.tokenizer
    diffs = reward_differences(rm, dm, batch_size=1)
    assert dm.filtered["train"] and torch.isnan(diffs[1]) and not torch.isnan(diffs[[0, 2]]).any()
    batch = dm.collator()(dm.dataset("train").items)
    chosen, rejected = rm(batch["input_ids"], batch["attention_mask"]).chunk(2)
    assert torch.allclose(diffs[[0, 2]], chosen - rejected, atol=1e-5)
