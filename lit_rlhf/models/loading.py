"""Build tokenizers and models from a :class:`ModelSpec`."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lit_rlhf.models.assets import ASSET_FOLDERS, ASSETS, tiny_llama_config
from lit_rlhf.models.spec import ModelLike, ModelSpec
from lit_rlhf.models.tokenizer import DEFAULT_CHAT_TEMPLATE, build_byte_tokenizer

Kind = Literal["causal_lm", "backbone"]


def _source(spec: ModelSpec) -> str:
    """Folder or hub id to ``from_pretrained`` from (``None`` for code-built assets)."""
    if not spec.is_asset:
        return spec.name
    asset = spec.name.split(":", 1)[1]
    if asset not in ASSETS:
        raise ValueError(f"unknown packaged model '{spec.name}'; known: {[f'lit-rlhf:{a}' for a in ASSETS]}")
    return str(ASSET_FOLDERS[asset]()) if asset in ASSET_FOLDERS else ""


def load_tokenizer(model: ModelLike, pad_with_eos: bool = False):
    """Tokenizer with a pad token and a chat template (the default one if the model has none).

    Args:
        model: name or :class:`ModelSpec`.
        pad_with_eos: pad with the EOS token even if the tokenizer has a pad token of its own (tokenizers
            without one always pad with EOS, else UNK). Sequence heads use it: a reward is read at the last
            token that is not padding, as Hugging Face's ``*ForSequenceClassification`` reads it, so with
            ``pad = EOS`` an EOS appended to a completion is never the token read and
            ``tok(prompt + completion)`` scores the same with or without it (see
            :class:`~lit_rlhf.models.HeadModel`).
    """
    spec = ModelSpec.of(model)
    if spec.name == "lit-rlhf:tiny-llama":
        tok = build_byte_tokenizer()
    else:
        from transformers import AutoTokenizer

        source = _source(spec)
        try:
            tok = AutoTokenizer.from_pretrained(source, revision=spec.revision,
                                                trust_remote_code=spec.trust_remote_code)
        except OSError as err:
            if Path(source).expanduser().exists():
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            folder = Path(source).expanduser().absolute()
            raise FileNotFoundError(f"model {spec.name!r}: no such local folder ({folder}), and the Hugging Face hub "
                                    f"did not provide it: {first}") from err
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        if tok.chat_template is None:
            tok.chat_template = DEFAULT_CHAT_TEMPLATE
    if pad_with_eos and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _quantization_config(spec: ModelSpec):
    if spec.quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError(f"quantization='{spec.quantization}' needs bitsandbytes: pip install 'lit-rlhf[bnb]'")
    from transformers import BitsAndBytesConfig

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=spec.torch_dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def apply_lora(model: nn.Module, spec: ModelSpec, task_type: str) -> nn.Module:
    """Wrap ``model`` in a fresh peft LoRA adapter configured by ``spec.lora`` (``task_type``: peft's name)."""
    if importlib.util.find_spec("peft") is None:
        raise ModuleNotFoundError("LoRA needs peft: pip install 'lit-rlhf[peft]'")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if spec.quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    lora = spec.lora
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type=task_type,
    )
    return get_peft_model(model, config)


def load_model(model: ModelLike, kind: Kind = "causal_lm", tokenizer: Any = None) -> nn.Module:
    """Load a Hugging Face model for ``spec``, in train mode whatever the source.

    ``from_pretrained`` returns models in eval mode and ``from_config`` in train mode; both come back in
    train mode here, so dropout is the config's until a method applies its policy
    (:mod:`lit_rlhf.models.dropout`).

    Args:
        model: name or :class:`ModelSpec`.
        kind: ``causal_lm`` (with LM head) or ``backbone`` (hidden states only, for heads).
        tokenizer: needed for code-built assets (their vocab comes from it); loaded if omitted.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    spec = ModelSpec.of(model)
    auto = AutoModelForCausalLM if kind == "causal_lm" else AutoModel
    source = _source(spec)
    if spec.name == "lit-rlhf:tiny-llama":
        if spec.quantization is not None:
            raise ValueError(
                f"quantization='{spec.quantization}' loads saved weights through bitsandbytes; lit-rlhf:tiny-llama is "
                f"built from code: save it first (model.save_pretrained(folder)) and name the folder"
            )
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec)
        config = tiny_llama_config(tokenizer, spec.config)
        if spec.attn_implementation:
            config._attn_implementation = spec.attn_implementation
        net = auto.from_config(config, dtype=spec.torch_dtype)
    else:
        config = AutoConfig.from_pretrained(source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        for key, value in spec.config.items():
            setattr(config, key, value)
        if spec.attn_implementation:
            config._attn_implementation = spec.attn_implementation
        net = auto.from_pretrained(
            source, config=config, dtype=spec.torch_dtype, revision=spec.revision,
            trust_remote_code=spec.trust_remote_code, quantization_config=_quantization_config(spec),
        )
    if kind == "backbone" and isinstance(getattr(net, "pooler", None), nn.Module):
        net.pooler = None  # heads pool the hidden states themselves; an unused pooler also breaks DDP's reducer
    if spec.gradient_checkpointing:
        if hasattr(net, "activation_checkpointing_enable"):  # transformers >= 5.x
            net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        net.config.use_cache = False
    if spec.lora is not None:
        net = apply_lora(net, spec, "CAUSAL_LM" if kind == "causal_lm" else "FEATURE_EXTRACTION")
    return net.train()


def hidden_size(net: nn.Module) -> int:
    config = net.config
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


def trainable_parameters(net: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]
