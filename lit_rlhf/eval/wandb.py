"""Weights & Biases logging that never blocks a machine without an account or network."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any

from lightning.pytorch.loggers import WandbLogger

WANDB_HOST = "api.wandb.ai"


def wandb_online_possible(timeout: float = 2.0) -> bool:
    """True when an API key is configured and the W&B host answers (checked only if a key exists)."""
    if os.environ.get("WANDB_MODE", "").lower() in {"offline", "disabled", "dryrun"}:
        return False
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc().authenticators(WANDB_HOST) is not None
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            has_key = False
    if not has_key:
        return False
    try:
        socket.create_connection((WANDB_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


class AutoWandbLogger(WandbLogger):
    """``WandbLogger`` that switches to offline mode when there is no API key or no network.

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with ``wandb sync``.
    The other arguments are those of :class:`lightning.pytorch.loggers.WandbLogger`.

    Args:
        save_dir: the run folder (W&B files, and the checkpoints under ``<project>/<run id>/checkpoints``).
            ``None``: ``lit-rlhf fit`` sets it to ``trainer.default_root_dir``, so that one setting moves the whole
            run; built in Python, ``runs``.
        offline: ``None`` = offline when there is no API key or no network.
    """

    def __init__(self, *args: Any, save_dir: str | None = None, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = not wandb_online_possible()
        save_dir = "runs" if save_dir is None else save_dir
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(*args, save_dir=save_dir, offline=offline, **kwargs)


def continue_wandb_run(logger: WandbLogger, run_id: str) -> bool:
    """Point ``logger`` at the existing W&B run ``run_id`` (``resume="allow"``), so that a resumed or extended fit
    logs into the run it continues (offline, each part is an ``offline-run-*-<run_id>`` folder of that run id).

    Must be called before the logger starts its run. A logger given an explicit ``id``/``version`` keeps it.

    Returns:
        Whether the logger now continues ``run_id``.
    """
    if logger._experiment is not None:
        raise RuntimeError(f"the W&B run {logger._experiment.id} has already started; cannot continue run {run_id}")
    if logger._id is not None:
        return logger._id == run_id
    # WandbLogger keeps the run id of wandb.init in two places (no public setter)
    logger._id = run_id
    logger._wandb_init.update(id=run_id, resume="allow")
    return True


def finish_wandb_runs(trainer: Any) -> None:
    """End the W&B runs of ``trainer``'s loggers: a process that fits several runs in turn (``rounds`` stages,
    ``strength`` members) gives each its own W&B run, where the next logger would otherwise join the live one (and
    its checkpoints its folder)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
