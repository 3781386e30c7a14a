"""MetaRM: a reward model that keeps separating responses from a shifted distribution.

Secrets of RLHF II, §3.2, Algorithm 1. Each training step takes a preference batch ``X_t`` from ``D``
and a batch ``X_s`` of ``G`` prompts with ``K`` responses each from the shifted distribution ``S``:

1. meta step (gradient *ascent* on the difference loss)::

       θ' = θ + η ∇_θ J_θ(X_s),   J = mean_g meta_difference_loss(r_θ(X_s).view(G, K))

2. Bradley–Terry loss at θ' and a descent step on θ::

       θ ← θ − α ∇_{θ'} L_{θ'}(X_t)        (first order, the paper's rule)
       θ ← θ − α ∇_θ L_{θ + η ∇J(θ)}(X_t)   (``second_order=True``: through the meta step)

θ' is built with :func:`torch.func.functional_call` over the trainable parameters. In first order,
θ' = θ + (η ∇J).detach(): its Jacobian w.r.t. θ is the identity, so one ``manual_backward`` of the
loss at θ' fills ``θ.grad`` with exactly ∇_{θ'} L — and goes through Lightning's strategy (precision
scaling; under DDP the gradient all-reduce). Second order keeps the graph of ∇J (``create_graph``);
with default SDPA attention on CPU that needs ``attn_implementation="eager"``.

Runs on one device or under DDP; strategies that shard parameters (FSDP, FSDP2, DeepSpeed) are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning.pytorch.utilities import move_data_to_device
from torch import nn
from torch.func import functional_call

from lit_rlhf.losses.meta import meta_difference_loss
from lit_rlhf.modules.base import StepOutput
from lit_rlhf.modules.reward_model import RewardModel

Params = dict[str, torch.Tensor]


class _Call(nn.Module):
    """Runs ``fn`` with ``module`` as a registered child, so ``functional_call`` can swap its parameters."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def call_with_parameters(module: nn.Module, params: Params, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` while ``module``'s named parameters are replaced by ``params``
    (:func:`torch.func.functional_call`; parameters not in ``params`` keep their values)."""
    named = {f"module.{name}": value for name, value in params.items()}
    return functional_call(_Call(module, fn), named, args, kwargs, strict=False)


class MetaRM(RewardModel):
    """:class:`~lit_rlhf.modules.RewardModel` with MetaRM's meta step on shifted-distribution responses.

    Needs a data module with ``shifted_dataloader()`` (:class:`~lit_rlhf.data.shifted.MetaRMDataModule`).
    Uses manual optimisation; validation/test are the reward model's (accuracy at θ).

    Args:
        meta_lr: η, the step size of the gradient ascent on ``J`` (``0`` = plain reward model).
        second_order: differentiate through the meta step (exact; about 2× the cost); default is the
            paper's first-order rule.
        gradient_clip_val: clip gradients (norm or value) before each step. Lightning refuses
            ``Trainer(gradient_clip_val=...)`` under manual optimisation, so it is set here.
        gradient_clip_algorithm: ``norm`` or ``value``.
        *args, **kwargs: :class:`~lit_rlhf.modules.RewardModel` arguments (model, margins, optimizer, ...).
    """

    def __init__(
        self,
        *args: Any,
        meta_lr: float = 1e-5,
        second_order: bool = False,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.meta_lr, self.second_order = meta_lr, second_order
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        self._params: Params | None = None  # parameters that features_and_rewards runs the model with
        self._shifted: Iterator[dict[str, Any]] | None = None

    # -- the model at other parameters --------------------------------------------------------
    def meta_parameters(self) -> Params:
        """The trainable parameters of ``self.model`` by name (θ)."""
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    @contextmanager
    def parameters_as(self, params: Params | None) -> Iterator[None]:
        """Within the block, :meth:`features_and_rewards` (hence :meth:`step`) runs the model at ``params``."""
        previous, self._params = self._params, params
        try:
            yield
        finally:
            self._params = previous

    def features_and_rewards(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._params is None:
            return super().features_and_rewards(batch)
        return call_with_parameters(self.model, self._params, super().features_and_rewards, batch)

    # -- Algorithm 1 --------------------------------------------------------------------------
    def shifted_objective(self, shifted: dict[str, Any], params: Params | None = None) -> torch.Tensor:
        """``J`` (mean over the ``G`` prompts) of a shifted batch of ``G·K`` sequences, at ``params``
        (θ if ``None``)."""
        with self.parameters_as(params):
            rewards = self.features_and_rewards(shifted)[1]
        k = int(shifted["group_size"])
        return meta_difference_loss(rewards.view(-1, k)).mean()

    def meta_step(self, shifted: dict[str, Any]) -> tuple[torch.Tensor, Params]:
        """``(J(θ), θ')`` with ``θ' = θ + η ∇_θ J(θ)``.

        First order: ``θ' = θ + (η∇J).detach()`` (∂θ'/∂θ = I). Second order: ``η∇J`` keeps its graph.
        """
        params = self.meta_parameters()
        j = self.shifted_objective(shifted)
        self.check_finite(j, "meta J")
        grads = torch.autograd.grad(j, list(params.values()), create_graph=self.second_order, allow_unused=True)
        fast = {}
        for (name, p), g in zip(params.items(), grads):
            if g is None:  # a trainable parameter the reward does not depend on
                fast[name] = p
            else:
                step = self.meta_lr * g
                fast[name] = p + (step if self.second_order else step.detach())
        return j.detach(), fast

    def meta_loss(self, batch: dict[str, Any], shifted: dict[str, Any]) -> StepOutput:
        """The reward model's training :meth:`step` of ``batch`` at θ' (its loss, the mean Bradley–Terry loss, is
        what is back-propagated into θ), with the metrics ``meta_J`` (at θ) and ``meta_J_after`` (at θ') added."""
        j_before, fast = self.meta_step(shifted)
        with self.parameters_as(fast):
            out = self.step(batch, "train")
        with torch.no_grad():
            j_after = self.shifted_objective(shifted, {n: p.detach() for n, p in fast.items()})
        out.metrics.update(meta_J=j_before, meta_J_after=j_after)
        return out

    # -- training -----------------------------------------------------------------------------
    def next_shifted_batch(self) -> dict[str, Any]:
        """The next shifted batch from ``trainer.datamodule.shifted_dataloader()`` (iterator cached), on device."""
        if self._shifted is None:
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            loader = getattr(datamodule, "shifted_dataloader", None)
            if loader is None:
                raise ValueError(
                    "MetaRM needs shifted-distribution responses: train it with a data module that has "
                    "shifted_dataloader(), e.g. lit_rlhf.data.shifted.MetaRMDataModule(shifted=...)"
                )
            self._shifted = iter(loader())
        return move_data_to_device(next(self._shifted), self.device)

    def on_fit_start(self) -> None:
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

        strategy = self.trainer.strategy
        if isinstance(strategy, (DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy)):
            raise NotImplementedError(
                f"MetaRM's meta step swaps in θ' with torch.func.functional_call, which needs unsharded "
                f"parameters; {type(strategy).__name__} shards them. Use strategy='ddp' (or a single device)."
            )
        self._shifted = None

    def _reducer_synced(self) -> bool:
        """Whether ``manual_backward`` already averaged the gradients over ranks.

        Under DDP it did: Lightning prepares the DDP reducer before a manual backward, and the backward
        reaches θ's gradient accumulators (θ' is a function of θ), so the reducer's hooks all-reduce.
        """
        from torch.nn.parallel import DistributedDataParallel

        return isinstance(self.trainer.strategy.model, DistributedDataParallel)

    def _sync_gradients(self) -> None:
        """Average the gradients over ranks where no DDP reducer did (other multi-process strategies)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or self._reducer_synced():
            return
        world = dist.get_world_size()
        for p in self.meta_parameters().values():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(world)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        shifted = self.next_shifted_batch()
        out = self.meta_loss(batch, shifted)
        optimizer.zero_grad()
        if self.check_finite(out.loss):
            self.manual_backward(out.loss)
            self._sync_gradients()
            if self.gradient_clip_val:
                self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
            optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.log_step(out, "train")
        return out.loss.detach()
