"""Outcome reward model (ORM): is a complete solution's final answer right?"""

from __future__ import annotations

from typing import Any

import torch

from lit_rlhf.losses.classification import xent_loss
from lit_rlhf.models import ModelLike, ModelSpec, PrefixPlan, load_tokenizer, sequence_classifier
from lit_rlhf.models.heads import Pooling
from lit_rlhf.modules.base import StepModule, StepOutput, StepSplit


class OutcomeRewardModel(StepModule):
    """Correctness classifier on complete solutions (Cobbe et al.; the ORM of "Let's Verify").

    Trained on :class:`~lit_rlhf.data.WeakLabelDataModule` rows ``{text, label}`` (label 1 = the final
    answer is right; soft labels allowed) with soft-target cross-entropy; the score of a solution is
    ``P(correct)`` read at its last token that is not padding (EOS pads; HF's rule, so :meth:`export` gives an
    ``AutoModelForSequenceClassification`` with the same logits for ``tok(text)``). Dropout: the model's own
    config. Logs ``train|val/loss`` and ``train|val/accuracy``.

    Args:
        model: backbone name or spec.
        pooling: ``last`` token (default, as the ORM reads the final token) or ``mean``.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    progress_bar_metrics = ("loss", "accuracy")

    def __init__(self, model: ModelLike = "lit-rlhf:tiny-llama", pooling: Pooling = "last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record_hparams()
        self.spec = ModelSpec.of(model)
        self.tokenizer = load_tokenizer(self.spec, pad_with_eos=True)
        self.model = sequence_classifier(self.spec, num_classes=2, tokenizer=self.tokenizer, pooling=pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
                ) -> torch.Tensor:
        """Logits ``(B, 2)``; ``plan``: a prompt-once layout of the batch (:class:`~lit_rlhf.models.HeadModel`)."""
        return self.model(input_ids, attention_mask, plan)

    @torch.no_grad()
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
              ) -> torch.Tensor:
        """``P(correct)`` per solution, ``(B,)``."""
        return self(input_ids, attention_mask, plan).softmax(-1)[:, 1]

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Mean soft-target cross-entropy and argmax accuracy of a batch."""
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = xent_loss(logits, batch["soft_label"]).mean()
        accuracy = (logits.argmax(-1) == batch["label"]).float().mean()
        return StepOutput(loss, {"loss": loss.detach(), "accuracy": accuracy}, len(batch["label"]))
