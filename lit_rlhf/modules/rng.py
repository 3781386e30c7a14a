"""A random stream of the training steps, kept apart from other draws and saved in checkpoints."""

from __future__ import annotations

import random
from typing import Any

import torch


def capture_rng(device: torch.device) -> dict[str, Any]:
    """The global generators' states: torch CPU, ``device``'s CUDA generator, Python ``random``."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate()}


def apply_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    random.setstate(state["python"])


class TrainingRNG:
    """The global RNG states seen by the training steps (dropout, sampling, ``random.sample``).

    While a training batch runs (:meth:`enter` … :meth:`exit`), the global generators hold this stream;
    between batches they hold everyone else's (DataLoader base seeds, validation and evaluation sampling).
    The stream is checkpointed, so a run resumed from a checkpoint draws exactly what the uninterrupted run
    drew, whatever else consumed random numbers around it. Lightning itself does not restore RNG states.
    """

    def __init__(self) -> None:
        self.saved: dict[str, Any] | None = None  # the stream between batches (None: start from the global state)
        self.outer: dict[str, Any] | None = None  # the global state while a batch runs

    def enter(self, device: torch.device) -> None:
        self.outer = capture_rng(device)
        if self.saved is not None:
            apply_rng(self.saved, device)

    def exit(self, device: torch.device) -> None:
        if self.outer is not None:
            self.saved = capture_rng(device)
            apply_rng(self.outer, device)
            self.outer = None

    def state_dict(self, device: torch.device) -> dict[str, Any] | None:
        """The stream's state now (inside a batch, e.g. saved by ``ModelCheckpoint`` at batch end) or between
        batches."""
        return capture_rng(device) if self.outer is not None else self.saved

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.saved, self.outer = state, None
