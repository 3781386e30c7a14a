"""Run records: what a ``lit-rlhf fit`` run was, where it lives, and how it ends and goes on.

* :class:`RunRecord` writes the full CLI config into the run's own folder (never over another run's file) and
  logs it, with the package versions, as the logger's hyperparameters (the W&B run config);
* :class:`FinalCheckpoint` makes every fit end with a ``last.ckpt``, also when no checkpoint was due;
* :func:`continue_from_checkpoint` makes a resumed or extended fit go on in the checkpoint's W&B run, and up to a
  larger ``max_steps`` than the one it finished with.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_rlhf.eval.wandb import continue_wandb_run

#: distributions whose versions every run records (``python`` is added)
PACKAGES = ("lit-rlhf", "torch", "lightning", "transformers", "peft", "wandb")
#: top-level checkpoint entry with the run's identity (see :meth:`FinalCheckpoint.on_save_checkpoint`)
RUN_KEY = "lit_rlhf_run"


def package_versions() -> dict[str, str]:
    """Versions of Python and of :data:`PACKAGES` (``"not installed"`` for a missing one)."""
    import lit_rlhf

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = "not installed"
    versions["lit_rlhf"] = lit_rlhf.__version__  # the imported package, which may not be the installed one
    return versions


def run_dir(trainer: Trainer) -> Path:
    """The run's own folder: ``<save_dir>/<name>/<version>`` of the first logger (for W&B
    ``<save_dir>/<project>/<run id>``, the folder of Lightning's ``checkpoints/``), or ``default_root_dir``
    when there is no logger. Call it on global rank 0 (other ranks' W&B loggers have no run id)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version)


def unused_path(path: Path) -> Path:
    """``path`` if no file is there, else the first free ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ..."""
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


class RunRecord(SaveConfigCallback):
    """The CLI's config callback: every fit records itself.

    * the full config (model, data, trainer, seed, ...) goes to ``config.yaml`` in :func:`run_dir` (next to
      ``checkpoints/``); a later fit in the same folder (a resumed or extended run) writes ``config-2.yaml``,
      ``config-3.yaml``, ..., so no run's record is overwritten;
    * the same config plus ``versions`` (:func:`package_versions`) is logged to every logger with
      ``log_hyperparams`` (for W&B: the run config, offline runs included).

    Arguments are those of :class:`lightning.pytorch.cli.SaveConfigCallback` (``overwrite`` is ignored).
    """

    path: Path | None = None  # the config file written by this run

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            if self.save_to_log_dir:
                folder = run_dir(trainer)
                folder.mkdir(parents=True, exist_ok=True)
                self.path = unused_path(folder / self.config_filename)
                self.parser.save(self.config, str(self.path), skip_none=False, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Log the config and the package versions as the loggers' hyperparameters."""
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))  # plain data, as in the file
        record = {**config, "versions": package_versions()}
        for logger in trainer.loggers:
            logger.log_hyperparams(record)


class FinalCheckpoint(Checkpoint):
    """Write ``last.ckpt`` (through the trainer's :class:`ModelCheckpoint`, in its folder) when fit ends, unless
    that checkpoint already wrote it at the final step.

    Lightning saves only when a checkpoint is due (``every_n_train_steps``, validation, epoch end), so a run
    shorter than that interval ends without one. The final save happens at the end of the batch that reaches
    ``max_steps`` (the loop state of a mid-epoch checkpoint, so ``fit --ckpt_path last --trainer.max_steps
    <more>`` goes on with the next batch of the same epoch), else at the end of the last epoch, else at the end
    of training. A :class:`Checkpoint` subclass so that Lightning runs it after the ``ModelCheckpoint``
    callbacks; the CLI appends it to every trainer with checkpointing enabled. A fit that trained no step saves
    nothing. ``ModelCheckpoint`` saves nothing else at the step of the final save (it has "already saved" there):
    a validation at that very step is not followed by a top-k checkpoint; ``last.ckpt`` holds the final weights.

    It also records the run's identity in every checkpoint (``checkpoint["lit_rlhf_run"]``: the W&B run id).
    """

    def __init__(self) -> None:
        self._saved_step = -1  # nothing to save at the step this fit started from (0, or the resumed step)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._saved_step = trainer.global_step
        resumed = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        for cb in trainer.checkpoint_callbacks:  # resumed from the last checkpoint of a run folder moved since
            if (isinstance(cb, ModelCheckpoint) and resumed is not None and not cb.last_model_path and cb.dirpath
                    and resumed.stem.startswith(cb.CHECKPOINT_NAME_LAST)
                    and resumed.resolve().parent == Path(cb.dirpath).resolve()):
                # Lightning keeps the recorded last.ckpt only while the folder is where it was written; without
                # this it would write last-v1.ckpt beside the one it resumed from
                cb.last_model_path = str(resumed)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        max_epochs = trainer.max_epochs
        if trainer.should_stop or (max_epochs not in (None, -1) and trainer.current_epoch + 1 >= max_epochs):
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        checkpoint = trainer.checkpoint_callback
        step = trainer.global_step
        if (not isinstance(checkpoint, ModelCheckpoint) or step == self._saved_step
                or trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING):
            return
        self._saved_step = step
        # ModelCheckpoint writes last.ckpt with every checkpoint it saves (save_last=True)
        if checkpoint.save_last is True and checkpoint._last_global_step_saved == step:
            return
        save_last, checkpoint.save_last = checkpoint.save_last, True  # a file, not a link to an older one
        try:
            checkpoint._save_last_checkpoint(trainer, checkpoint._monitor_candidates(trainer))
        finally:
            checkpoint.save_last = save_last

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        checkpoint[RUN_KEY] = {"wandb_id": wandb.version if wandb is not None else None}


