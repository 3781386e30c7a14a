"""Rejection sampling: winners are the argmax, pooling modes, SFT on winners raises the reward; temperature helper."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lit_rlhf.data import PromptDataModule
from lit_rlhf.modules import RejectionSampling
from lit_rlhf.rollout.temperature import expected_best_of_k, pick_temperature
from lit_rlhf.tasks import Arithmetic

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}
Z = "z"


def z_reward(prompts, completions):
    """Fraction of 'z' characters in the completion (a skill the random policy rarely shows)."""
    return torch.tensor([c.count(Z) / max(len(c), 1) for c in completions])


def fit(tmp_path, steps, **kwargs):
    torch.manual_seed(0)
    module = RejectionSampling(model={"config": TINY}, sampling={"temperature": 1.0, "max_new_tokens": 6}, k=8,
                               reward_fn=z_reward, sft_steps=3, sft_batch_size=8,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), **kwargs)
    dm = PromptDataModule(task=Arithmetic(max_steps=2), task_sizes={"train": 16, "val": 4, "test": 4},
                          batch_size=4, max_length=64)
    L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=-1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              default_root_dir=tmp_path).fit(module, dm)
    return module, dm


def test_winner_is_the_best_of_k_and_ends_with_its_tokens(tmp_path):
    module, dm = fit(tmp_path, 3)  # 1 round
    module.eval()
    batch = dm.collator()(dm.dataset("train").items[:2])
    torch.manual_seed(1)
    winners, scores = module.best_of_k(batch)
    assert scores.shape == (2, 8)
    assert [w["score"] for w in winners] == pytest.approx(scores.max(-1).values.tolist())
    for w, prompt in zip(winners, batch["prompt_ids"]):
        assert w["input_ids"][:len(prompt)] == list(prompt)
        assert sum(w["completion_mask"]) == len(w["input_ids"]) - len(prompt) >= 1
        assert module.tokenizer.decode(w["input_ids"][len(prompt):], skip_special_tokens=True) == w["completion"]


def test_pool_all_keeps_every_round_last_keeps_one(tmp_path):
    pooled, _ = fit(tmp_path / "all", 9, pool="all")  # 3 rounds x 4 prompts
    last, _ = fit(tmp_path / "last", 9, pool="last")
    assert len(pooled.pool) == 12 and len(last.pool) == 4


def test_lr_schedule_is_stepped_per_sft_step(tmp_path):
    module, _ = fit(tmp_path, 3, warmup=6, schedule="constant")  # 1 round of 3 SFT steps under manual optimisation
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 4 / 6)  # warm-up factor at step 3


@pytest.mark.slow
def test_rejection_sampling_raises_the_reward(tmp_path):
    module, dm = fit(tmp_path, 60)
    module.eval()
    batch = dm.collator()(dm.dataset("val").items)
    torch.manual_seed(2)
    module.k = 8
    winners, scores = module.best_of_k(batch)
    torch.manual_seed(0)
    fresh = RejectionSampling(model={"config": TINY}, sampling={"temperature": 1.0, "max_new_tokens": 6}, k=8,
                              reward_fn=z_reward)
    torch.manual_seed(2)
    _, before = fresh.best_of_k(batch)
    assert scores.mean() > before.mean() + 0.2, (before.mean(), scores.mean())


def test_expected_best_of_k_by_hand():
    scores = torch.tensor([[3.0, 1.0, 2.0]])
    assert expected_best_of_k(scores, 1).item() == pytest.approx(2.0)  # the mean
    assert expected_best_of_k(scores, 3).item() == pytest.approx(3.0)  # the max
    # k=2: subsets {1,2}->2, {1,3}->3, {2,3}->3: mean 8/3
    assert expected_best_of_k(scores, 2).item() == pytest.approx(8 / 3)
    with pytest.raises(ValueError):
        expected_best_of_k(scores, 4)


def test_best_temperature_grows_with_k():
    """Llama 2 Fig. 8 in miniature: a categorical policy whose logits correlate with the reward."""
    gen = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(100, generator=gen)
    reward = 0.5 * logits + torch.randn(100, generator=gen)

    def exact_best_of_k(t, k):  # E[max of k] under softmax(logits / t), computed exactly
        p = torch.softmax(logits / t, -1)
        order = reward.argsort()
        cdf = p[order].cumsum(0)
        below = torch.cat([torch.zeros(1), cdf[:-1]])
        return float((reward[order] * (cdf**k - below**k)).sum())

    temps = [0.25 * i for i in range(1, 17)]
    best = {k: max(temps, key=lambda t: exact_best_of_k(t, k)) for k in (1, 64)}
    assert best[64] > best[1]

    def sampler(t, n):  # the helper on samples finds the same ordering
        p = torch.softmax(logits / t, -1)
        idx = torch.multinomial(p.expand(200, -1), n, replacement=True, generator=gen)
        return reward[idx]

    t1, _ = pick_temperature(sampler, temps, k=1, n=16)
    t64, table = pick_temperature(sampler, temps, k=64, n=64)
    assert t64 > t1
    assert set(table) == set(temps) and not any(math.isnan(v) for v in table.values())
