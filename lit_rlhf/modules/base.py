"""Shared plumbing of every method module: optimizer injection, LR schedule, export, hparams, the step template."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import LambdaLR

from lit_rlhf.models import (
    DropoutPolicy,
    HeadModel,
    ModelLike,
    ModelSpec,
    apply_dropout_policy,
    export_head,
    sequence_logps,
    trainable_parameters,
)
from lit_rlhf.models.checkpoint import (  # noqa: F401  (build_policy, resolve_checkpoint: also imported from here)
    CLASS_KEY,
    NETWORK_KEY,
    PROVENANCE_KEY,
    build_policy,
    network_record,
    rebuild_policy,
    resolve_checkpoint,
)
from lit_rlhf.models.reference import ReferenceKind, ReferencePolicy
from lit_rlhf.models.sharding import block_classes, is_sharded, shard_children
from lit_rlhf.modules.rng import TrainingRNG
from lit_rlhf.rollout.generation import SamplingConfig, generate

Schedule = Literal["constant", "linear", "cosine"]
NonFinite = Literal["stop", "skip"]
StepSplit = Literal["train", "val", "test"]


@dataclasses.dataclass
class StepOutput:
    """What a method's :meth:`StepModule.step` gives for one batch.

    Attributes:
        loss: the scalar to minimise (with its graph while training).
        metrics: detached scalars by short name (``loss``, ``accuracy``, ``rewards/chosen``, ...), each a mean over
            the batch; the logged name is :meth:`StepModule.metric_name` of the split and this key.
        batch_size: examples in the batch (pairs for preference data), the weight of the epoch means.
        counts: for a metric that is a mean over part of the batch (e.g. the pairs with a gold label), the number
            of examples it is over, its weight in the epoch (or logging-interval) mean; 0 = none in this batch (give
            a finite value, e.g. 0: it carries no weight).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    batch_size: int
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    def add_subset_means(self, means: dict[str, tuple[torch.Tensor, int]]) -> StepOutput:
        """Add metrics over part of the batch, ``{key: (mean, number of examples it is over)}``; returns ``self``."""
        for key, (value, count) in means.items():
            self.metrics[key], self.counts[key] = value, count
        return self


