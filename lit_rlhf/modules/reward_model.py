"""Bradley–Terry reward model (Llama 2 margins, soft labels, reward centering)."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

from lit_rlhf.losses import LLAMA2_MARGINS, bradley_terry_loss, reward_centering_penalty
from lit_rlhf.models import ForwardLayout, ModelLike, ModelSpec, load_tokenizer, scalar_head_model
from lit_rlhf.models.heads import Pooling
from lit_rlhf.modules.base import StepModule, StepOutput, StepSplit

MarginSource = Literal["none", "column", "rating", "adaptive"]


class RewardModel(StepModule):
    """Scalar reward model trained on preference pairs with the Bradley–Terry loss.

    One forward pass over ``[chosen; rejected]`` (the :class:`~lit_rlhf.data.PreferenceDataModule`
    batch layout); the reward is read at the last attended token that is not padding, as Hugging Face's
    ``*ForSequenceClassification`` reads it, with padding = EOS: the EOS appended to each completion is
    skipped, so :meth:`export`'s folder gives the same reward for ``tok(prompt + completion)`` (see
    :func:`~lit_rlhf.models.heads.export_head`). Dropout: the model's own config. Logs
    ``train|val/loss|accuracy|margin|mean_reward``, ``val/accuracy/<rating>`` per rating level and
    ``val/gold_agreement`` where rows carry a ``gold_label`` (1: chosen is truly better, 0: rejected is).

    Args:
        model: backbone name or spec (decoder or encoder).
        pooling: ``last`` real token or ``mean`` over tokens.
        margin: where the per-pair margin comes from: ``none``; ``column`` (the data's ``margin``);
            ``rating`` (the data's ``rating`` through ``rating_margins``); ``adaptive``
            (``margin_scale`` × the data's ``strength``, the ensemble mean preference difference).
        rating_margins: ``small`` / ``large`` (Llama 2 Table 27) or a ``{rating: margin}`` table.
        margin_scale: λ of the adaptive margin.
        clip_margin: clip margins below at 0.
        label_smoothing: α; the target is ``1 − α`` where the data has no ``soft_label``.
        use_soft_label_column: read the data's ``soft_label`` column (off: hard labels / smoothing only).
        center_rewards: coefficient of the centering penalty ``(r_c + r_r)²``.
        shared_prefix: allow encoding each pair's prompt once (the prompt first, the replies on its keys and values;
            or one row with a block-causal mask; exact), per batch where it is cheaper
            (:class:`~lit_rlhf.models.ForwardLayout`).
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    progress_bar_metrics = ("loss", "accuracy")

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        pooling: Pooling = "last",
        margin: MarginSource = "column",
        rating_margins: str | dict[str, float] = "small",
        margin_scale: float = 1.0,
        clip_margin: bool = False,
        label_smoothing: float = 0.0,
        use_soft_label_column: bool = True,
        center_rewards: float = 0.0,
        shared_prefix: bool = True,
        **kwargs: Any,
    ) -> None:
        if margin not in get_args(MarginSource):
            raise ValueError(f"margin must be one of {list(get_args(MarginSource))}, got {margin!r}")
        super().__init__(**kwargs)
        self.record_hparams()
        self.spec = ModelSpec.of(model)
        self.tokenizer = load_tokenizer(self.spec, pad_with_eos=True)
        self.model = scalar_head_model(self.spec, self.tokenizer, pooling=pooling)
        if isinstance(rating_margins, str):
            if rating_margins not in LLAMA2_MARGINS:
                raise ValueError(
                    f"rating_margins must be one of {sorted(LLAMA2_MARGINS)} or a table, got {rating_margins!r}"
                )
            rating_margins = LLAMA2_MARGINS[rating_margins]
        self.rating_margins = {k.lower(): float(v) for k, v in rating_margins.items()}
        self.margin_source, self.margin_scale, self.clip_margin = margin, margin_scale, clip_margin
        self.label_smoothing, self.center_rewards = label_smoothing, center_rewards
        self.use_soft_label_column = use_soft_label_column
        self.layout = ForwardLayout(padding_free=False, shared_prefix=shared_prefix)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards ``(N,)``."""
        return self.model(input_ids, attention_mask)

    def features_and_rewards(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features ``(N, H)`` and rewards ``(N,)`` of every sequence in a ``[chosen; rejected]`` batch (one
        forward; each pair's prompt encoded once where :class:`~lit_rlhf.models.ForwardLayout` finds it cheaper)."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        groups = torch.arange(len(ids)) % (len(ids) // 2) if len(ids) % 2 == 0 else None
        plan = self.layout.head_plan(self.model, ids, attention, groups)
        features = self.model.features(ids, attention, plan)
        rewards = self.model.head(features.to(self.model.head.weight.dtype)).float().squeeze(-1)
        return features, rewards

    def margins(self, batch: dict[str, Any], n: int) -> torch.Tensor | None:
        """Per-pair margin ``(B,)`` from the configured source (``None`` = no margin)."""
        if self.margin_source == "none":
            return None
        if self.margin_source == "rating":
            ratings = batch.get("rating")
            if ratings is None:
                raise ValueError("margin='rating' needs a 'rating' column in the preference data")
            unknown = {r for r in ratings if r is not None and str(r).lower() not in self.rating_margins}
            if unknown:
                raise ValueError(f"ratings {sorted(unknown)} are not in the margin table {sorted(self.rating_margins)}")
            values = [self.rating_margins[str(r).lower()] if r is not None else 0.0 for r in ratings]
            margin = torch.tensor(values, device=self.device)
        else:
            key = "margin" if self.margin_source == "column" else "strength"
            if key not in batch:
                if self.margin_source == "adaptive" and self.training:
                    raise ValueError("margin='adaptive' needs a 'strength' column (see `lit-rlhf strength`)")
                return None  # e.g. evaluation data without strength: plain BT loss
            margin = self.margin_scale * batch[key] if key == "strength" else batch[key]
        margin = torch.nan_to_num(margin.float(), nan=0.0)
        return margin.clamp(min=0) if self.clip_margin else margin

    def score_pairs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-pair losses ``(B,)``, rewards and features for a batch of ``2B`` sequences (chosen first).

        Returns a dict with ``losses``, ``chosen`` / ``rejected`` (detached rewards) and ``features``
        (``(2B, H)``, with gradient) for subclasses that add terms on the representations.
        """
        features, rewards = self.features_and_rewards(batch)
        chosen, rejected = rewards.chunk(2)
        n = len(chosen)
        soft = batch.get("soft_label") if self.use_soft_label_column else None
        if soft is not None:
            soft = torch.nan_to_num(soft.float(), nan=1.0 - self.label_smoothing)
        elif self.label_smoothing:
            soft = 1.0 - self.label_smoothing  # None: hard labels, the cheaper plain BT loss
        losses = bradley_terry_loss(chosen, rejected, self.margins(batch, n), soft)
        if self.center_rewards:
            losses = losses + self.center_rewards * reward_centering_penalty(chosen, rejected)
        return {"losses": losses, "chosen": chosen.detach(), "rejected": rejected.detach(), "features": features}

    def stats(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch means of :meth:`score_pairs`' output by metric key (subclasses add theirs)."""
        diff = out["chosen"] - out["rejected"]
        return {
            "loss": out["losses"].detach().mean(),
            "accuracy": (diff > 0).float().mean(),
            "margin": diff.mean(),
            "mean_reward": torch.cat([out["chosen"], out["rejected"]]).mean(),
        }

    def subset_accuracies(
        self, batch: dict[str, Any], out: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """``{key: (mean, pairs)}``: accuracy per rating level (``accuracy/<rating>``) and, where rows carry a
        ``gold_label`` (1: chosen is truly better, 0: rejected is; e.g. known-noisy data), ``gold_agreement``."""
        correct = (out["chosen"] > out["rejected"]).float()
        subsets = {}
        if "gold_label" in batch:
            subsets["gold_agreement"] = (correct == batch["gold_label"]).float(), ~torch.isnan(batch["gold_label"])
        ratings = batch.get("rating") or []
        for rating in sorted({str(r) for r in ratings if r is not None}):
            where = torch.tensor([str(r) == rating for r in ratings], device=correct.device)
            subsets[f"accuracy/{rating}"] = correct, where
        return {key: (values[at].mean(), int(at.sum())) for key, (values, at) in subsets.items() if at.any()}

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Mean Bradley–Terry loss of a ``[chosen; rejected]`` batch and its :meth:`stats`; in evaluation also
        :meth:`subset_accuracies`."""
        out = self.score_pairs(batch)
        step = StepOutput(out["losses"].mean(), self.stats(out), len(out["chosen"]))
        return step if split == "train" else step.add_subset_means(self.subset_accuracies(batch, out))
