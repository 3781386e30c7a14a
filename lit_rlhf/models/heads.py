"""Heads on a Hugging Face backbone: scalar (reward/value), sequence classifier, token classifier.

Pooled heads read at the last token that is attended and is not the pad token, the rule of Hugging
Face's ``*ForSequenceClassification`` (rightmost token ``!= config.pad_token_id``). Sequence-head modules
pad with EOS (``load_tokenizer(..., pad_with_eos=True)``), so the EOS that lit_rlhf appends to a
completion is never the token read, and an exported head (:func:`export_head`) gives the same score for
``tok(prompt + completion)`` — with or without an EOS of the user's, one text or a left/right-padded batch.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lit_rlhf.models.loading import hidden_size, load_model, load_tokenizer
from lit_rlhf.models.logprobs import PrefixPlan, gather_last, shared_hidden_states
from lit_rlhf.models.spec import ModelLike

Pooling = Literal["last", "mean", "none"]


def read_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """``(B, T)`` positions a last-token head may read: attended and, if ``pad_token_id`` is given, not that id.

    A row whose attended tokens are all ``pad_token_id`` keeps its attention mask (its last token is read).
    """
    if pad_token_id is None:
        return attention_mask
    keep = attention_mask.bool() & (input_ids != pad_token_id)
    return torch.where(keep.any(-1, keepdim=True), keep, attention_mask.bool()).to(attention_mask.dtype)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: Pooling) -> torch.Tensor:
    """``(B, T, H)`` -> ``(B, H)`` at the last position of ``attention_mask`` or the masked mean; ``none``
    keeps ``(B, T, H)``."""
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

    Args:
        backbone: a Hugging Face base model (hidden states).
        num_outputs: head width.
        pooling: ``last`` (see :func:`read_mask`), ``mean`` over attended tokens, or ``none`` (every token).
        squeeze: drop a width-1 last dimension.
        zero_init: start the head at zero.
        bias: give the head a bias (Hugging Face's decoder ``score`` layers have none).
        pad_token_id: ``last`` pooling skips trailing tokens with this id, as HF's ``*ForSequenceClassification``
            does with ``config.pad_token_id`` (``None``: the last attended token).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_outputs: int = 1,
        pooling: Pooling = "last",
        squeeze: bool = False,
        zero_init: bool = False,
        bias: bool = True,
        pad_token_id: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling, self.squeeze, self.pad_token_id = pooling, squeeze, pad_token_id
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

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Pooled backbone features ``(B, H)`` (or ``(B, T, H)``); ``kwargs`` go to the backbone (``position_ids``);
        ``plan``: a prompt-once layout of the batch (:func:`~lit_rlhf.models.logprobs.shared_prefix_plan` or
        :func:`~lit_rlhf.models.logprobs.prefix_cache_plan`), whose rows' common prompts are encoded once."""
        # no KV cache while scoring (decoders would build one for nothing)
        extra = {"use_cache": False} if getattr(self.backbone.config, "use_cache", None) is not None else {}
        if plan is not None:
            hidden = shared_hidden_states(self.backbone, input_ids, attention_mask, None, plan, **extra, **kwargs)
        else:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra, **kwargs)
            hidden = out.last_hidden_state
        if self.pooling == "last":
            attention_mask = read_mask(input_ids, attention_mask, self.pad_token_id)
        return pool(hidden, attention_mask, self.pooling)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None, **kwargs: Any
    ) -> torch.Tensor:
        feats = self.features(input_ids, attention_mask, plan, **kwargs)
        out = self.head(feats.to(self.head.weight.dtype)).float()
        return out.squeeze(-1) if self.squeeze else out

    def meta(self) -> dict[str, Any]:
        """The head's shape and reading (``HeadModel(backbone, **meta)`` rebuilds it on the same backbone)."""
        return {"num_outputs": self.head.out_features, "pooling": self.pooling, "squeeze": self.squeeze,
                "bias": self.head.bias is not None, "pad_token_id": self.pad_token_id}

    def save_pretrained(self, folder: str | Path) -> None:
        """Backbone as a HF folder + ``head.pt`` + ``head.json`` (:meth:`meta`)."""
        folder = Path(folder)
        self.backbone.save_pretrained(folder)
        torch.save(self.head.state_dict(), folder / "head.pt")
        (folder / "head.json").write_text(json.dumps(self.meta()))


def _head(model: ModelLike, tokenizer, **kwargs) -> HeadModel:
    if tokenizer is None:
        tokenizer = load_tokenizer(model, pad_with_eos=kwargs.get("pooling") == "last")
    return HeadModel(load_model(model, kind="backbone", tokenizer=tokenizer), pad_token_id=tokenizer.pad_token_id,
                     **kwargs)


def scalar_head_model(model: ModelLike, tokenizer=None, pooling: Pooling = "last") -> HeadModel:
    """Reward/value model: one scalar per sequence, ``(B,)`` (no bias, like HF's ``score`` layer).

    ``last`` pooling skips trailing ``tokenizer.pad_token_id`` tokens (HF's rule; pass a tokenizer loaded
    with ``pad_with_eos=True`` so that an appended EOS is skipped too, as the lit_rlhf modules do).
    """
    return _head(model, tokenizer, num_outputs=1, pooling=pooling, squeeze=True, bias=False)


def sequence_classifier(
    model: ModelLike, num_classes: int, tokenizer=None, pooling: Pooling = "last", zero_init: bool = False,
    bias: bool | None = None,
) -> HeadModel:
    """Classifier over pooled features, ``(B, C)``.

    ``bias=None``: none for ``last`` pooling (like HF's decoder ``score`` layers, so the classifier exports
    to ``AutoModelForSequenceClassification`` exactly; also the weak-to-strong reference code's head), a
    bias for ``mean`` pooling.
    """
    bias = pooling != "last" if bias is None else bias
    return _head(model, tokenizer, num_outputs=num_classes, pooling=pooling, zero_init=zero_init, bias=bias)


