"""Sharding a module's models for FSDP2 (``ModelParallelStrategy``) and FSDP (``FSDPStrategy``).

Every model a method holds — policy, frozen reference, reward and value models, heads — is sharded the
same way: each transformer block (the classes a Hugging Face model lists in ``_no_split_modules``) is one
FSDP unit, and the model around them is another. Frozen models are sharded like trainable ones and run
under ``no_grad`` where the method uses them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def block_classes(net: nn.Module) -> set[type[nn.Module]]:
    """Classes of the transformer blocks inside ``net`` (from the ``_no_split_modules`` of every HF model in it)."""
    names: set[str] = set()
    for module in net.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(m) for m in net.modules() if type(m).__name__ in names}


def fully_shard_model(net: nn.Module, mesh: Any, **kwargs: Any) -> nn.Module:
    """FSDP2: ``fully_shard`` each block of ``net``, each Hugging Face model inside it, then ``net`` itself.

    Parameters become DTensors on ``mesh``. A Hugging Face model wrapped by ``net`` (the backbone of a
    :class:`~lit_rlhf.models.HeadModel`, the model under a peft adapter) is its own unit, so calling it
    directly gathers its weights; ``HeadModel.features`` is registered as a forward method for the same reason.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    blocks = tuple(block_classes(net))
    for module in list(net.modules()):
        if blocks and isinstance(module, blocks) and module is not net:
            fully_shard(module, mesh=mesh, **kwargs)
    for name, module in list(net.named_modules()):
        if name and hasattr(module, "_no_split_modules") and hasattr(module, "config") and _self_contained(net, name):
            fully_shard(module, mesh=mesh, **kwargs)
    fully_shard(net, mesh=mesh, **kwargs)
    if callable(getattr(net, "features", None)):
        register_fsdp_forward_method(net, "features")
    return net


def _self_contained(net: nn.Module, prefix: str) -> bool:
    """Whether the submodule ``prefix`` shares no parameter with the rest of ``net`` (tied embeddings of a
    causal LM live in two submodules: those must stay in one FSDP unit)."""
    inside, outside = set(), set()
    for name, p in net.named_parameters(remove_duplicate=False):
        (inside if name.startswith(prefix + ".") else outside).add(id(p))
    return not inside & outside


def shard_children(owner: nn.Module, mesh: Any, **kwargs: Any) -> list[str]:
    """FSDP2 over every direct child of ``owner`` that holds parameters; returns the sharded children's names.

    Raises:
        ValueError: if ``owner`` has trainable parameters of its own (they would not be sharded, and
            their gradients would not be reduced across ranks).
    """
    own = [name for name, p in owner.named_parameters(recurse=False) if p.requires_grad]
    if own:
        raise ValueError(
            f"{type(owner).__name__} keeps trainable parameters outside its sub-models ({own}); FSDP2 shards "
            f"sub-models only. Use strategy: ddp for this method"
        )
    sharded = []
    for name, child in owner.named_children():
        if any(True for _ in child.parameters()):
            fully_shard_model(child, mesh, **kwargs)
            sharded.append(name)
    return sharded


def is_sharded(param: torch.Tensor) -> bool:
    """Whether ``param`` is a DTensor shard (FSDP2)."""
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


def sharded_across_ranks(model: nn.Module) -> bool:
    """Whether ``model``'s forward is a collective (FSDP / FSDP2 / ZeRO-3 over several ranks): every rank must then
    run the same number of forward passes (``model.generate``'s ``synced_gpus``), in the same layout."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return False
    from torch.distributed.tensor import DTensor
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return (is_deepspeed_zero3_enabled() or any(isinstance(p, DTensor) for p in model.parameters())
            or any(name.endswith("_fsdp_wrapped_module") or "_fsdp_wrapped_module." in name
                   for name, _ in model.named_modules()))
