"""Ground-truth tasks: data generators with a gold reward / grader."""

from __future__ import annotations

from typing import Any

from lit_rlhf.tasks.arithmetic import Arithmetic
from lit_rlhf.tasks.base import Instruction, Task, split_of
from lit_rlhf.tasks.dialogue import Dialogue
from lit_rlhf.tasks.gsm import GSM
from lit_rlhf.tasks.sentiment import Sentiment
from lit_rlhf.tasks.w2s_synthetic import SalientSynthetic

TASKS: dict[str, type[Task]] = {
    "arithmetic": Arithmetic, "dialogue": Dialogue, "gsm": GSM, "sentiment": Sentiment,
    "w2s_synthetic": SalientSynthetic,
}


def get_task(name_or_task: str | Task, **kwargs: Any) -> Task:
    """A task instance from its registered name (``kwargs`` go to its constructor), or the task itself."""
    if isinstance(name_or_task, Task):
        if kwargs:
            raise ValueError(f"got a task instance and constructor arguments {sorted(kwargs)}")
        return name_or_task
    if name_or_task not in TASKS:
        raise ValueError(f"unknown task {name_or_task!r}; expected one of {sorted(TASKS)}")
    return TASKS[name_or_task](**kwargs)


__all__ = [
    "GSM", "TASKS", "Arithmetic", "Dialogue", "Instruction", "SalientSynthetic", "Sentiment", "Task", "get_task",
    "split_of",
]
