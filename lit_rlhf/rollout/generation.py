"""Batched sampling with the KV cache; stops as soon as every sequence has ended.

The default decoder is a lean loop over the model's own forward (:func:`decode`: one prefill per distinct prompt,
finished rows dropped from the batch); ``model.generate`` serves what the loop does not cover (:func:`loop_refusal`).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lit_rlhf.data.collate import pad
from lit_rlhf.models import ModelLike, load_model, load_tokenizer
from lit_rlhf.models.kv_cache import cache_argument, cache_refusal, new_cache, repeat_rows, select_rows
from lit_rlhf.models.logprobs import hf_model
from lit_rlhf.models.sharding import sharded_across_ranks

logger = logging.getLogger(__name__)


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


#: model families whose decode loop (:func:`decode`) is tested token for token against ``model.generate``
LOOP_MODEL_TYPES = frozenset({"llama", "qwen2", "gpt2"})
#: generation-config fields :func:`decode` follows; any other non-default field makes ``generate`` use HF's
_HANDLED_CONFIG = frozenset({
    "max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k", "top_p",
    "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "_from_model_config",
    "transformers_version"})
_NEUTRAL_CONFIG = {"use_cache": (True, None), "output_attentions": (False, None),
                   "output_hidden_states": (False, None), "num_beams": (1, None), "num_return_sequences": (1, None)}
_logged_fallbacks: set[str] = set()


def _hf_kwargs(tokenizer: Any, sampling: SamplingConfig) -> dict[str, Any]:
    """``model.generate`` keyword arguments for ``sampling``."""
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
    return kwargs


def _effective_config(model: nn.Module, kwargs: dict[str, Any]) -> Any:
    """The generation config ``model.generate(**kwargs)`` would use (the model's, updated with ``kwargs``)."""
    config = copy.deepcopy(model.generation_config)
    config.update(**{k: v for k, v in kwargs.items() if k != "tokenizer"})
    return config


def loop_refusal(model: nn.Module, tokenizer: Any, sampling: SamplingConfig) -> str | None:
    """Why :func:`decode` cannot reproduce ``model.generate`` for this model and these settings; ``None`` if it can.

    The loop handles decoder-only models of :data:`LOOP_MODEL_TYPES` with a full-attention ``DynamicCache``, greedy
    or sampled decoding with temperature / top-k / top-p, EOS and ``min_new_tokens`` / ``min_length``; stop strings,
    sliding-window or hybrid caches (e.g. Gemma-2), encoder-decoders, prompt-learning adapters and any other
    generation-config setting (repetition penalty, bad words, ...) go to ``model.generate``. A LoRA-type peft
    wrapper is decoded through its base model (:func:`~lit_rlhf.models.logprobs.hf_model`), whose layers carry
    the adapters: an adapter that is active, or disabled by ``disable_adapter()``, acts as under the wrapper's own
    ``generate``.
    """
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return "a prompt-learning adapter (virtual tokens live in the peft wrapper)"
    model = hf_model(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if sampling.stop_strings:
        return "stop strings"
    if not isinstance(model, PreTrainedModel):
        return f"{type(model).__name__} is not a transformers PreTrainedModel (e.g. a peft wrapper)"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if model_type not in LOOP_MODEL_TYPES:
        return f"model type {model_type!r} not among the tested families {sorted(LOOP_MODEL_TYPES)}"
    if cache_argument(model) is None or "position_ids" not in inspect.signature(model.forward).parameters:
        return "forward takes no cache or position_ids"
    if tokenizer.pad_token_id is None:
        return "no pad token"
    reason = cache_refusal(new_cache(model))
    if reason is not None:
        return reason
    if getattr(model, "generation_config", None) is None:
        return "no generation config"
    for key, value in _effective_config(model, _hf_kwargs(tokenizer, sampling)).to_diff_dict().items():
        if key not in _HANDLED_CONFIG and value not in _NEUTRAL_CONFIG.get(key, (None,)):
            return f"generation config sets {key}={value!r}"
    return None


def _all_ranks_done(done: bool, device: torch.device) -> bool:
    """Whether every rank's decoding has ended (one all-reduce)."""
    import torch.distributed as dist

    flag = torch.tensor(0.0 if done else 1.0, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag == 0)


def _sample_next(scores: torch.Tensor, warpers: list[Any] | None) -> torch.Tensor:
    """One token per row from the processed scores: sampled (``warpers`` given) or greedy.

    Sampling draws one uniform per row and inverts the cumulative distribution of ``softmax(scores)`` (the
    distribution ``torch.multinomial`` samples, at a tenth of its cost on CPU); a token of probability 0 is never
    drawn.
    """
    if warpers is None:
        return scores.argmax(-1)
    for warper in warpers:
        scores = warper(None, scores)
    cdf = scores.softmax(-1).cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, device=scores.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total: a token of positive mass
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def decode(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer: Any, sampling: SamplingConfig
) -> torch.Tensor:
    """``model.generate``'s output without its per-step machinery: each distinct prompt is encoded once, finished
    rows leave the batch.

    Consecutive identical rows (the ``G`` samples of a prompt in a group method) share one prefill, whose cache
    rows are then repeated; after each step the rows that produced EOS are dropped from the cache and the batch, so
    the remaining steps compute only live rows. With a model sharded across ranks (FSDP, ZeRO-3) every rank runs
    forwards until all ranks have ended, as ``model.generate`` does with ``synced_gpus``. Greedy decoding gives
    ``generate``'s tokens; sampling draws from the same distribution (temperature, then top-k, then top-p, with
    ``transformers``' own warpers; EOS blocked before ``min_new_tokens`` / ``min_length``), with a different use of
    the random stream. Only where :func:`loop_refusal` is ``None``.

    Args:
        model: a causal LM in eval mode.
        input_ids: ``(B, P)`` left-padded prompts.
        attention_mask: ``(B, P)`` 1 on real tokens.
        tokenizer: gives the pad and EOS ids.
        sampling: decoding settings.
    Returns:
        ``(B, P + N)`` sequences; ``N`` = steps until every row ended or ``max_new_tokens``; pad after each EOS.
    """
    B, P = input_ids.shape
    N, device = sampling.max_new_tokens, input_ids.device
    pad_id, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = _effective_config(model, _hf_kwargs(tokenizer, sampling))
    min_new = max(config.min_new_tokens or 0, (config.min_length or 0) - P) if eos is not None else 0
    warpers = None
    if config.do_sample:
        warpers = []
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    out = torch.full((B, N), pad_id, dtype=input_ids.dtype, device=device)
    if B == 0 or N == 0:
        return torch.cat([input_ids, out[:, :0]], 1)

    # prefill: one row per run of identical prompts
    same = (input_ids[1:] == input_ids[:-1]).all(-1) & (attention_mask[1:] == attention_mask[:-1]).all(-1)
    first = torch.cat([torch.ones(1, dtype=torch.bool, device=device), ~same])
    starts = first.nonzero().squeeze(-1)
    counts = torch.diff(torch.cat([starts, torch.tensor([B], device=device)]))
    padded = not bool(attention_mask.all())  # like generate: no mask at all without padding
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache, name = new_cache(model), cache_argument(model)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    logits = model(input_ids=input_ids[starts], attention_mask=attention_mask[starts] if padded else None,
                   position_ids=positions[starts], use_cache=True, **{name: cache}, **extra).logits[:, -1]
    if len(starts) < B:
        repeat_rows(cache, counts.cpu())
        logits = logits.repeat_interleave(counts, dim=0)
    mask = torch.cat([attention_mask, attention_mask.new_ones(B, N)], 1) if padded else None
    position = positions[:, -1]
    live = torch.arange(B, device=device)  # the original row of each decode row
    synced = sharded_across_ranks(model)
    steps, idle = 0, False  # idle: every row of this rank has ended; forwards go on only to keep ranks in step
    for t in range(N):
        if not idle:
            scores = logits.to(copy=True, dtype=torch.float32)
            if t < min_new:
                scores[:, eos] = -math.inf
            token = _sample_next(scores, warpers)
            out[live, t] = token
            steps = t + 1
        if t == N - 1:
            break
        if not idle and eos is not None:
            ended = token == eos
            if bool(ended.any()):
                keep = (~ended).nonzero().squeeze(-1)
                if len(keep) == 0:
                    idle = True  # the batch stays as it is for the forwards other ranks may still need
                else:
                    live, token, position = live[keep], token[keep], position[keep]
                    mask = mask[keep] if mask is not None else None
                    select_rows(cache, keep)
        if _all_ranks_done(idle, device) if synced else idle:
            break
        position = position + 1
        logits = model(input_ids=token[:, None], attention_mask=mask[:, :P + t + 1] if padded else None,
                       position_ids=position[:, None], use_cache=True, **{name: cache}, **extra).logits[:, -1]
    return torch.cat([input_ids, out[:, :steps]], 1)


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: Any, prompt_ids: list[list[int]], sampling: SamplingConfig, decoder: str = "auto"
) -> tuple[list[str], torch.Tensor, int]:
    """Sample one completion per prompt.

    Args:
        model: a causal LM (``transformers`` ``generate`` API).
        tokenizer: its tokenizer (pad/eos ids, decoding, stop strings).
        prompt_ids: token ids per prompt (unpadded); they are left-padded here. Rows with the same prompt next to
            each other (a group's samples) are encoded once.
        sampling: decoding settings.
        decoder: ``"auto"`` (:func:`decode` where :func:`loop_refusal` allows it, else ``model.generate``; the
            reason is logged once), ``"loop"`` (:func:`decode`, an error where refused) or ``"hf"``
            (``model.generate``).
    Returns:
        ``(texts, sequences (B, P+N), prompt_width P)``: decoded completions (special tokens and
        stop strings removed) and the raw left-padded sequences.
    """
    if decoder not in ("auto", "loop", "hf"):
        raise ValueError(f"generate: decoder must be 'auto', 'loop' or 'hf', got {decoder!r}")
    device = next(model.parameters()).device
    input_ids = pad(prompt_ids, tokenizer.pad_token_id, "left").to(device)
    attention_mask = pad([[1] * len(p) for p in prompt_ids], 0, "left").to(device)
    reason = None if decoder == "hf" else loop_refusal(model, tokenizer, sampling)
    if decoder == "loop" and reason is not None:
        raise ValueError(f"generate: the decode loop cannot serve this call: {reason}")
    if decoder == "auto" and reason is not None and reason not in _logged_fallbacks:
        _logged_fallbacks.add(reason)
        logger.info("generate: using model.generate (%s)", reason)
    was_training = model.training
    model.eval()
    try:
        if decoder != "hf" and reason is None:
            sequences = decode(hf_model(model), input_ids, attention_mask, tokenizer, sampling)
        else:
            sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                       **_hf_kwargs(tokenizer, sampling))
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
