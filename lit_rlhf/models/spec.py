"""Model specs: one string names a model; a few options say how to load it.

Names:
  * a Hugging Face hub id or a local folder (``from_pretrained``);
  * a packaged asset needing no hub: ``lit-rlhf:tiny-llama``, ``lit-rlhf:smollm2-135m``,
    ``lit-rlhf:minilm-l6`` (see :mod:`lit_rlhf.models.assets`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Union

import torch

ASSET_PREFIX = "lit-rlhf:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraSpec:
    """LoRA adapter options (peft ``LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Union[str, list[str]] = "all-linear"


@dataclass
class ModelSpec:
    """How to load a model.

    Args:
        name: hub id, local folder, or ``lit-rlhf:<asset>``.
        dtype: weights dtype (``float32`` | ``bfloat16`` | ``float16``); on CPU keep ``float32``.
        attn_implementation: e.g. ``eager`` or ``sdpa``; ``None`` = transformers' default.
        gradient_checkpointing: trade compute for activation memory.
        lora: wrap the model in a peft LoRA adapter (needs the ``peft`` extra).
        quantization: load the base weights in ``4bit`` (NF4) or ``8bit`` (needs the ``bnb`` extra).
        config: overrides applied to the model config (e.g. ``{"hidden_size": 64}`` for tiny models,
            ``{"hidden_dropout_prob": 0.0}``).
        revision: hub revision.
        trust_remote_code: only if you trust the repository.
    """

    name: str = "lit-rlhf:tiny-llama"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None
    quantization: Literal["4bit", "8bit"] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)

    @classmethod
    def of(cls, value: "str | ModelSpec | dict[str, Any]") -> "ModelSpec":
        """Normalise a name, a dict or a spec into a spec."""
        if isinstance(value, ModelSpec):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"a model is a name, a dict or a ModelSpec, got {type(value).__name__}")

    @property
    def is_asset(self) -> bool:
        return self.name.startswith(ASSET_PREFIX)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain-python form (safe for ``weights_only`` checkpoints and YAML)."""
        return asdict(self)


ModelLike = Union[str, ModelSpec]
