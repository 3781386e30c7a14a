"""OnlineDPO: best/worst pairing by hand, the DPO loss on the pairs, learning from a reward, reference refresh."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import TINY, arithmetic_prompts
from conftest import online_trainer as trainer

from lit_rlhf.losses import dpo_loss
from lit_rlhf.modules import OnlineDPO
from lit_rlhf.modules.online_dpo import best_worst_pairs


def digit_reward(prompts, completions):
    """Fraction of the completion's characters that are digits (0 for an empty completion)."""
    return torch.tensor([sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions])


def make(**kwargs):
    args = dict(model={"config": TINY}, sampling={"temperature": 1.0, "max_new_tokens": 6}, group_size=4,
                reward_fn=digit_reward, beta=0.1, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    return OnlineDPO(**{**args, **kwargs})


class Probe(L.Callback):
    def __init__(self):
        self.metrics, self.buffers = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if len(self.metrics) == trainer.global_step:  # a batch whose samples all tied takes no step
            return
        self.metrics.append(dict(pl_module.last_metrics))
        self.buffers.append({k: v.clone() for k, v in pl_module.buffer.data.items()})


def test_best_worst_pairs_by_hand():
    scores = torch.tensor([0.1, 0.9, 0.5,  # group 0: best row 1, worst row 0
                           0.3, 0.3, 0.3,  # group 1: all tied, no pair
                           2.0, -1.0, 0.0])  # group 2: best row 6, worst row 7
    assert best_worst_pairs(scores, 3) == ([1, 6], [0, 7])
    assert best_worst_pairs(torch.tensor([1.0, 1.0]), 2) == ([], [])


def test_one_step_is_the_dpo_loss_of_best_vs_worst_and_changes_the_parameters(tmp_path):
    torch.manual_seed(0)
    module, probe = make(), Probe()
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer(tmp_path, 1, [probe], max_epochs=-1).fit(module, arithmetic_prompts(4, 2))
    data = probe.buffers[0]
    pairs = len(data["scores"]) // 2
    assert pairs >= 1
    chosen, rejected = data["scores"][:pairs], data["scores"][pairs:]
    assert bool((chosen > rejected).all())  # every pair: the higher-scored completion is the chosen one
    # the logged loss is the DPO loss of the stored pairs at the starting policy (= the reference: loss log 2)
    assert probe.metrics[0]["train/loss"] == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-5)
    zero = torch.zeros(pairs)
    assert float(dpo_loss(zero, zero, zero, zero, 0.1)[0].mean()) == pytest.approx(probe.metrics[0]["train/loss"])
    changed = any(not torch.equal(a, b) for a, b in zip(before, module.model.parameters()))
    assert changed
    for a, b in zip(before, module.ref_model.parameters()):  # the reference stays the starting policy
        assert torch.equal(a, b)


def test_online_dpo_raises_the_reward_and_the_implicit_margin(tmp_path):
    torch.manual_seed(0)
    module, probe = make(optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2)), Probe()
    trainer(tmp_path, 24, [probe], max_epochs=-1).fit(module, arithmetic_prompts(16, 4))
    rewards = [m["reward"] for m in probe.metrics]
    margins = [m["rewards/margins"] for m in probe.metrics]
    assert len(rewards) == 24
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.2, (first, last)  # measured: 0.07 -> 0.8
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # step 0: policy = reference
    assert sum(margins[-6:]) / 6 > 0.1, margins  # later pairs: the policy prefers chosen more than the reference


def test_reference_refresh_copies_the_policy(tmp_path):
    torch.manual_seed(0)
    module = make(refresh_reference_every=2)
    trainer(tmp_path, 2, max_epochs=-1).fit(module, arithmetic_prompts(8, 2))
    for a, b in zip(module.model.parameters(), module.ref_model.parameters()):
        assert torch.equal(a, b)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="group_size"):
        make(group_size=1)
    with pytest.raises(ValueError, match="refresh_reference_every"):
        make(refresh_reference_every=0)
    with pytest.raises(ValueError, match="temperature"):
        make(sampling={"temperature": 0.0})


def test_reference_from_another_policy(tmp_path):
    from lit_rlhf.modules import SFT

    torch.manual_seed(1)
    other = SFT(model={"config": TINY})
    other.export(tmp_path / "other")
    torch.manual_seed(0)
    module = make(reference_from=str(tmp_path / "other"))
    ref = dict(module.ref_model.named_parameters())
    for name, p in other.model.named_parameters():
        assert torch.equal(ref[name], p), name
    assert not all(torch.equal(a, b) for a, b in zip(module.model.parameters(), module.ref_model.parameters()))
    assert not any(p.requires_grad for p in module.ref_model.parameters())
