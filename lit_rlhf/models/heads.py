"""Heads on a Hugging Face backbone: scalar (reward/value), sequence classifier, token classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lit_rlhf.models.loading import hidden_size, load_model
from lit_rlhf.models.logprobs import gather_last
from lit_rlhf.models.spec import ModelLike

Pooling = Literal["last", "mean", "none"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """``(B, T, H)`` -> ``(B, H)`` at the last real token or the masked mean; ``none`` keeps ``(B, T, H)``."""
    if how == "last":
        return gather_last(hidden, attention_mask)
    if how == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "none":
        return hidden
    raise ValueError(f"unknown pooling '{how}'")


class HeadModel(nn.Module):
    """Backbone + linear head.

    Output: ``(B, C)`` for pooled heads, ``(B, T, C)`` for ``pooling="none"``; a scalar head
    (``num_outputs=1``, ``squeeze=True``) returns ``(B,)``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_outputs: int = 1,
        pooling: Pooling = "last",
        squeeze: bool = False,
        zero_init: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling, self.squeeze = pooling, squeeze
        self.head = nn.Linear(hidden_size(backbone), num_outputs, bias=bias)
        if zero_init:
            nn.init.zeros_(self.head.weight)
        else:
            nn.init.normal_(self.head.weight, std=1.0 / (hidden_size(backbone) + 1) ** 0.5)
        if bias:
            nn.init.zeros_(self.head.bias)

    @property
    def config(self):
        return self.backbone.config

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Pooled backbone features ``(B, H)`` (or ``(B, T, H)``); ``kwargs`` go to the backbone (``position_ids``)."""
        # no KV cache while scoring (decoders would build one for nothing)
        extra = {"use_cache": False} if getattr(self.backbone.config, "use_cache", None) is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra, **kwargs)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        feats = self.features(input_ids, attention_mask, **kwargs)
        out = self.head(feats.to(self.head.weight.dtype)).float()
        return out.squeeze(-1) if self.squeeze else out

    def meta(self) -> dict[str, Any]:
        """The head's shape and reading (``HeadModel(backbone, **meta)`` rebuilds it on the same backbone)."""
        return {"num_outputs": self.head.out_features, "pooling": self.pooling, "squeeze": self.squeeze,
                "bias": self.head.bias is not None}

    def save_pretrained(self, folder: str | Path) -> None:
        """Backbone as a HF folder + ``head.pt`` + ``head.json`` (:meth:`meta`)."""
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        torch.save(self.head.state_dict(), folder / "head.pt")
        (folder / "head.json").write_text(json.dumps(self.meta()))


def _head(model: ModelLike, tokenizer, **kwargs) -> HeadModel:
    return HeadModel(load_model(model, kind="backbone", tokenizer=tokenizer), **kwargs)


def scalar_head_model(model: ModelLike, tokenizer=None, pooling: Pooling = "last") -> HeadModel:
    """Reward/value model: one scalar per sequence, ``(B,)`` (no bias, like HF's ``score`` layer)."""
    return _head(model, tokenizer, num_outputs=1, pooling=pooling, squeeze=True, bias=False)


def sequence_classifier(
    model: ModelLike, num_classes: int, tokenizer=None, pooling: Pooling = "last", zero_init: bool = False
) -> HeadModel:
    """Classifier over pooled features, ``(B, C)``."""
    return _head(model, tokenizer, num_outputs=num_classes, pooling=pooling, zero_init=zero_init)


def token_classifier(model: ModelLike, num_classes: int, tokenizer=None) -> HeadModel:
    """Per-token classifier, ``(B, T, C)``."""
    return _head(model, tokenizer, num_outputs=num_classes, pooling="none")
