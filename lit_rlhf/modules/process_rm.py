"""Process reward model (PRM): is each step of a solution correct? (Lightman et al. 2023, "Let's Verify")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from lit_rlhf.losses.classification import correct_probability, first_wrong_step, step_loss
from lit_rlhf.models import ModelLike, ModelSpec, PrefixPlan, load_tokenizer, token_classifier
from lit_rlhf.models.checkpoint import EXPORT_SETTINGS
from lit_rlhf.modules.base import StepModule, StepOutput, StepSplit

NumClasses = Literal[2, 3]


class ProcessRewardModel(StepModule):
    """Per-step correctness classifier read at the last token of each step.

    Trained on :class:`~lit_rlhf.data.StepLabelDataModule` batches (``labels`` = a class id on each
    supervised step's separator token, −100 elsewhere) with :func:`~lit_rlhf.losses.step_loss`, averaged
    over all labelled steps of the batch. Score solutions with :func:`lit_rlhf.eval.verify.score_steps`
    and :func:`~lit_rlhf.eval.verify.solution_scores`. :meth:`export` writes an
    ``AutoModelForTokenClassification`` folder with the same logits. Dropout: the model's own config.

    Logs ``train|val/loss``, ``train|val/step_accuracy`` (argmax over labelled steps) and
    ``train|val/first_error_accuracy`` (share of solutions whose first step predicted wrong —
    ``P(correct) < 0.5`` — is the true first wrong step, "none" included).

    Args:
        model: backbone name or spec (decoder or encoder).
        num_classes: 2 (wrong / correct) or 3 (negative / neutral / positive); must match the data.
        step_separator: text after every step; must match the data module's (checked at fit start).
        neutral_is_correct: with 3 classes, whether P(correct) includes the neutral class.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    progress_bar_metrics = ("loss", "step_accuracy")

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        num_classes: NumClasses = 2,
        step_separator: str = "\n",
        neutral_is_correct: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_hparams()
        if num_classes not in get_args(NumClasses):
            raise ValueError(f"num_classes must be one of {list(get_args(NumClasses))}, got {num_classes}")
        self.num_classes, self.step_separator, self.neutral_is_correct = num_classes, step_separator, neutral_is_correct
        self.spec = ModelSpec.of(model)
        self.tokenizer = load_tokenizer(self.spec)
        self.model = token_classifier(self.spec, num_classes=num_classes, tokenizer=self.tokenizer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
                ) -> torch.Tensor:
        """Step-class logits at every token, ``(B, T, C)``; ``plan``: a prompt-once layout of the batch
        (:class:`~lit_rlhf.models.HeadModel`)."""
        return self.model(input_ids, attention_mask, plan)

    @torch.no_grad()
    def step_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
                   ) -> torch.Tensor:
        """``P(step correct)`` at every token, ``(B, T)`` (meaningful on step-separator tokens)."""
        return correct_probability(self(input_ids, attention_mask, plan), self.neutral_is_correct)

    def export(self, folder: str | Path, merge_lora: bool = True) -> Path:
        """The token-classification folder, plus the step layout its scorers need (``EXPORT_SETTINGS``)."""
        out = super().export(folder, merge_lora)
        settings = {"step_separator": self.step_separator, "neutral_is_correct": self.neutral_is_correct}
        (out / EXPORT_SETTINGS).write_text(json.dumps(settings))
        return out

    def on_fit_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        for name in ("step_separator", "num_classes"):
            theirs = getattr(data, name, getattr(self, name))
            if theirs != getattr(self, name):
                raise ValueError(
                    f"ProcessRewardModel.{name}={getattr(self, name)!r} but the data module uses {theirs!r}"
                )

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Step loss averaged over the batch's labelled steps, step accuracy and first-error accuracy."""
        logits, labels = self(batch["input_ids"], batch["attention_mask"]), batch["labels"]
        mask = labels != -100
        steps = mask.sum(-1)
        loss = (step_loss(logits, labels) * steps).sum() / steps.sum().clamp(min=1)
        step_accuracy = (logits.argmax(-1) == labels)[mask].float().mean()
        predicted = first_wrong_step(correct_probability(logits.detach(), self.neutral_is_correct), mask)
        first_error_accuracy = (predicted == first_wrong_step((labels != 0).float(), mask))[steps > 0].float().mean()
        metrics = {"loss": loss.detach(), "step_accuracy": step_accuracy, "first_error_accuracy": first_error_accuracy}
        return StepOutput(loss, metrics, len(batch["input_ids"]))
