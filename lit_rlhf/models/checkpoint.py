"""Checkpoints: find them, and rebuild networks from them without the CLI or the method modules.

A lit_rlhf ``.ckpt`` is self-contained: besides the weights it records the network it holds
(:data:`NETWORK_KEY`: the root model spec the network was built from, with the module's own LoRA, and the
head of a head model), so a policy, a reward head or a classifier is rebuilt from the file alone, from any
working directory, after the run it started from is gone. Where a path is asked for, a run folder works
too: its newest ``.ckpt`` (runs keep them in ``<default_root_dir>/lit-rlhf/<run id>/checkpoints/``).

* :func:`resolve_checkpoint` — a ``.ckpt`` file or a run folder → the file;
* :func:`build_policy` / :func:`rebuild_policy` — tokenizer + causal LM from a spec, optionally started from
  a checkpoint's policy; :func:`load_policy` — from a ``.ckpt``, a run folder or a model name / HF folder;
* :func:`load_head_model` / :func:`load_reward_head` — a :class:`~lit_rlhf.models.heads.HeadModel` (a
  classifier, or a scalar reward model) from a ``.ckpt``, a run folder or an exported folder;
* :func:`load_module` — the whole method module that wrote a checkpoint (its class is recorded in the file).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_rlhf.models.heads import HeadModel
from lit_rlhf.models.loading import apply_lora, load_model, load_tokenizer
from lit_rlhf.models.spec import ModelLike, ModelSpec

CLASS_KEY = "lit_rlhf_class"
"""Checkpoint entry: ``module.Class`` of the method module that wrote it."""
NETWORK_KEY = "lit_rlhf_network"
"""Checkpoint entry: ``{"spec": <ModelSpec dict>, "head": <HeadModel.meta() or None>}`` of ``state_dict["model.*"]``."""
PROVENANCE_KEY = "lit_rlhf_provenance"
"""Checkpoint entry: where the run started (``init_from`` as an absolute file, the ``model`` it was given)."""
EXPORT_SETTINGS = "lit_rlhf_settings.json"
"""File in an exported folder: the settings a scorer needs besides the weights (a PRM's ``step_separator``)."""


def resolve_checkpoint(path: str | Path) -> str:
    """The checkpoint file ``path`` names, as an absolute path.

    Args:
        path: a ``.ckpt`` file, or a run folder: a ``default_root_dir`` (checkpoints under
            ``lit-rlhf/<run id>/checkpoints/``), a run id folder, or a ``checkpoints/`` folder; its newest
            ``.ckpt`` file (by modification time) is taken.
    Raises:
        FileNotFoundError: no such file or folder, or no ``.ckpt`` file under the folder.
        ValueError: a sharded checkpoint (a folder named ``*.ckpt``), which cannot be loaded as one file.
    """
    found = Path(path).expanduser().absolute()
    if found.is_dir() and found.suffix == ".ckpt":
        raise ValueError(f"{path}: a sharded checkpoint folder; write one file (FSDP state_dict_type: full, "
                         f"ModelParallelStrategy save_distributed_checkpoint: false) or consolidate it first")
    if found.is_dir():
        ckpts = [f for f in found.rglob("*.ckpt") if f.is_file() and not any(p.suffix == ".ckpt" for p in f.parents)]
        if not ckpts:
            raise FileNotFoundError(f"{path}: no .ckpt file under this folder (a run keeps its checkpoints in "
                                    f"<default_root_dir>/lit-rlhf/<run id>/checkpoints/)")
        return str(max(ckpts, key=lambda f: (f.stat().st_mtime, f.name)))
    if not found.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run folder")
    return str(found)


def resolve_init_from(init_from: str | Path, model: str) -> str:
    """:func:`resolve_checkpoint` for a module's ``init_from``; a missing one is an error that says what to do."""
    try:
        return resolve_checkpoint(init_from)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"init_from: {err}; train that run first, give another checkpoint, or set init_from "
                                f"to null to start from the model itself ({model})") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a ``.ckpt`` file or run folder, on the CPU (``weights_only``)."""
    return torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)


def portable_spec(model: ModelLike | dict[str, Any]) -> ModelSpec:
    """``model`` as a spec whose name means the same from any working directory (a relative local folder
    becomes absolute; hub ids and packaged assets are kept)."""
    spec = ModelSpec.of(model)
    folder = Path(spec.name).expanduser()
    if not spec.is_asset and not folder.is_absolute() and folder.is_dir():
        return dataclasses.replace(spec, name=str(folder.absolute()))
    return spec


def network_record(spec: ModelSpec, model: nn.Module) -> dict[str, Any]:
    """The :data:`NETWORK_KEY` entry of a module whose network ``model`` (``state_dict["model.*"]``) a plain
    build of ``spec`` reproduces (a causal LM, or a :class:`HeadModel` on ``spec``'s backbone)."""
    head = model.meta() if isinstance(model, HeadModel) else None
    return {"spec": portable_spec(spec).to_dict(), "head": head}


def build_network(record: dict[str, Any]) -> tuple[Any, nn.Module]:
    """Tokenizer and freshly initialised network of a :data:`NETWORK_KEY` entry (no weights loaded)."""
    spec = ModelSpec.of(dict(record["spec"]))
    tokenizer = load_tokenizer(spec)
    if record.get("head") is None:
        return tokenizer, load_model(spec, "causal_lm", tokenizer)
    head = dict(record["head"])
    if head.get("pad_token_id") is not None and head["pad_token_id"] == tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.eos_token  # the module padded with EOS (load_tokenizer(pad_with_eos=True))
    return tokenizer, HeadModel(load_model(spec, "backbone", tokenizer), zero_init=True, **head)


def _model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def _load_weights(net: nn.Module, ckpt: dict[str, Any], where: str) -> None:
    missing, unexpected = net.load_state_dict(_model_state(ckpt), strict=False)
    if missing or unexpected:
        raise ValueError(f"{where}: the checkpoint's model weights do not fit the network it records "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


@dataclass
class BuiltPolicy:
    """A policy network and how to rebuild it.

    Attributes:
        tokenizer: its tokenizer.
        model: the causal LM.
        architecture: the spec whose plain build (:func:`~lit_rlhf.models.load_model`) has this network's
            structure: the root model it was built from, with the LoRA adapter it carries.
        init_from: the checkpoint file it started from (absolute), or ``None``.
    """

    tokenizer: Any
    model: nn.Module
    architecture: ModelSpec
    init_from: str | None = None


def rebuild_policy(spec: ModelLike, init_from: str | Path | None = None) -> BuiltPolicy:
    """Tokenizer and causal LM of a policy: from ``spec``, or from the policy weights of a lit_rlhf checkpoint.

    With ``init_from`` (a ``.ckpt`` file or a run folder: its newest ``.ckpt``), the network is rebuilt as the
    checkpoint's module built it (from its recorded network, or for older files from its ``model`` and
    ``init_from`` hyperparameters, recursively), its weights are loaded, a LoRA adapter it trained is merged,
    and ``spec.lora`` (if any) wraps the result in a fresh adapter; ``spec``'s other fields are not used.
    """
    spec = ModelSpec.of(spec)
    if init_from is None:
        tokenizer = load_tokenizer(spec)
        return BuiltPolicy(tokenizer, load_model(spec, "causal_lm", tokenizer), portable_spec(spec))
    path = resolve_init_from(init_from, spec.name)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters") or {}
    record = ckpt.get(NETWORK_KEY)
    if "state_dict" not in ckpt or (record is None and hparams.get("model") is None) or (
            record is not None and record.get("head") is not None):
        raise ValueError(f"init_from={init_from}: not a checkpoint of a lit_rlhf policy module (SFT, DPO, ...)")
    if record is not None:
        saved = ModelSpec.of(dict(record["spec"]))
        tokenizer, net = build_network(record)
    else:  # written before checkpoints recorded their network: rebuild the chain it started from
        chain = rebuild_policy(ModelSpec.of(hparams["model"]), hparams.get("init_from"))
        tokenizer, net, saved = chain.tokenizer, chain.model, chain.architecture
    _load_weights(net, ckpt, f"init_from={init_from}")
    if hasattr(net, "merge_and_unload"):
        net = net.merge_and_unload()
    if spec.lora is not None:
        net = apply_lora(net, spec, "CAUSAL_LM")
    return BuiltPolicy(tokenizer, net, dataclasses.replace(saved, lora=spec.lora), path)


def build_policy(spec: ModelLike, init_from: str | Path | None = None) -> tuple[Any, nn.Module]:
    """Tokenizer and causal LM of a policy (see :func:`rebuild_policy`)."""
    built = rebuild_policy(spec, init_from)
    return built.tokenizer, built.model


def _is_checkpoint(path: str | Path) -> bool:
    """A ``.ckpt`` file or a run folder (a folder that is not a saved model: no ``config.json``)."""
    path = Path(path).expanduser()
    return path.suffix == ".ckpt" or (path.is_dir() and not (path / "config.json").exists())


def load_policy(policy: str | Path) -> tuple[Any, nn.Module]:
    """Tokenizer and causal LM from a lit_rlhf checkpoint (``.ckpt`` or run folder; LoRA merged), or from a
    model name / exported Hugging Face folder."""
    if _is_checkpoint(policy):
        return build_policy(ModelSpec(), policy)
    return build_policy(ModelSpec.of(str(policy)))


def load_head_model(path: str | Path) -> tuple[HeadModel, Any]:
    """A head model (reward model, classifier) and its tokenizer.

    Args:
        path: a lit_rlhf checkpoint of a head-model module (``.ckpt`` or run folder), a folder written by
            :meth:`HeadModel.save_pretrained` (``head.json``), or a Hugging Face sequence- or token-classification
            folder whose head is one linear layer (what ``export`` writes for RM, ORM, PRM and W2S students).
    """
    if _is_checkpoint(path):
        file = resolve_checkpoint(path)
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
        record = ckpt.get(NETWORK_KEY)
        if record is None:  # written before checkpoints recorded their network
            module = load_module(file)
            if not isinstance(getattr(module, "model", None), HeadModel):
                raise ValueError(f"{file}: a {type(module).__name__} checkpoint holds no head model")
            return module.model, module.tokenizer
        if record.get("head") is None:
            raise ValueError(f"{file}: a {ckpt.get(CLASS_KEY, 'policy')} checkpoint holds a causal LM, "
                             f"not a head model")
        tokenizer, model = build_network(record)
        _load_weights(model, ckpt, file)
        return model, tokenizer
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint or model folder")
    tokenizer = load_tokenizer(str(path))
    if (path / "head.json").exists():
        from transformers import AutoModel

        meta = json.loads((path / "head.json").read_text())
        model = HeadModel(AutoModel.from_pretrained(path), zero_init=True, **meta)
        model.head.load_state_dict(torch.load(path / "head.pt", map_location="cpu", weights_only=True))
        return model, tokenizer
    return _hf_classifier(path), tokenizer


def _hf_classifier(path: Path) -> HeadModel:
    """A Hugging Face ``*ForSequenceClassification`` / ``*ForTokenClassification`` folder (what ``export`` writes for
    reward models, ORMs, PRMs and weak-to-strong students) as a :class:`HeadModel` with the same outputs: its
    backbone and its one linear layer; sequence classifiers read the last token that is not padding, as HF does."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    architectures = AutoConfig.from_pretrained(path).architectures or []
    if not any(name.endswith(("ForSequenceClassification", "ForTokenClassification")) for name in architectures):
        raise ValueError(f"{path}: config.json names {architectures or 'no architecture'}, not a sequence or token "
                         "classifier; give a reward model's, ORM's or PRM's checkpoint, run folder or export")
    token = any(name.endswith("ForTokenClassification") for name in architectures)
    auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    hf = auto.from_pretrained(path)
    heads = [m for name, m in hf.named_children() if name != hf.base_model_prefix and isinstance(m, torch.nn.Linear)]
    if len(heads) != 1:
        raise ValueError(f"{path}: expected a {auto.__name__[len('AutoModelFor'):]} model whose head is one linear "
                         f"layer on the backbone, found {[type(m).__name__ for m in hf.children()]}")
    width = heads[0].out_features
    model = HeadModel(getattr(hf, hf.base_model_prefix), width, "none" if token else "last",
                      squeeze=width == 1 and not token, bias=heads[0].bias is not None,
                      pad_token_id=hf.config.pad_token_id)
    model.head.load_state_dict(heads[0].state_dict())
    return model


def load_reward_head(path: str | Path) -> tuple[HeadModel, Any]:
    """A scalar reward model as ``(HeadModel (B,) at the last real token, tokenizer)``; ``path`` as in
    :func:`load_head_model`.

    Raises:
        ValueError: the head is not one scalar per sequence (e.g. a classifier's).
    """
    model, tokenizer = load_head_model(path)
    if model.head.out_features != 1 or not model.squeeze or model.pooling == "none":
        raise ValueError(f"{path}: not a scalar reward model (head {model.meta()})")
    return model, tokenizer


def load_module(path: str | Path) -> Any:
    """Rebuild the method module (a ``LightningModule``) that wrote a checkpoint: its class is recorded in the
    file and imported by name, so this layer needs no import of the modules.

    Args:
        path: a ``.ckpt`` file or a run folder (its newest ``.ckpt``).
    """
    file = resolve_checkpoint(path)
    ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    class_path = ckpt.get(CLASS_KEY)
    if class_path is None:
        raise ValueError(f"{file}: not a lit_rlhf checkpoint (no {CLASS_KEY!r} entry)")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load_from_checkpoint(file, map_location="cpu", weights_only=True)
