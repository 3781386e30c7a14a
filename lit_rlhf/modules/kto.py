"""KTO: preference optimisation from unpaired desirable / undesirable completions (Ethayarajh et al. 2024)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lit_rlhf.losses import kto_loss, kto_reference_point, kto_weight_bounds
from lit_rlhf.modules.base import StepOutput, StepSplit
from lit_rlhf.modules.dpo import DPO, Reference


class KTO(DPO):
    """Kahneman–Tversky Optimization on :class:`~lit_rlhf.data.UnpairedPreferenceDataModule` batches.

    Per batch: one policy forward over the labelled completions, and no-grad forwards of the policy and
    the reference over the batch's mismatched prompt/completion pairs, whose mean log-ratio (averaged over
    ranks, clamped at 0) is the reference point z₀ (§4.1); the loss is :func:`~lit_rlhf.losses.kto_loss`.
    At fit start the class-imbalance rule (§4.2, ``λ_D n_D / (λ_U n_U)`` in ``[1, 4/3]``) is checked on the
    training rows and a warning gives the ``desirable_weight`` range that satisfies it.
    Logs ``train/loss``, ``kl`` (z₀), ``rewards/chosen`` (desirable), ``rewards/rejected`` (undesirable),
    ``rewards/margins`` (training only), ``logps/chosen|rejected`` (TRL's names; each class mean weighted by its
    rows, so that it is exact over ranks and batches).

    Args:
        beta: β.
        desirable_weight: λ_D.
        undesirable_weight: λ_U.
        reference: ``copy``, ``lora_disabled`` or ``none`` (precomputed log-probs do not cover the mismatched
            pairs, which depend on the batch).
        **kwargs: the policy, sampling, ``init_from``, optimizer and schedule arguments of
            :class:`~lit_rlhf.modules.DPO` (its pair-loss arguments are not used).
    """

    paired_batches = False  # labelled completions, not pairs

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                 reference: Reference = "copy", **kwargs: Any) -> None:
        if reference == "precomputed":
            raise ValueError("KTO: reference='precomputed' is not supported (the mismatched pairs of the reference "
                             "point change with each batch); use copy, lora_disabled or none")
        if desirable_weight <= 0 or undesirable_weight <= 0:
            raise ValueError(f"KTO weights must be > 0, got {desirable_weight}, {undesirable_weight}")
        unused = {k: kwargs[k] for k in ("loss_type", "loss_weights", "label_smoothing", "rpo_alpha")
                  if k in kwargs and kwargs[k] not in (None, 0, 0.0, "sigmoid", ["sigmoid"])}
        if unused:
            raise ValueError(f"KTO does not use DPO's pair-loss arguments {unused}; remove them")
        super().__init__(beta=beta, reference=reference, **kwargs)
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def on_fit_start(self) -> None:
        super().on_fit_start()
        counts = getattr(self.trainer.datamodule, "label_counts", None)
        if counts is None:
            raise ValueError("KTO needs an UnpairedPreferenceDataModule (rows with a desirable/undesirable label)")
        n_desirable, n_undesirable = counts("train")
        ok, (low, high) = kto_weight_bounds(n_desirable, n_undesirable, self.desirable_weight, self.undesirable_weight)
        if not ok:
            rank_zero_warn(
                f"KTO: {n_desirable} desirable and {n_undesirable} undesirable training rows with desirable_weight="
                f"{self.desirable_weight}, undesirable_weight={self.undesirable_weight}: the paper keeps "
                f"λ_D·n_D / (λ_U·n_U) in [1, 4/3]; e.g. desirable_weight in [{low:.3g}, {high:.3g}]")

    def _reference(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logps = self.reference_logps(input_ids, attention_mask, mask)
        return torch.zeros(len(input_ids), device=self.device) if logps is None else logps

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Loss, ``kl`` (z₀) and the class means of ``rewards/*`` and ``logps/*`` (weighted by the rows of each
        class; 0 rows: no weight) of a batch of labelled completions and their mismatched pairs."""
        logps, _ = self.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        reference = self._reference(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        kl_args = (batch["kl_input_ids"], batch["kl_attention_mask"], batch["kl_completion_mask"])
        with torch.no_grad():
            kl_policy = self.sequence_logps(self.model, *kl_args)[0]
            kl_reference = self._reference(*kl_args)
        gather = self.all_gather if self._trainer is not None and self.trainer.world_size > 1 else None
        z0 = kto_reference_point(kl_policy, kl_reference, gather)
        desirable = torch.as_tensor(batch["label"], dtype=torch.bool, device=logps.device)
        losses, rewards = kto_loss(logps, reference, desirable, z0, self.beta, self.desirable_weight,
                                   self.undesirable_weight)
        loss = losses.mean()
        out = StepOutput(loss, {"loss": loss.detach(), "kl": z0}, len(losses))
        means = {}
        for name, rows in (("chosen", desirable), ("rejected", ~desirable)):
            n = int(rows.sum())
            means[f"rewards/{name}"] = (rewards[rows].mean() if n else rewards.new_zeros(()), n)
            means[f"logps/{name}"] = (logps.detach()[rows].mean() if n else rewards.new_zeros(()), n)
        if split == "train":  # in evaluation a rank may hold one class only (unshuffled shards): the class means
            # above are reduced over ranks with their counts, a per-batch difference would not be
            both = bool(desirable.any() and (~desirable).any())
            margin = means["rewards/chosen"][0] - means["rewards/rejected"][0]
            means["rewards/margins"] = (margin, len(losses) if both else 0)
        return out.add_subset_means(means)