def token_classifier(model: ModelLike, num_classes: int, tokenizer=None) -> HeadModel:
    """Per-token classifier, ``(B, T, C)``."""
    return _head(model, tokenizer, num_outputs=num_classes, pooling="none")


def _hf_head_model(model: HeadModel, backbone: nn.Module) -> nn.Module | None:
    """``model`` as a Hugging Face ``AutoModelFor{Sequence,Token}Classification`` with its exact weights, or ``None``
    where the architecture's class would compute something else (checked on a probe input)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = {"last": AutoModelForSequenceClassification, "none": AutoModelForTokenClassification}.get(model.pooling)
    if auto is None:
        return None
    config = copy.deepcopy(backbone.config)
    config.num_labels, config.pad_token_id = model.head.out_features, model.pad_token_id
    config.id2label = {i: f"LABEL_{i}" for i in range(config.num_labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    try:
        hf = auto.from_config(config, dtype=next(backbone.parameters()).dtype)
        getattr(hf, hf.base_model_prefix).load_state_dict(backbone.state_dict())
    except (ValueError, KeyError, RuntimeError):  # no such class for this architecture, or other weights
        return None
    heads = [m for name, m in hf.named_children() if name != hf.base_model_prefix and isinstance(m, nn.Linear)]
    if len(heads) != 1 or heads[0].weight.shape != model.head.weight.shape:
        return None
    if (heads[0].bias is None) != (model.head.bias is None):
        return None
    hf.to(next(backbone.parameters()).device).eval()
    return hf if _same_outputs(model, hf, heads[0]) else None


def _same_outputs(model: HeadModel, hf: nn.Module, hf_head: nn.Linear) -> bool:
    """Whether ``hf`` computes ``model`` on a probe input, both heads set to the same random weights first (a
    zero head would hide a backbone that differs), then ``hf``'s head set to ``model``'s."""
    device = next(hf.parameters()).device
    vocab = int(getattr(hf.config, "vocab_size", 0) or 2)
    probe = torch.arange(7, device=device).unsqueeze(0) % max(1, vocab - 1) + 1
    if model.pad_token_id is not None:  # the probe must have no padding in it
        probe = probe.masked_fill(probe == model.pad_token_id, 1 if model.pad_token_id != 1 else 2)
    mask = torch.ones_like(probe)
    saved = {k: v.clone() for k, v in model.head.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    random_head = {k: torch.randn(v.shape, generator=generator).to(v) for k, v in saved.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.head.load_state_dict(random_head)
            hf_head.load_state_dict(random_head)
            ours, theirs = model(probe, mask).float(), hf(input_ids=probe, attention_mask=mask).logits.float()
    finally:
        model.head.load_state_dict(saved)
        hf_head.load_state_dict(saved)
        model.train(was_training)
    tol = 1e-4 if next(hf.parameters()).dtype == torch.float32 else 5e-2
    return bool(theirs.reshape(ours.shape).sub(ours).abs().max() <= tol * (1 + ours.abs().max()))


def export_head(model: HeadModel, tokenizer: Any, folder: str | Path, merge_lora: bool = True) -> Path:
    """Write ``model`` and ``tokenizer`` as a folder that ``transformers`` loads on its own where it can.

    * ``last`` pooling -> ``AutoModelForSequenceClassification`` (``num_labels`` = head width,
      ``config.pad_token_id`` = the head's pad id), ``none`` -> ``AutoModelForTokenClassification``, when the
      architecture's class applies one linear layer to the backbone's hidden states (Llama, Mistral, Qwen2,
      Gemma-2, GPT-2, ...); the result is checked against ``model`` on a probe input.
    * Otherwise (``mean`` pooling, encoders whose HF head reads a pooler, a head with a bias where HF's has
      none): the backbone as a Hugging Face folder + ``head.pt`` + ``head.json``
      (:func:`lit_rlhf.models.checkpoint.load_head_model` loads both kinds).

    Usage of a sequence-classification export: ``tok(prompt + completion)`` (the tokenizer adds its BOS),
    ``AutoModelForSequenceClassification`` -> logits, one text or a padded batch, gives lit_rlhf's score,
    with or without an EOS appended. It can still differ if the tokenizer merges tokens across the
    prompt/completion boundary (lit_rlhf tokenizes the two apart), if the text is tokenized without the
    tokenizer's BOS (TRL's GRPO passes ``add_special_tokens=False``), or for chat data rendered differently
    from ``tokenizer.apply_chat_template``.
    """
    folder = Path(folder)
    backbone = model.backbone
    if merge_lora and hasattr(backbone, "merge_and_unload"):
        backbone = copy.deepcopy(backbone).merge_and_unload()
    hf = _hf_head_model(model, backbone)
    if hf is not None:
        hf.save_pretrained(folder)
    else:
        warnings.warn(
            f"{type(backbone).__name__} with {model.pooling!r} pooling has no exactly matching transformers head "
            f"class: {folder} holds the backbone + head.pt (load it with lit_rlhf.rollout.rewards.load_reward_head)",
            stacklevel=2,
        )
        with torch.random.fork_rng(devices=[]):  # the new head's random init leaves the caller's RNG alone
            plain = HeadModel(backbone, model.head.out_features, model.pooling, model.squeeze,
                              bias=model.head.bias is not None, pad_token_id=model.pad_token_id)
        plain.head.load_state_dict(model.head.state_dict())
        plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