def schedule_factor(step: int, total: int, warmup: int, schedule: Schedule, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then constant / linear / cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


class LitRLHFModule(L.LightningModule):
    """Base class of all lit_rlhf methods.

    Args:
        optimizer: optimizer factory over the trainable parameters (e.g. ``torch.optim.AdamW`` with
            ``init_args`` in YAML); built in :meth:`configure_optimizers` so it sees sharded parameters.
        warmup: LR warm-up, as a fraction of all steps (< 1) or a number of steps (≥ 1).
        schedule: LR decay after warm-up: ``constant``, ``linear`` or ``cosine``.
        min_lr_ratio: final LR as a fraction of the peak (linear/cosine).
        nonfinite: what a NaN/inf training loss does: ``stop`` the run with a message naming the step, or
            ``skip`` the update (no parameter or optimizer-state change; counted in
            ``skipped_updates`` and warned). Decided over all ranks, so ranks stay in step.

    Class attribute ``dropout``: the method's dropout policy (:mod:`lit_rlhf.models.dropout`), ``"model"``
    (the config's probabilities; the default) or ``"off"`` (DPO and RL); models are loaded in train mode
    whatever their source, so the policy alone decides.
    """

    path_hparams: tuple[str, ...] = ()
    """Hyperparameters that name local files or folders: checkpoints record them as absolute paths."""
    dropout: DropoutPolicy = "model"

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup: float = 0.0,
        schedule: Schedule = "constant",
        min_lr_ratio: float = 0.0,
        nonfinite: NonFinite = "stop",
    ) -> None:
        super().__init__()
        if nonfinite not in get_args(NonFinite):
            raise ValueError(f"nonfinite must be one of {list(get_args(NonFinite))}, got {nonfinite!r}")
        self.optimizer_factory = optimizer
        self.warmup, self.schedule, self.min_lr_ratio = warmup, schedule, min_lr_ratio
        self.nonfinite, self.skipped_updates, self._skip_update = nonfinite, 0, False
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_counts: dict[str, int] = {}  # the weight summed for each key (see log_train)
        self.training_rng = TrainingRNG()
        self.provenance: dict[str, Any] = {}  # where the run started (kept in checkpoints, never read to load them)

    def log_train(
        self, metrics: dict[str, torch.Tensor], batch_size: int, prog_bar: tuple[str, ...] = ("train/loss",),
        counts: dict[str, int] | None = None,
    ) -> None:
        """Log training metrics as their means over the logging interval, once per interval.

        ``self.log`` costs about a millisecond per call on CPU (more than a tiny model's step), so the
        values are summed every step and handed to Lightning only at the steps it writes logs
        (``Trainer(log_every_n_steps=...)``). Each step weighs 1, except a metric with a count (a mean over
        part of the batch, see ``StepOutput.counts``), which weighs its count (0: this step has none of it; a
        metric with no weight over the whole interval is logged as NaN, so every rank logs the same keys).
        """
        counts = counts or {}
        for key, value in metrics.items():
            weight = counts.get(key, 1)
            value = value.detach().float()
            weighted = value * weight if weight else torch.zeros_like(value)
            self._train_sums[key] = self._train_sums.get(key, 0.0) + weighted
            self._train_counts[key] = self._train_counts.get(key, 0) + weight
        connector = getattr(self._trainer, "_logger_connector", None)
        if connector is not None and not connector.should_update_logs:
            return
        means = {key: value / self._train_counts[key] if self._train_counts[key] else value * float("nan")
                 for key, value in self._train_sums.items()}
        self._train_sums, self._train_counts = {}, {}
        shown = {k: v for k, v in means.items() if k in prog_bar}
        # sync_dist: the logged values are means over ranks (one all-reduce per logging step, not per step)
        if shown:
            self.log_dict(shown, prog_bar=True, batch_size=batch_size, sync_dist=True)
        if len(shown) < len(means):
            self.log_dict({k: v for k, v in means.items() if k not in prog_bar}, batch_size=batch_size, sync_dist=True)

    def record_hparams(self, ignore: tuple[str, ...] = ()) -> None:
        """``save_hyperparameters`` with dataclasses turned into plain dicts (``weights_only``-safe)."""
        self.save_hyperparameters(ignore=["optimizer", *ignore], logger=False)
        for key, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value):
                self.hparams[key] = dataclasses.asdict(value)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self)

    def export(self, folder: str | Path, merge_lora: bool = True) -> Path:
        """Write ``self.model`` (a :class:`~lit_rlhf.models.HeadModel`) and ``self.tokenizer`` as a Hugging Face
        folder: ``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification`` where the architecture
        allows it exactly, else backbone + ``head.pt`` (see :func:`~lit_rlhf.models.heads.export_head`)."""
        model = getattr(self, "model", None)
        if not isinstance(model, HeadModel):
            raise NotImplementedError(f"{type(self).__name__} does not define export()")
        return export_head(model, self.tokenizer, folder, merge_lora)

    def configure_model(self) -> None:
        """Shard every model this method holds under FSDP2 / FSDP; nothing to do otherwise.

        * ``ModelParallelStrategy`` (FSDP2, CPU or GPU): each child model is ``fully_shard``-ed per
          transformer block, then as a whole, over the data-parallel mesh (tensor parallelism is refused).
        * ``FSDPStrategy`` (GPU): unless an ``auto_wrap_policy`` is given, one FSDP unit per transformer
          block, and ``use_orig_params=True`` (frozen and trainable parameters — LoRA, a frozen reference —
          share units).
        """
        from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, ModelParallelStrategy):
            mesh = self.device_mesh
            if mesh["tensor_parallel"].size() > 1:
                raise ValueError(
                    f"{type(self).__name__}: tensor parallelism is not supported; use "
                    f"ModelParallelStrategy(data_parallel_size=<devices>, tensor_parallel_size=1) for FSDP2"
                )
            if any(is_sharded(p) for p in self.parameters()):
                return  # configure_model runs again on re-entry (e.g. validate after fit)
            self._refuse_quantized("FSDP2")
            shard_children(self, mesh["data_parallel"])
        elif isinstance(strategy, FSDPStrategy):
            self._refuse_quantized("FSDP")
            if strategy.kwargs.get("auto_wrap_policy") is None:
                from torch.distributed.fsdp.wrap import ModuleWrapPolicy

                strategy.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(block_classes(self))
            strategy.kwargs.setdefault("use_orig_params", True)

    def _refuse_quantized(self, strategy: str) -> None:
        spec = getattr(self, "spec", None)
        if getattr(spec, "quantization", None) is not None:
            raise ValueError(
                f"{type(self).__name__}: {spec.quantization} (bitsandbytes) weights cannot be sharded by {strategy} "
                f"here; use strategy: ddp (one quantized copy per process) or full-precision weights"
            )

    def param_groups(self) -> list[Any]:
        """What the optimizer factory receives: the trainable parameters (a module may return param groups)."""
        return self.trainable_parameters()

    def configure_optimizers(self) -> Any:
        spec = getattr(self, "spec", None)
        if getattr(spec, "quantization", None) is not None and spec.lora is None:
            raise ValueError(
                f"{type(self).__name__}: {spec.quantization} weights cannot be trained (only the layers left in full "
                f"precision would be); add a LoRA adapter (model.lora, i.e. QLoRA)"
            )
        params = self.param_groups()
        if not params:
            raise ValueError(f"{type(self).__name__} has no trainable parameters")
        optimizer = self.optimizer_factory(params)
        self._refuse_sharded_8bit_optimizer(optimizer)
        if self.warmup == 0 and self.schedule == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.warmup * total) if self.warmup < 1 else int(self.warmup)
        scheduler = LambdaLR(
            optimizer, lambda step: schedule_factor(step, total, warmup, self.schedule, self.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _refuse_sharded_8bit_optimizer(self, optimizer: Any) -> None:
        """bitsandbytes' 8-bit optimizers keep per-block quantised states that do not work on DTensor/flat FSDP
        shards."""
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        sharded = isinstance(strategy, (FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy))
        if sharded and type(optimizer).__module__.startswith("bitsandbytes"):
            raise ValueError(
                f"{type(self).__name__}: the bitsandbytes optimizer {type(optimizer).__name__} does not work with "
                f"{type(strategy).__name__} (sharded parameters); use torch.optim.AdamW, or strategy: ddp"
            )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.training_rng.enter(self.device)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.training_rng.exit(self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Subclasses with their own state call this first (``super().on_load_checkpoint``)."""
        self.training_rng.load_state_dict(checkpoint.get("training_rng"))
        self.provenance = dict(checkpoint.get(PROVENANCE_KEY) or self.provenance)

    def network_spec(self) -> ModelSpec | None:
        """The spec whose plain build has the structure of ``self.model`` (``None``: the module has no such spec)."""
        spec, model = getattr(self, "spec", None), getattr(self, "model", None)
        return spec if isinstance(spec, ModelSpec) and isinstance(model, torch.nn.Module) else None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-contained: record the class and the network, and point the ``model``
        hyperparameter at that network (``init_from`` then reads nothing), so ``load_from_checkpoint`` rebuilds
        the module from this file alone; where the run started is kept under :data:`PROVENANCE_KEY`."""
        checkpoint["training_rng"] = self.training_rng.state_dict(self.device)
        checkpoint[CLASS_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.provenance:
            checkpoint[PROVENANCE_KEY] = self.provenance
        hparams = checkpoint.get("hyper_parameters", {})
        for key in self.path_hparams:
            if isinstance(hparams.get(key), str):
                hparams[key] = str(Path(hparams[key]).expanduser().absolute())
        spec = self.network_spec()
        if spec is None:
            return
        record = checkpoint[NETWORK_KEY] = network_record(spec, self.model)
        if "model" in hparams and ModelSpec.of(hparams["model"]) != ModelSpec.of(dict(record["spec"])):
            hparams["model"] = record["spec"]
        if hparams.get("init_from") is not None:
            hparams["init_from"] = None  # the weights it gave are in the state dict

    def check_finite(self, loss: torch.Tensor, name: str = "loss") -> bool:
        """``True`` if ``loss`` is finite on every rank; otherwise stop (raise) or mark this update skipped.

        Raises:
            FloatingPointError: with ``nonfinite="stop"``, on every rank at once (none is left waiting).
        """
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return True
        where = (
            f"{type(self).__name__}: non-finite {name} ({loss.detach().flatten()[:4].tolist()}) "
            f"at step {self.global_step}"
        )
        if self.nonfinite == "stop":
            raise FloatingPointError(
                f"{where}; lower the learning rate, check the data, use 32-true precision, or set nonfinite: skip"
            )
        self._skip_update = self.automatic_optimization  # manual steps act on the returned flag
        self.skipped_updates += 1
        rank_zero_warn(f"{where}: update skipped ({self.skipped_updates} so far)")
        return False

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Drop the gradients of a skipped update: optimizers leave parameters without ``.grad`` untouched."""
        if self._skip_update:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            self._skip_update = False

    def manual_step(self, loss: torch.Tensor, optimizer: Any, gradient_clip_val: float | None = None) -> bool:
        """One step under manual optimisation: finite check, backward, optional norm clipping, optimizer step.

        Returns:
            whether the step was taken (``False``: a non-finite loss skipped it, see ``nonfinite``).
        """
        optimizer.zero_grad()
        if not self.check_finite(loss):
            return False
        self.manual_backward(loss)
        if gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, "norm")
        optimizer.step()
        return True


class StepModule(LitRLHFModule):
    """A method trained by automatic optimisation: it defines :meth:`step`; this class makes Lightning's
    ``training_step``, ``validation_step`` and ``test_step`` of it, with the finite check and the logging in one place.

    Training metrics go through :meth:`~LitRLHFModule.log_train` (means over the logging interval); validation and
    test metrics are logged per batch and averaged over the epoch by Lightning (weighted by the batch size, or by
    ``StepOutput.counts``), synchronised over ranks. Logged names are :meth:`metric_name` (``<split>/<key>``).
    Methods with their own loop (manual optimisation) override ``training_step`` and may still use :meth:`step` and
    :meth:`log_step`. (These hooks are not on :class:`LitRLHFModule`: a ``validation_step`` there would switch on
    Lightning's validation loop for methods that have none, e.g. PPO.)
    """

    progress_bar_metrics: ClassVar[tuple[str, ...]] = ("loss",)  # keys of StepOutput.metrics shown in the bar

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Loss and metrics of one batch of ``split`` (``train``, ``val`` or ``test``)."""
        raise NotImplementedError(f"{type(self).__name__} must define step(batch, split) -> StepOutput")

    def metric_name(self, split: StepSplit, key: str) -> str:
        """The logged name of metric ``key`` in ``split``: ``<split>/<key>``."""
        return f"{split}/{key}"

    def log_step(self, out: StepOutput, split: StepSplit) -> None:
        """Log ``out.metrics`` under :meth:`metric_name` (see the class docstring for how each split averages)."""
        shown = tuple(self.metric_name(split, key) for key in self.progress_bar_metrics)
        if split == "train":
            self.log_train({self.metric_name(split, k): v for k, v in out.metrics.items()}, out.batch_size, shown,
                           {self.metric_name(split, k): n for k, n in out.counts.items()})
            return
        for key, value in out.metrics.items():
            name = self.metric_name(split, key)
            size = out.counts.get(key, out.batch_size)
            self.log(name, value, prog_bar=name in shown, batch_size=size, sync_dist=True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.step(batch, "train")
        self.check_finite(out.loss)
        self.log_step(out, "train")
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log_step(self.step(batch, "val"), "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log_step(self.step(batch, "test"), "test")


class PolicyModule(LitRLHFModule):
    """A method that trains a causal LM (``self.model``) with its tokenizer (``self.tokenizer``).

    Args:
        model: model name or :class:`~lit_rlhf.models.ModelSpec`.
        sampling: decoding settings for evaluation samples.
        init_from: start from the policy weights of a lit_rlhf checkpoint (e.g. an SFT run's ``.ckpt``, or its run
            folder: the newest ``.ckpt``; see :func:`~lit_rlhf.models.checkpoint.rebuild_policy`). Read once, when
            the module is built: its checkpoints hold the network without it. An exported Hugging Face folder is
            simply ``model: <folder>``.
    """

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        init_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = ModelSpec.of(model)
        self.sampling = SamplingConfig.of(sampling)
        built = rebuild_policy(self.spec, init_from)
        self.tokenizer, self.model, self.architecture = built.tokenizer, built.model, built.architecture
        apply_dropout_policy(self.model, self.dropout)
        if built.init_from is not None:
            self.provenance = {"init_from": built.init_from, "model": self.spec.to_dict()}
        self.reference_policy = ReferencePolicy(self.model, "none")
        self.ref_model: torch.nn.Module | None = None

    def set_reference(self, kind: ReferenceKind) -> None:
        """Keep a reference policy (:class:`~lit_rlhf.models.reference.ReferencePolicy`) of the policy as it is now;
        a frozen copy is registered as ``self.ref_model``."""
        self.reference_policy = ReferencePolicy(self.model, kind)
        self.ref_model = self.reference_policy.copy

    def train(self, mode: bool = True) -> PolicyModule:
        super().train(mode)
        if self.ref_model is not None:
            self.ref_model.eval()  # a frozen copy stays in eval mode
        return self

    def on_fit_start(self) -> None:
        """Lightning warns, once at the start of training, of every module in eval mode; the frozen copy is
        meant to be, so the warning is silenced while it names exactly the copy's modules (any other module in eval
        mode still warns). The filter goes again at ``on_train_start``, right after the check."""
        frozen = [] if self.ref_model is None else list(self.ref_model.modules())
        in_eval = [m for m in self.modules() if not m.training]
        if frozen and len(in_eval) == len(frozen):
            warnings.filterwarnings(
                "ignore", message=re.escape(f"Found {len(frozen)} module(s) in eval mode at the start of training."))
            self._frozen_copy_filter = warnings.filters[0]

    def on_train_start(self) -> None:
        entry = self.__dict__.pop("_frozen_copy_filter", None)
        if entry in warnings.filters:
            warnings.filters.remove(entry)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.reference_policy.fill_state(checkpoint["state_dict"])

    def network_spec(self) -> ModelSpec:
        """The root model this policy was built from, with its own LoRA adapter."""
        return self.architecture

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)``."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def policy_logps(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs ``(B,)`` under the policy, and completion lengths ``(B,)``."""
        return self.sequence_logps(self.model, input_ids, attention_mask, completion_mask)

    def reference_logps(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Summed completion log-probs ``(B,)`` under the method's reference policy; ``None`` = it has none.

        Used by :class:`~lit_rlhf.eval.GoldEval` for ``gold/kl``.
        """
        return self.reference_policy.logps(self.model, lambda net, *args: self.sequence_logps(net, *args)[0],
                                           input_ids, attention_mask, completion_mask)

    def sequence_logps(
        self, net: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and lengths ``(B,)`` of ``net`` (the policy or its reference)."""
        return sequence_logps(net, input_ids, attention_mask, completion_mask)

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingConfig | None = None) -> list[str]:
        """Decoded completions for token-id prompts."""
        return generate(self.model, self.tokenizer, prompt_ids, sampling or self.sampling)[0]

    def export(self, folder: str | Path, merge_lora: bool = True) -> Path:
        """Write a Hugging Face folder (model + tokenizer) that ``AutoModelForCausalLM`` loads."""
        folder = Path(folder)
        model = self.model
        if merge_lora and hasattr(model, "merge_and_unload"):
            import copy

            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder
