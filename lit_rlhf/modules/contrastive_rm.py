"""ContrastiveRM: a reward model with a SimCSE or SwAV term on its features (Secrets of RLHF II §3.1)."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from lit_rlhf.losses.contrastive import simcse_loss, swav_loss
from lit_rlhf.models.loading import hidden_size
from lit_rlhf.modules.reward_model import RewardModel

Contrastive = Literal["simcse", "swav"]
ContrastOn = Literal["pairs", "differences"]


class EmbeddingDropout:
    """Forward hook on the input embeddings: dropout ``p`` on their output while the model trains."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return F.dropout(output, self.p, training=module.training) if self.p > 0 else output


class ContrastiveRM(RewardModel):
    """:class:`RewardModel` + β × a contrastive loss between two dropout views: ``L = L_rm + β·L_cl``.

    While training, the batch goes through the backbone twice; dropout makes the two passes two views
    (SimCSE's augmentation). Because many backbones have dropout 0 (Llama) and their dropout rates are
    read at construction under architecture-specific names, the views come from a forward hook that applies
    dropout ``view_dropout`` to the input-embedding output of any backbone (the backbone's own dropout,
    if any, also acts). The Bradley–Terry loss is computed on the first view; validation is a plain
    :class:`RewardModel` step (one pass, no contrastive term).

    Args:
        contrastive: ``simcse`` (InfoNCE, Eq. 9) or ``swav`` (swapped prediction, Eqs. 7–8).
        contrast_on: contrast ``pairs`` {f(x, y_c), f(x, y_r)} or preference ``differences``
            {f(x, y_c) − f(x, y_r), f(x, y_r) − f(x, y_c)} (the paper's "-diff" variants).
        beta: β (paper: SimCSE 1; SwAV-diff 0.5 with K = 20; SwAV 0.1 with K = 50).
        temperature: τ of the contrastive softmax.
        num_prototypes: K, SwAV prototypes (a trainable ``(K, H)`` parameter).
        view_dropout: dropout on the input embeddings while training (paper: 0.05).
        **kwargs: :class:`RewardModel` arguments.
    """

    def __init__(
        self,
        contrastive: Contrastive = "simcse",
        contrast_on: ContrastOn = "pairs",
        beta: float = 1.0,
        temperature: float = 0.05,
        num_prototypes: int = 20,
        view_dropout: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if contrastive not in get_args(Contrastive) or contrast_on not in get_args(ContrastOn):
            raise ValueError(f"contrastive must be one of {list(get_args(Contrastive))} and contrast_on one of "
                             f"{list(get_args(ContrastOn))}, got {contrastive!r}, {contrast_on!r}")
        self.contrastive, self.contrast_on, self.beta, self.temperature = contrastive, contrast_on, beta, temperature
        h = hidden_size(self.model.backbone)
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, h) / h**0.5) if contrastive == "swav" else None
        self.model.backbone.get_input_embeddings().register_forward_hook(EmbeddingDropout(view_dropout))

    def representations(self, features: torch.Tensor) -> torch.Tensor:
        """``(2B, H)`` samples to contrast: the pair features or ``[f_c − f_r; f_r − f_c]``."""
        if self.contrast_on == "pairs":
            return features
        chosen, rejected = features.chunk(2)
        return torch.cat([chosen - rejected, rejected - chosen])

    def contrastive_loss(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """Per-sample ``(2B,)`` contrastive loss between the two views."""
        if self.contrastive == "simcse":
            return simcse_loss(h1, h2, self.temperature)
        return swav_loss(h1, h2, self.prototypes, self.temperature)

    def score_pairs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """:meth:`RewardModel.score_pairs` plus, in training, ``β ×`` the contrastive term of each pair (the mean of
        its two samples' terms) in ``losses`` and the detached batch mean in ``contrastive``."""
        out = super().score_pairs(batch)
        if not self.training:
            return out
        second, _ = self.features_and_rewards(batch)
        per_sample = self.contrastive_loss(self.representations(out["features"]), self.representations(second))
        first_half, second_half = per_sample.chunk(2)
        out["losses"] = out["losses"] + self.beta * 0.5 * (first_half + second_half)
        out["contrastive"] = per_sample.detach().mean()
        return out

    def stats(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stats = super().stats(out)
        if "contrastive" in out:
            stats["contrastive_loss"] = out["contrastive"]
        return stats