def checkpoint_run(path: str | Path) -> dict[str, Any]:
    """What a Lightning checkpoint knows of its run, read without loading its tensors into memory.

    Returns:
        ``global_step``; ``epochs``: epochs finished, as Lightning's fit loop counts them on restart (a checkpoint
        taken after the last batch of an epoch counts that epoch); ``wandb_id``: the W&B run id recorded by
        :class:`FinalCheckpoint` (``None`` if none).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    fit_loop = ckpt.get("loops", {}).get("fit_loop", {})
    epoch_progress = fit_loop.get("epoch_progress", {})
    epochs = epoch_progress.get("current", {}).get("processed", ckpt.get("epoch", 0))
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    batch_total, epoch_total = batches.get("total", {}), epoch_progress.get("total", {})
    # Lightning's FitLoop.reset: saved at the end of an epoch's last batch (the batch not yet counted completed,
    # the epoch not yet processed), the epoch counts as processed on restart
    if (batches.get("is_last_batch") and batch_total.get("completed", 0) == batch_total.get("processed", 0) - 1
            and epoch_total.get("processed", 0) == epoch_total.get("started", 0) - 1):
        epochs += 1
    return {"global_step": int(ckpt.get("global_step", 0)), "epochs": int(epochs),
            "wandb_id": (ckpt.get(RUN_KEY) or {}).get("wandb_id")}


def continue_from_checkpoint(trainer: Trainer, ckpt_path: str) -> None:
    """Prepare ``trainer`` to go on from a checkpoint of an earlier fit.

    * Its W&B loggers log into the checkpoint's W&B run (same id, ``resume="allow"``; same run folder, so new
      checkpoints land next to the old ones).
    * A larger ``max_steps`` extends a finished run: if the checkpoint has already finished ``max_epochs``
      epochs but not ``max_steps`` steps, the epoch bound is lifted (with a warning); Lightning would otherwise
      stop at once ("max_epochs reached") and train nothing.
    * A checkpoint that has nothing left to train under these bounds is reported (the fit then ends at once).
    """
    run = checkpoint_run(ckpt_path)
    if run["wandb_id"] is not None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and continue_wandb_run(logger, run["wandb_id"]):
                rank_zero_info(f"continuing W&B run {run['wandb_id']} of {ckpt_path}")
    step, epochs, max_steps, max_epochs = run["global_step"], run["epochs"], trainer.max_steps, trainer.max_epochs
    epochs_done = max_epochs not in (None, -1) and epochs >= max_epochs
    if max_steps != -1 and step < max_steps and epochs_done:
        rank_zero_warn(f"{ckpt_path} has finished max_epochs={max_epochs} epochs at step {step}; training on to "
                       f"max_steps={max_steps} (the epoch bound is lifted)")
        trainer.fit_loop.max_epochs = -1
    elif (max_steps != -1 and step >= max_steps) or (max_steps == -1 and epochs_done):
        rank_zero_warn(f"{ckpt_path} is already at step {step}, epoch {epochs}: nothing to train under max_steps="
                       f"{max_steps}, max_epochs={max_epochs}; pass a larger --trainer.max_steps (or "
                       "--trainer.max_epochs) to extend the run")
