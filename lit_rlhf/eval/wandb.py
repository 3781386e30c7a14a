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
    All arguments are those of :class:`lightning.pytorch.loggers.WandbLogger`.
    """

    def __init__(self, *args: Any, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = not wandb_online_possible()
        kwargs.setdefault("save_dir", "runs")
        os.makedirs(kwargs["save_dir"], exist_ok=True)
        super().__init__(*args, offline=offline, **kwargs)
