"""Every TRL 1.16 DPO loss type (and KTO) against TRL's own loss code on the same random log-probs.

TRL computes its losses inside ``DPOTrainer._compute_loss`` / ``KTOTrainer._compute_loss``; the test calls
those methods on a stand-in trainer whose "model" returns the given per-token log-probs, with precomputed
reference log-probs, so the only code that runs is TRL's loss arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lit_rlhf.losses import dpo_loss, kto_loss, kto_reference_point

trl = pytest.importorskip("trl", reason="TRL is a test-only dependency (the dev extra)")
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

TRL_DPO_TYPES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                 "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]
EPS = {"exo_pair": 1e-3, "robust": 0.1, "aot": 0.05, "aot_unpaired": 0.05}  # label smoothing where TRL reads it


class Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


def fake_model(per_token_logps: torch.Tensor):
    """A callable standing in for the policy: returns TRL's fused-LM-head outputs for fixed per-token log-probs."""
    def model(**kwargs):
        shape = per_token_logps.shape
        return SimpleNamespace(log_probs=per_token_logps, entropy=torch.zeros(shape), mean_logits=torch.zeros(shape),
                               is_top1=torch.zeros(shape, dtype=torch.bool), log_sum_sq_probs=torch.zeros(shape))
    model.training = True
    return model


def random_batch(batch: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """``2·batch`` rows ``[chosen; rejected]``: prompt of 2–4 tokens, completion of 1..width−4 tokens."""
    g = torch.Generator().manual_seed(seed)
    completion_mask = torch.zeros(2 * batch, width, dtype=torch.long)
    for row in range(2 * batch):
        start = int(torch.randint(2, 5, (1,), generator=g))
        end = int(torch.randint(start + 1, width + 1, (1,), generator=g))
        completion_mask[row, start:end] = 1
    shift = completion_mask[:, 1:].float()
    per_token = -torch.rand(2 * batch, width - 1, generator=g) * 1.5 * shift  # zero where TRL's labels are -100
    return {"completion_mask": completion_mask, "per_token": per_token,
            "ref": (per_token.sum(1) + torch.randn(2 * batch, generator=g)).chunk(2)}


def trl_dpo(loss_types: list[str], weights: list[float], data: dict, beta: float, eps: float) -> torch.Tensor:
    n = len(data["completion_mask"])
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=Accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=weights,
        beta=beta, label_smoothing=eps, use_weighting=False, args=SimpleNamespace(discopop_tau=0.05),
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros_like(data["completion_mask"]), "attention_mask": torch.ones(n, 1),
              "completion_mask": data["completion_mask"], "ref_chosen_logps": data["ref"][0],
              "ref_rejected_logps": data["ref"][1]}
    return DPOTrainer._compute_loss(trainer, fake_model(data["per_token"]), inputs, return_outputs=False)


def ours(loss_types, weights, data, beta, eps) -> torch.Tensor:
    logps = data["per_token"].sum(1)
    lengths = data["completion_mask"][:, 1:].sum(1)
    (pc, pr), (lc, lr) = logps.chunk(2), lengths.chunk(2)
    losses, _, _ = dpo_loss(pc, pr, *data["ref"], beta=beta, loss_type=loss_types, label_smoothing=eps,
                            chosen_lengths=lc, rejected_lengths=lr, loss_weights=weights)
    return losses.mean()


@pytest.mark.parametrize("loss_type", TRL_DPO_TYPES)
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_every_trl_loss_type_matches_trl(loss_type, beta):
    for seed in range(3):
        data = random_batch(batch=6, width=12, seed=seed)
        eps = EPS.get(loss_type, 0.0)
        expected = trl_dpo([loss_type], [1.0], data, beta, eps)
        got = ours(loss_type, None, data, beta, eps)
        assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6), (loss_type, seed, float(got), float(expected))


def test_weighted_combination_matches_trl():
    """MPO-style: several loss types with weights sum as TRL sums them."""
    data = random_batch(batch=5, width=10, seed=7)
    types, weights = ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]
    assert torch.allclose(ours(types, weights, data, 0.2, 0.0), trl_dpo(types, weights, data, 0.2, 0.0), rtol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.3, 0.7)])
def test_kto_matches_trl(weights):
    g = torch.Generator().manual_seed(3)
    n, width = 8, 9
    completion_mask = torch.zeros(n, width, dtype=torch.long)
    completion_mask[:, 3:] = 1
    per_token = -torch.rand(n, width - 1, generator=g) * completion_mask[:, 1:]
    ref = per_token.sum(1) + 0.5 * torch.randn(n, generator=g)
    kl_policy, kl_ref = -torch.rand(n, generator=g) * 5, -torch.rand(n, generator=g) * 5
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=Accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=0.3, desirable_weight=weights[0],
        undesirable_weight=weights[1], _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        _compute_kl_logps=lambda model, batch: kl_policy,
    )
    inputs = {"input_ids": torch.zeros(n, width, dtype=torch.long), "attention_mask": torch.ones(n, width),
              "completion_mask": completion_mask, "label": labels, "ref_logps": ref, "ref_KL_logps": kl_ref}
    expected = KTOTrainer._compute_loss(trainer, fake_model(per_token), inputs, return_outputs=False)
    z0 = kto_reference_point(kl_policy, kl_ref)
    losses, _ = kto_loss(per_token.sum(1), ref, labels, z0, beta=0.3, desirable_weight=weights[0],
                         undesirable_weight=weights[1])
    assert torch.allclose(losses.mean(), expected, rtol=1e-6, atol=1e-7)
