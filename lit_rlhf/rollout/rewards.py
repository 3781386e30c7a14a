"""Reward sources for PPO and rejection sampling: ``(prompts, completions) -> Tensor (B,)``.

A reward source is any Python callable with that signature (a task's gold reward, a remote scorer),
or a trained reward model loaded from a ``RewardModel`` checkpoint, run folder or exported folder
(:func:`~lit_rlhf.models.checkpoint.load_reward_head`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lit_rlhf.data.collate import pad
from lit_rlhf.data.tokenize import Encoder
from lit_rlhf.models.checkpoint import load_reward_head
from lit_rlhf.models.heads import HeadModel

RewardFn = Callable[[list[str], list[str]], torch.Tensor]


class ModelReward(torch.nn.Module):
    """A reward model as a reward source: scores ``prompt + completion + EOS`` encoded like RM training data.

    The model reads each reward at the last token that is not padding (:class:`~lit_rlhf.models.HeadModel`,
    Hugging Face's rule), so a ``RewardModel``, its checkpoint and its exported folder give the rewards
    ``AutoModelForSequenceClassification`` gives for ``tok(prompt + completion)``.

    Args:
        model: scalar head model ``(B,)``.
        tokenizer: its tokenizer.
        max_length: longest scored sequence (the prompt's start is cut beyond it).
        batch_size: sequences per forward pass.
    """

    def __init__(self, model: HeadModel, tokenizer: Any, max_length: int = 1024, batch_size: int = 64) -> None:
        super().__init__()
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.encoder = Encoder(tokenizer, max_length, "truncate_prompt")
        self.model.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> "ModelReward":
        return cls(*load_reward_head(path), **kwargs)

    @torch.no_grad()
    def forward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        device = next(self.model.parameters()).device
        ids = [self.encoder.pair(p, c, "rollout")[0] for p, c in zip(prompts, completions)]
        out = []
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            input_ids = pad(chunk, self.tokenizer.pad_token_id, "right").to(device)
            mask = pad([[1] * len(x) for x in chunk], 0, "right").to(device)
            out.append(self.model(input_ids, mask).float())
        self.model.train(was_training)
        return torch.cat(out).cpu()


def reward_source(reward_model: str | None, reward_fn: RewardFn | None) -> RewardFn | None:
    """The configured reward source: a loaded reward model, a callable, or ``None`` (use the task's gold reward)."""
    if reward_model is not None and reward_fn is not None:
        raise ValueError("give either reward_model or reward_fn, not both")
    return ModelReward.load(reward_model) if reward_model else reward_fn


def score_completions(
    source: RewardFn | None, task: Any, prompts: list[str], completions: list[str]
) -> torch.Tensor:
    """Scores ``(B,)`` float32 (CPU) from ``source``, or from ``task.reward`` when ``source`` is ``None``."""
    if source is None:
        if task is None:
            raise ValueError("no reward source: give reward_model, reward_fn, or a data module with a task")
        source = task.reward
    scores = torch.as_tensor(source(prompts, completions), dtype=torch.float32).cpu()
    if scores.shape != (len(prompts),):
        raise ValueError(f"the reward source returned shape {tuple(scores.shape)} for {len(prompts)} completions")
    return scores
