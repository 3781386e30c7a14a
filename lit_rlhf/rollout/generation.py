"""Batched sampling with the KV cache; stops as soon as every sequence has ended."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lit_rlhf.data.collate import pad
from lit_rlhf.models import ModelLike, load_model, load_tokenizer


@dataclass
class SamplingConfig:
    """How to sample completions.

    Args:
        max_new_tokens: generation budget per completion.
        temperature: 0 = greedy decoding.
        top_p: nucleus sampling threshold (1.0 = off).
        top_k: keep the k most likely tokens (0 = off).
        stop_strings: extra strings that end a completion (EOS always does).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] | None = None

    @classmethod
    def of(cls, value: "SamplingConfig | dict[str, Any] | None") -> "SamplingConfig":
        if value is None:
            return cls()
        return value if isinstance(value, SamplingConfig) else cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: Any, prompt_ids: list[list[int]], sampling: SamplingConfig
) -> tuple[list[str], torch.Tensor, int]:
    """Sample one completion per prompt.

    Args:
        model: a causal LM (``transformers`` ``generate`` API).
        tokenizer: its tokenizer (pad/eos ids, decoding, stop strings).
        prompt_ids: token ids per prompt (unpadded); they are left-padded here.
        sampling: decoding settings.
    Returns:
        ``(texts, sequences (B, P+N), prompt_width P)``: decoded completions (special tokens and
        stop strings removed) and the raw left-padded sequences.
    """
    device = next(model.parameters()).device
    input_ids = pad(prompt_ids, tokenizer.pad_token_id, "left").to(device)
    attention_mask = pad([[1] * len(p) for p in prompt_ids], 0, "left").to(device)
    greedy = sampling.temperature <= 0
    kwargs: dict[str, Any] = dict(
        max_new_tokens=sampling.max_new_tokens, do_sample=not greedy, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, use_cache=True,
    )
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if sampling.stop_strings:
        kwargs.update(stop_strings=sampling.stop_strings, tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    try:
        sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        model.train(was_training)
    width = input_ids.shape[1]
    texts = tokenizer.batch_decode(sequences[:, width:], skip_special_tokens=True)
    for stop in sampling.stop_strings or []:
        texts = [t.split(stop)[0] for t in texts]
    return texts, sequences, width


def generate_texts(
    model: nn.Module, tokenizer: Any, prompt_ids: list[list[int]], sampling: SamplingConfig, batch_size: int = 64
) -> list[str]:
    """:func:`generate` over ``prompt_ids`` in batches of ``batch_size``; the decoded completions, in order."""
    texts: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        texts += generate(model, tokenizer, prompt_ids[start:start + batch_size], sampling)[0]
    return texts


def response_mask(responses: torch.Tensor, eos_token_id: int, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which generated tokens are real, and which responses ended.

    A response runs up to and including its first EOS; when ``pad != eos``, trailing pads (rows that
    stopped on a stop string while others went on) are cut too.

    Args:
        responses: ``(B, R)`` generated ids (the part of ``generate``'s sequences after the prompt).
        eos_token_id: end-of-sequence id.
        pad_token_id: padding id.
    Returns:
        ``(mask (B, R) long, ended (B,) bool)``; ``ended`` = the response has an EOS or stopped before
        the budget (a stop string); responses cut by ``max_new_tokens`` did not end.
    """
    is_eos = responses == eos_token_id
    before_eos = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # up to and including the first EOS
    mask = before_eos
    if pad_token_id != eos_token_id:
        real = responses != pad_token_id
        positions = torch.arange(responses.shape[1], device=responses.device)
        last_real = torch.where(real, positions, -1).max(-1).values
        mask = mask & (positions <= last_real.unsqueeze(-1))
    lengths = mask.long().sum(-1)
    ended = is_eos.any(-1) | (lengths < responses.shape[1])
    return mask.long(), ended


class ChatReplier:
    """A policy as a replier: renders each dialogue with the chat template (generation prompt) and
    samples one assistant reply per dialogue.

    Args:
        model: a causal LM, or a model name / spec (loaded with its tokenizer at the first call).
        tokenizer: its tokenizer (with a chat template); ``None`` with a name or spec.
        sampling: decoding settings (default greedy, 64 new tokens).
        batch_size: dialogues per ``generate`` call.
    """

    def __init__(self, model: "nn.Module | ModelLike", tokenizer: Any = None,
                 sampling: "SamplingConfig | dict[str, Any] | None" = None, batch_size: int = 64) -> None:
        if isinstance(model, nn.Module) and tokenizer is None:
            raise ValueError("ChatReplier: a model given as a network needs its tokenizer")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.sampling = SamplingConfig.of(sampling)

    def __call__(self, dialogues: list[list[dict[str, str]]]) -> list[str]:
        from lit_rlhf.data.tokenize import Encoder

        if not isinstance(self.model, nn.Module):
            self.tokenizer = self.tokenizer or load_tokenizer(self.model)
            self.model = load_model(self.model, tokenizer=self.tokenizer)
        encoder = Encoder(self.tokenizer)
        ids = [encoder.prompt_ids(d) for d in dialogues]
        return generate_texts(self.model, self.tokenizer, ids, self.sampling, self.batch_size)
