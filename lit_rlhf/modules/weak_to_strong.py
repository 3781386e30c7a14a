"""Weak-to-strong generalization (Burns et al. 2023): a strong classifier trained on weak soft labels."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.checkpoint import checkpoint

from lit_rlhf.losses.classification import W2S_LOSSES, W2SLoss, confidence_weight, weak_to_strong_loss
from lit_rlhf.models import ModelLike, disable_dropout
from lit_rlhf.models.heads import Pooling
from lit_rlhf.modules.base import StepOutput, StepSplit
from lit_rlhf.modules.outcome_rm import OutcomeRewardModel


class WeakToStrong(OutcomeRewardModel):
    """Strong student (any HF backbone + a 2-class head) trained on a weak supervisor's soft labels.

    Batches are :class:`~lit_rlhf.data.WeakLabelDataModule` batches: ``soft_label`` ``(B, 2)`` is the
    training target (the weak labels, or one-hot gold for a ground-truth run) and ``gold_label`` ``(B,)``
    the ground truth. As in the reference code, dropout is off (``train_dropout=False``: every dropout
    probability of the backbone set to 0, however the model was loaded) and the head, bias-free like the
    reference's, starts at zero. The loss sees the whole optimisation batch: with
    ``micro_batch_size`` the batch is run in chunks under activation checkpointing and their logits are
    stacked, so ``logconf``'s batch quantile is the one of the full batch at the memory of one chunk
    (Lightning's ``accumulate_grad_batches`` would split the quantile and is refused for ``logconf``).

    Logged, per split prefix: ``loss``, ``accuracy`` (vs gold), ``weak_accuracy`` (student argmax vs weak
    argmax = student–supervisor agreement); in validation/test also ``agreement/weak_right`` and
    ``agreement/weak_wrong`` (agreement on the examples the supervisor got right / wrong; the paper's imitation
    analysis); in training ``confidence_weight`` for ``logconf``.

    Args:
        model: backbone name or spec.
        pooling: ``last`` token (reference code) or ``mean`` (sentence encoders).
        loss: ``xent``, ``logconf`` or ``product`` (see :mod:`lit_rlhf.losses.classification`).
        aux_coef: logconf ``α_max``.
        warmup_frac: logconf warm-up fraction of training.
        confidence_schedule: logconf ``repo`` (warm-up, then jump) or ``linear`` (paper).
        threshold: logconf ``weak_prior`` (reference) or ``median``.
        product_alpha: product loss exponent of the weak labels.
        product_beta: product loss exponent of the strong predictions.
        zero_init_head: start the head at zero (reference code: every prediction 50/50 at step 0).
        train_dropout: keep the backbone's dropout (its config's probabilities) while training (reference
            default: off; a linear probe never has it).
        linear_probe: freeze the backbone and train only the head.
        micro_batch_size: chunk size of the forward pass inside an optimisation batch (``None`` = whole batch).
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        pooling: Pooling = "last",
        loss: W2SLoss = "xent",
        aux_coef: float = 0.5,
        warmup_frac: float = 0.1,
        confidence_schedule: Literal["repo", "linear"] = "repo",
        threshold: Literal["weak_prior", "median"] = "weak_prior",
        product_alpha: float = 1.0,
        product_beta: float = 1.0,
        zero_init_head: bool = True,
        train_dropout: bool = False,
        linear_probe: bool = False,
        micro_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if loss not in W2S_LOSSES:
            raise ValueError(f"unknown weak-to-strong loss {loss!r}; expected one of {W2S_LOSSES}")
        super().__init__(model=model, pooling=pooling, **kwargs)
        self.loss_name = loss
        self.aux_coef, self.warmup_frac = aux_coef, warmup_frac
        self.confidence_schedule, self.threshold = confidence_schedule, threshold
        self.product_alpha, self.product_beta = product_alpha, product_beta
        self.train_dropout, self.linear_probe, self.micro_batch_size = train_dropout, linear_probe, micro_batch_size
        if zero_init_head:
            torch.nn.init.zeros_(self.model.head.weight)
        if linear_probe:
            self.model.backbone.requires_grad_(False)
        if not train_dropout or linear_probe:
            disable_dropout(self.model.backbone)

    def on_fit_start(self) -> None:
        if self.loss_name == "logconf" and self.trainer.accumulate_grad_batches > 1:
            raise ValueError(
                "WeakToStrong(loss='logconf') takes its threshold over the whole optimisation batch; "
                "trainer.accumulate_grad_batches > 1 would split it. Use a larger data batch_size with "
                "model micro_batch_size instead."
            )

    @property
    def step_frac(self) -> float:
        """Fraction of training done: optimizer steps taken / steps planned (0 outside ``fit``)."""
        trainer = self._trainer
        if trainer is None or not self.training:
            return 0.0
        total = trainer.estimated_stepping_batches
        return min(1.0, self.global_step / total) if total and total != float("inf") else 0.0

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` logits; with ``micro_batch_size`` computed chunk by chunk under activation checkpointing."""
        size = self.micro_batch_size
        if size is None or size >= len(input_ids) or not torch.is_grad_enabled():
            return self(input_ids, attention_mask)
        chunks = zip(input_ids.split(size), attention_mask.split(size))
        return torch.cat([checkpoint(self.model, ids, mask, use_reentrant=False) for ids, mask in chunks])

    def loss(self, logits: torch.Tensor, soft_labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss over the batch and the loss's own statistics."""
        frac = self.step_frac
        loss = weak_to_strong_loss(self.loss_name, logits, soft_labels, frac, self.aux_coef, self.warmup_frac,
                                   self.confidence_schedule, self.threshold, self.product_alpha, self.product_beta)
        if self.loss_name != "logconf":
            return loss.mean(), {}
        weight = confidence_weight(frac, self.aux_coef, self.warmup_frac, self.confidence_schedule)
        return loss.mean(), {"confidence_weight": torch.tensor(weight)}

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Loss and agreement metrics of a batch: in training the whole-batch ones (``accuracy``, ``weak_accuracy``)
        and the loss's own (``confidence_weight``); in evaluation also the per-subset agreements, each over its
        own examples (:func:`classifier_agreement`)."""
        logits = self.logits(batch["input_ids"], batch["attention_mask"])
        loss, extra = self.loss(logits, batch["soft_label"])
        agreement = classifier_agreement(logits, batch["soft_label"], batch["gold_label"])
        out = StepOutput(loss, {"loss": loss.detach()}, len(logits))
        if split != "train":
            return out.add_subset_means(agreement)
        out.metrics.update({k: agreement[k][0] for k in ("accuracy", "weak_accuracy")}, **extra)
        return out


def classifier_agreement(
    logits: torch.Tensor, weak_soft: torch.Tensor, gold: torch.Tensor
) -> dict[str, tuple[torch.Tensor, int]]:
    """Accuracy vs gold and agreement with the weak labels, overall and where the weak labels are right / wrong.

    Args:
        logits: ``(B, C)`` student logits.
        weak_soft: ``(B, C)`` weak labels (training targets).
        gold: ``(B,)`` gold class ids.
    Returns:
        ``{name: (mean as a 0-d tensor, number of examples it is over)}`` for ``accuracy``,
        ``weak_accuracy`` (student–supervisor agreement) and, when present, ``agreement/weak_right`` and
        ``agreement/weak_wrong``.
    """
    pred, weak, gold = logits.detach().argmax(-1), weak_soft.argmax(-1), gold.long()
    agree = (pred == weak).float()
    weak_right = weak == gold
    out = {"accuracy": ((pred == gold).float().mean(), len(gold)), "weak_accuracy": (agree.mean(), len(gold))}
    for name, subset in (("agreement/weak_right", weak_right), ("agreement/weak_wrong", ~weak_right)):
        if subset.any():
            out[name] = (agree[subset].mean(), int(subset.sum()))
    return out
