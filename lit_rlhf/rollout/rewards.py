"""Reward sources for the online RL core, rejection sampling and best-of-N: ``(prompts, completions) -> Tensor (B,)``.

A reward source is any Python callable with that signature (a task's gold reward, a remote scorer), a trained
reward model loaded from a ``RewardModel`` checkpoint, run folder or exported folder
(:func:`~lit_rlhf.models.checkpoint.load_reward_head`), or a weighted combination of sources (:class:`Rewards`)
given as a list of dicts, e.g. in YAML::

    rewards:
      - {source: gold, weight: 1.0}                       # the task's verifier
      - {source: prm, path: runs/prm, aggregate: min, weight: 0.5}
      - {source: format, pattern: "#### -?[0-9]+$", weight: 0.1}

Sources (``source:`` and its fields; every entry also takes ``weight`` (default 1) and ``name`` (the metric
``rewards/<name>``, default the source kind)):

* ``gold`` — the data module's task's gold reward (``task.reward``).
* ``callable`` — ``function``: an import path ``module.attr`` (a function, or a class built with ``init_args``).
* ``reward_model`` — ``path``: a ``RewardModel`` checkpoint / run folder / export (:class:`ModelReward`).
* ``orm`` — ``path``: an ``OutcomeRewardModel`` checkpoint; ``P(correct)`` of ``task.solution_text(prompt,
  completion)`` (:class:`OutcomeReward`).
* ``prm`` — ``path``: a ``ProcessRewardModel`` checkpoint; ``P(step correct)`` of each step. For the estimators
  that take per-token rewards (PPO, REINFORCE++) each step's score is a reward on the token that closes the step
  (its separator); for the group methods the outcome is the ``aggregate`` (``min`` | ``product`` | ``last``) of
  the step scores (:class:`ProcessReward`); ``offset`` is subtracted from each dense step reward.

  ``orm`` and ``prm`` (like ``reward_model``) encode the prompt shared by a group's completions once per batch where
  that is cheaper and exact (``shared_prefix: false`` turns it off).
* ``ensemble`` — ``paths``: reward models; ``mean − penalty · std`` over members (:class:`EnsembleReward`).
* ``format`` — ``pattern``: 1 where ``re.search(pattern, completion)`` matches, else 0.
* ``length`` — ``−|L − target|`` (or ``−L`` without ``target``), ``unit`` ``chars`` | ``words``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Required, TypedDict

import torch
from torch import nn

from lit_rlhf.data.collate import pad
from lit_rlhf.data.tokenize import Encoder
from lit_rlhf.losses import ensemble_reward, length_reward, place_step_rewards
from lit_rlhf.losses.classification import correct_probability
from lit_rlhf.models.checkpoint import EXPORT_SETTINGS, load_head_model, load_reward_head, read_checkpoint
from lit_rlhf.models.heads import HeadModel
from lit_rlhf.models.logprobs import ForwardLayout, PrefixPlan
from lit_rlhf.rollout.verifiers import AGGREGATES, layout_forward, score_outcomes, score_steps, solution_scores

RewardFn = Callable[[list[str], list[str]], Any]
"""``(prompts, completions) -> (B,)`` scores: a tensor or any sequence of floats (checked when called). The return
type is ``Any`` so that a plain, unannotated function given by import path on the command line is accepted."""
StepRewards = list[list[list[float]]]
"""Per completion, ``[char_end, reward]`` of each located step: the step's text ends at ``char_end``."""


class RewardSpec(TypedDict, total=False):
    """One entry of ``rewards``: ``source`` and the fields of that source (see the module docstring)."""

    source: Required[str]
    weight: float
    name: str
    path: str
    paths: list[str]
    pattern: str
    target: float
    unit: str
    aggregate: str
    step_separator: str
    neutral_is_correct: bool
    offset: float
    penalty: float
    function: str
    init_args: dict[str, Any]
    batch_size: int
    max_length: int
    shared_prefix: bool


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
        shared_prefix: encode the prompt of several completions once where that is cheaper and exact
            (:class:`~lit_rlhf.models.ForwardLayout`).
    """

    def __init__(self, model: HeadModel, tokenizer: Any, max_length: int = 1024, batch_size: int = 64,
                 shared_prefix: bool = True) -> None:
        super().__init__()
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.encoder = Encoder(tokenizer, max_length, "truncate_prompt")
        self.model.requires_grad_(False)
        self.layout = ForwardLayout(padding_free=False, shared_prefix=shared_prefix)

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> "ModelReward":
        return cls(*load_reward_head(path), **kwargs)

    @torch.no_grad()
    def forward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        ids = [self.encoder.pair(p, c, "rollout")[0] for p, c in zip(prompts, completions)]
        out = []
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start:start + self.batch_size]
            batch = {"input_ids": pad(chunk, self.tokenizer.pad_token_id, "right"),
                     "attention_mask": pad([[1] * len(x) for x in chunk], 0, "right")}
            # a prompt's completions share its encoding where the layout finds that exact and cheaper
            out.append(layout_forward(self, self.model, self.layout, prompts[start:start + self.batch_size],
                                      batch).float())
        self.model.train(was_training)
        return torch.cat(out).cpu()


# ---------------------------------------------------------------------------------------------- sources
class RewardSource(nn.Module):
    """One term of a :class:`Rewards` combination: :meth:`reward` gives ``(B,)``; step sources also :meth:`steps`."""

    has_steps = False

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        raise NotImplementedError

    def steps(self, prompts: list[str], completions: list[str], task: Any) -> StepRewards:
        """Step rewards at character offsets (only sources with ``has_steps``)."""
        raise NotImplementedError(f"{type(self).__name__} gives no step rewards")


class GoldReward(RewardSource):
    """The task's verifier: ``task.reward(prompts, completions)`` (1 = the final answer is right)."""

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        if task is None:
            raise ValueError("reward source 'gold' needs a data module with a task (its gold reward)")
        return task.reward(prompts, completions)


class CallableReward(RewardSource):
    """Any callable ``(prompts, completions) -> (B,)``.

    Args:
        function: the callable, or its import path ``package.module.attr`` (a class there is built with
            ``init_args``).
        init_args: keyword arguments of that class.
    """

    def __init__(self, function: RewardFn | str, init_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(function, str):
            module_name, _, attr = function.rpartition(".")
            if not module_name:
                raise ValueError(f"function {function!r}: give an import path 'package.module.attr'")
            function = getattr(importlib.import_module(module_name), attr)
            if isinstance(function, type):
                function = function(**(init_args or {}))
        if not callable(function):
            raise ValueError(f"function {function!r} is not callable")
        self.function = function

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        return self.function(prompts, completions)


class FormatReward(RewardSource):
    """1.0 where ``re.search(pattern, completion)`` matches, else 0.0 (e.g. ``"#### -?[0-9]+\\s*$"``)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        return torch.tensor([float(self.pattern.search(c) is not None) for c in completions])


class LengthReward(RewardSource):
    """:func:`~lit_rlhf.losses.length_reward` of the completion's length in ``chars`` or whitespace ``words``."""

    def __init__(self, target: float | None = None, unit: str = "chars") -> None:
        super().__init__()
        if unit not in ("chars", "words"):
            raise ValueError(f"unit must be 'chars' or 'words', got {unit!r}")
        self.target, self.unit = target, unit

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        lengths = torch.tensor([float(len(c) if self.unit == "chars" else len(c.split())) for c in completions])
        return length_reward(lengths, self.target)


class HeadReward(RewardSource):
    """A reward model (:class:`ModelReward`) as a source; ``model``: its checkpoint, run folder or export."""

    def __init__(self, model: str, batch_size: int = 64, max_length: int = 1024) -> None:
        super().__init__()
        self.model = ModelReward.load(model, batch_size=batch_size, max_length=max_length)

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        return self.model(prompts, completions)


class EnsembleReward(RewardSource):
    """Reward models combined as ``mean − penalty · std`` (:func:`~lit_rlhf.losses.ensemble_reward`).

    Args:
        paths: the members (``RewardModel`` checkpoints, run folders or exports), or the members themselves.
        penalty: λ, the weight of the members' disagreement.
    """

    def __init__(self, paths: list[str | nn.Module], penalty: float = 1.0, batch_size: int = 64,
                 max_length: int = 1024) -> None:
        super().__init__()
        if not paths:
            raise ValueError("an ensemble needs at least one member in paths")
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}")
        self.members = nn.ModuleList(
            m if isinstance(m, nn.Module) else ModelReward.load(m, batch_size=batch_size, max_length=max_length)
            for m in paths)
        self.penalty = penalty

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        scores = torch.stack([torch.as_tensor(m(prompts, completions)).float().cpu() for m in self.members])
        return ensemble_reward(scores, self.penalty)


def _checkpoint_hparams(path: str) -> dict[str, Any]:
    """The hyperparameters of a lit_rlhf checkpoint; for an exported folder, the settings its export wrote
    (``EXPORT_SETTINGS``; ``{}`` for a folder from elsewhere)."""
    folder = Path(path).expanduser()
    if folder.is_dir() and (folder / "config.json").exists():
        settings = folder / EXPORT_SETTINGS
        return json.loads(settings.read_text()) if settings.exists() else {}
    return dict(read_checkpoint(path).get("hyper_parameters") or {})


class OutcomeReward(RewardSource):
    """An outcome reward model (ORM): ``P(correct)`` of ``task.solution_text(prompt, completion)`` (its training
    text; ``prompt + completion`` without a task), read as :func:`~lit_rlhf.rollout.verifiers.score_outcomes`.

    Args:
        model: a two-class sequence classifier (:class:`~lit_rlhf.models.HeadModel`), or an ``OutcomeRewardModel``
            checkpoint / run folder / export path.
        tokenizer: its tokenizer (with a model).
        shared_prefix: encode the text the completions of one prompt start with once per batch, where that is
            cheaper and exact (:class:`~lit_rlhf.models.ForwardLayout`, kept across calls in ``layout``).
    """

    def __init__(self, model: HeadModel | str, tokenizer: Any = None, batch_size: int = 64,
                 max_length: int = 2048, shared_prefix: bool = True) -> None:
        super().__init__()
        if isinstance(model, (str, Path)):
            model, tokenizer = load_head_model(model)
        if model.head.out_features != 2 or model.pooling == "none":
            raise ValueError(f"an ORM is a two-class sequence classifier, got head {model.meta()}")
        self.model, self.tokenizer, self.batch_size, self.max_length = model, tokenizer, batch_size, max_length
        self.model.requires_grad_(False)
        self.shared_prefix = shared_prefix
        self.layout = ForwardLayout(padding_free=False, shared_prefix=shared_prefix)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
              ) -> torch.Tensor:
        """``P(correct)`` ``(B,)`` (what :func:`score_outcomes` reads); ``plan``: a prompt-once layout."""
        return self.model(input_ids, attention_mask, plan).softmax(-1)[:, 1]

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        texts = [task.solution_text(p, c) if task is not None else p + c for p, c in zip(prompts, completions)]
        return score_outcomes(self, texts, self.batch_size, self.max_length, groups=prompts,
                              shared_prefix=self.shared_prefix, layout=self.layout)


class ProcessReward(RewardSource):
    """A process reward model (PRM): ``P(step correct)`` of each step, laid out as in its training
    (:func:`~lit_rlhf.rollout.verifiers.score_steps`).

    Steps are ``task.split_steps(completion)`` where the task has it, else the non-empty pieces between
    separators. :meth:`reward` is the ``aggregate`` of the step scores (Lightman et al. 2023 §2.6: ``product``;
    ``min`` as in Wang et al. 2024, "Math-Shepherd"); :meth:`steps` gives each step's score at the character where
    the step ends, for dense per-token rewards.

    Args:
        model: a token classifier (:class:`~lit_rlhf.models.HeadModel`), or a ``ProcessRewardModel`` checkpoint /
            run folder / export path (its ``step_separator`` and ``neutral_is_correct`` are read from the checkpoint or
            the export's settings file).
        tokenizer: its tokenizer (with a model).
        aggregate: ``min`` | ``product`` | ``last``.
        step_separator: text after every step (``None``: the checkpoint's, else ``"\n"``).
        neutral_is_correct: with 3 classes, whether P(correct) includes neutral (``None``: the checkpoint's, else True).
        offset: subtracted from each step's score in the dense step rewards (e.g. 0.5: a step judged wrong is a
            penalty, and extra steps earn nothing by themselves; with 0 every step adds a positive reward).
        shared_prefix: encode the prompt of a group's completions once per batch, where that is cheaper and exact
            (:class:`~lit_rlhf.models.ForwardLayout`, kept across calls in ``layout``).
    """

    has_steps = True

    def __init__(self, model: HeadModel | str, tokenizer: Any = None, aggregate: str = "min",
                 step_separator: str | None = None, neutral_is_correct: bool | None = None, offset: float = 0.0,
                 batch_size: int = 64, max_length: int = 2048, shared_prefix: bool = True) -> None:
        super().__init__()
        hparams: dict[str, Any] = {}
        if isinstance(model, (str, Path)):
            hparams = _checkpoint_hparams(str(model))
            model, tokenizer = load_head_model(model)
        if model.pooling != "none" or model.head.out_features not in (2, 3):
            raise ValueError(f"a PRM is a 2- or 3-class token classifier, got head {model.meta()}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.model, self.tokenizer, self.aggregate = model, tokenizer, aggregate
        self.step_separator = step_separator if step_separator is not None else hparams.get("step_separator", "\n")
        self.neutral_is_correct = (neutral_is_correct if neutral_is_correct is not None
                                   else hparams.get("neutral_is_correct", True))
        self.offset, self.batch_size, self.max_length = float(offset), batch_size, max_length
        self.model.requires_grad_(False)
        self.shared_prefix = shared_prefix
        self.layout = ForwardLayout(padding_free=False, shared_prefix=shared_prefix)

    def step_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, plan: PrefixPlan | None = None
                   ) -> torch.Tensor:
        """``P(step correct)`` at every token ``(B, T)`` (what :func:`score_steps` reads); ``plan``: a prompt-once
        layout."""
        return correct_probability(self.model(input_ids, attention_mask, plan), self.neutral_is_correct)

    def split(self, completion: str, task: Any) -> list[str]:
        split_steps = getattr(task, "split_steps", None)
        if split_steps is not None:
            return list(split_steps(completion))
        return [s.strip() for s in completion.split(self.step_separator) if s.strip()]

    def step_scores(self, prompts: list[str], completions: list[str], task: Any
                    ) -> tuple[list[list[str]], torch.Tensor, torch.Tensor]:
        """The steps of each completion and their ``(probs (B, S), mask (B, S))``."""
        steps = [self.split(c, task) for c in completions]
        probs, mask = score_steps(self, prompts, steps, self.batch_size, self.max_length, self.shared_prefix,
                                  self.layout)
        return steps, probs, mask

    def reward(self, prompts: list[str], completions: list[str], task: Any) -> torch.Tensor:
        _, probs, mask = self.step_scores(prompts, completions, task)
        return solution_scores(probs, mask, self.aggregate)

    def steps(self, prompts: list[str], completions: list[str], task: Any) -> StepRewards:
        steps, probs, _ = self.step_scores(prompts, completions, task)
        out = []
        for completion, row_steps, row_probs in zip(completions, steps, probs.tolist()):
            ends = step_ends(completion, row_steps)
            out.append([[float(end), p - self.offset] for end, p in zip(ends, row_probs)])
        return out


def step_ends(completion: str, steps: list[str]) -> list[int]:
    """The character offset where each step's text ends in ``completion`` (steps found in order, line by line,
    whitespace around lines ignored); a step that cannot be found ends the list."""
    ends, cursor = [], 0
    for step in steps:
        found = True
        for line in (part.strip() for part in step.split("\n")):
            if not line:
                continue
            index = completion.find(line, cursor)
            if index < 0:
                found = False
                break
            cursor = index + len(line)
        if not found:
            break
        ends.append(cursor)
    return ends


def token_index_of_char(tokenizer: Any, ids: list[int], char: int) -> int:
    """Index of the response token whose decoded text holds character ``char`` (the step's separator, right
    after a step ending at ``char``); the last token when the text ends at or before ``char``.

    Decoding as :func:`~lit_rlhf.rollout.generation.generate` decodes completions (special tokens skipped);
    a binary search over prefix decodings.
    """
    def width(n: int) -> int:
        return len(tokenizer.decode(ids[:n], skip_special_tokens=True))

    if not ids:
        raise ValueError("an empty response has no tokens")
    if width(len(ids)) <= char:
        return len(ids) - 1
    low, high = 0, len(ids) - 1  # smallest t with width(t + 1) > char
    while low < high:
        mid = (low + high) // 2
        if width(mid + 1) > char:
            high = mid
        else:
            low = mid + 1
    return low


def dense_step_rewards(tokenizer: Any, responses: list[list[int]], steps: StepRewards, mask: torch.Tensor
                       ) -> torch.Tensor:
    """Step rewards at character offsets as per-token rewards ``(B, R)`` of the response tokens
    (:func:`token_index_of_char`, then :func:`~lit_rlhf.losses.place_step_rewards`)."""
    if len(responses) != len(steps) or len(responses) != mask.shape[0]:
        raise ValueError(f"{len(responses)} responses, {len(steps)} step lists, {mask.shape[0]} mask rows")
    width = max((len(s) for s in steps), default=0)
    values, positions = torch.zeros(len(steps), width), torch.zeros(len(steps), width, dtype=torch.long)
    step_mask = torch.zeros(len(steps), width, dtype=torch.bool)
    for row, (ids, row_steps) in enumerate(zip(responses, steps)):
        for i, (end, value) in enumerate(row_steps):
            values[row, i], positions[row, i] = value, token_index_of_char(tokenizer, ids, int(end))
            step_mask[row, i] = True
    return place_step_rewards(values, positions, step_mask, mask.cpu()).to(mask.device)


# ---------------------------------------------------------------------------------------------- combination
SOURCES: dict[str, tuple[type[RewardSource], tuple[str, ...]]] = {
    "gold": (GoldReward, ()),
    "callable": (CallableReward, ("function", "init_args")),
    "reward_model": (HeadReward, ("path", "batch_size", "max_length")),
    "orm": (OutcomeReward, ("path", "batch_size", "max_length", "shared_prefix")),
    "prm": (ProcessReward, ("path", "aggregate", "step_separator", "neutral_is_correct", "offset", "batch_size",
                            "max_length", "shared_prefix")),
    "ensemble": (EnsembleReward, ("paths", "penalty", "batch_size", "max_length")),
    "format": (FormatReward, ("pattern",)),
    "length": (LengthReward, ("target", "unit")),
}
ARG_NAMES = {"path": "model"}  # spec field -> constructor argument


@dataclasses.dataclass
class RewardResult:
    """What :meth:`Rewards.evaluate` gives.

    Attributes:
        total: ``(B,)`` the weighted sum of every source (step sources by their outcome, or their step sum).
        components: name → ``(B,)`` each source's own (unweighted) reward, for the logs.
        outcome: ``(B,)`` the weighted sum without the step sources (``total`` when ``steps`` is ``None``).
        steps: the step sources' weighted step rewards at character offsets (``None`` unless dense).
    """

    total: torch.Tensor
    components: dict[str, torch.Tensor]
    outcome: torch.Tensor
    steps: StepRewards | None = None


class Rewards(nn.Module):
    """A weighted combination of reward sources, ``Σ_i w_i · r_i`` (see the module docstring for the sources).

    Args:
        specs: one dict per source: ``source`` (kind), ``weight``, ``name`` and the kind's fields.
    """

    def __init__(self, specs: list[RewardSpec]) -> None:
        super().__init__()
        if not specs:
            raise ValueError("rewards: give at least one source")
        self.sources = nn.ModuleList()
        self.weights: list[float] = []
        self.names: list[str] = []
        for i, spec in enumerate(specs):
            where = f"rewards[{i}]"
            if not isinstance(spec, dict) or "source" not in spec:
                raise ValueError(f"{where}: expected a dict with a 'source' field (one of {list(SOURCES)}), "
                                 f"got {spec!r}")
            kind = spec["source"]
            if kind not in SOURCES:
                raise ValueError(f"{where}: unknown source {kind!r}; sources: {list(SOURCES)}")
            cls, fields = SOURCES[kind]
            unknown = sorted(set(spec) - {"source", "weight", "name", *fields})
            if unknown:
                raise ValueError(f"{where} (source: {kind}): unknown field(s) {unknown}; fields: "
                                 f"{['weight', 'name', *fields]}")
            kwargs = {ARG_NAMES.get(k, k): v for k, v in spec.items() if k in fields}
            try:
                self.sources.append(cls(**kwargs))
            except (TypeError, ValueError, FileNotFoundError) as err:
                raise type(err)(f"{where} (source: {kind}): {err}") from err
            weight = spec.get("weight", 1.0)
            if not isinstance(weight, (int, float)):
                raise ValueError(f"{where} (source: {kind}): weight must be a number, got {weight!r}")
            self.weights.append(float(weight))
            name = str(spec.get("name", kind))
            self.names.append(name if name not in self.names else f"{name}_{i}")

    @property
    def has_steps(self) -> bool:
        return any(s.has_steps for s in self.sources)

    @torch.no_grad()
    def evaluate(self, prompts: list[str], completions: list[str], task: Any = None, dense: bool = False
                 ) -> RewardResult:
        """Every source's reward and the weighted total; with ``dense``, the step sources' weighted step rewards
        instead of their outcome (``total`` then counts each step source as the sum of its step rewards)."""
        B = len(completions)
        total, outcome = torch.zeros(B), torch.zeros(B)
        components: dict[str, torch.Tensor] = {}
        steps: StepRewards | None = [[] for _ in range(B)] if dense and self.has_steps else None
        for name, weight, source in zip(self.names, self.weights, self.sources):
            if steps is not None and source.has_steps:
                rows = source.steps(prompts, completions, task)
                for row, found in zip(steps, rows):
                    row.extend([end, weight * value] for end, value in found)
                step_sum = torch.tensor([sum(v for _, v in r) for r in rows])
                components[name] = step_sum
                total += weight * step_sum
                continue
            value = _checked(source.reward(prompts, completions, task), B, name)
            components[name] = value
            total += weight * value
            outcome += weight * value
        if steps is not None:
            for row in steps:
                row.sort(key=lambda item: item[0])
        return RewardResult(total, components, outcome if steps is not None else total, steps)

    def forward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """The weighted total ``(B,)`` (no task: a ``gold`` source raises)."""
        return self.evaluate(prompts, completions).total


def absolute_paths(specs: list[RewardSpec]) -> list[RewardSpec]:
    """Copies of ``specs`` with every ``path`` / ``paths`` entry made absolute (for checkpoints)."""
    def absolute(path: Any) -> Any:
        return str(Path(path).expanduser().absolute()) if isinstance(path, str) else path

    out = []
    for spec in specs:
        spec = dict(spec)
        if "path" in spec:
            spec["path"] = absolute(spec["path"])
        if isinstance(spec.get("paths"), list):
            spec["paths"] = [absolute(x) for x in spec["paths"]]
        out.append(spec)
    return out


def _checked(scores: Any, n: int, name: str) -> torch.Tensor:
    scores = torch.as_tensor(scores, dtype=torch.float32).cpu()
    if scores.shape != (n,):
        raise ValueError(f"the reward source {name!r} returned shape {tuple(scores.shape)} for {n} completions")
    return scores


def reward_source(reward_model: str | None, reward_fn: RewardFn | None,
                  rewards: list[RewardSpec] | None = None) -> RewardFn | None:
    """The configured reward source: a loaded reward model, a callable, a :class:`Rewards` combination, or ``None``
    (use the task's gold reward)."""
    if sum(x is not None for x in (reward_model, reward_fn, rewards)) > 1:
        raise ValueError("give either reward_model, reward_fn or rewards, not several (a reward_model or a "
                         "callable is a source in rewards: [{source: reward_model, path: ...}, "
                         "{source: callable, function: ...}])")
    if rewards is not None:
        return Rewards(rewards)
    return ModelReward.load(reward_model) if reward_model else reward_fn


def evaluate_rewards(source: RewardFn | None, task: Any, prompts: list[str], completions: list[str],
                     dense: bool = False) -> RewardResult:
    """Scores of ``completions`` from ``source`` (``None``: ``task.reward``) with their components; with ``dense``,
    the step sources' step rewards (see :meth:`Rewards.evaluate`)."""
    if isinstance(source, Rewards):
        return source.evaluate(prompts, completions, task, dense)
    scores = score_completions(source, task, prompts, completions)
    return RewardResult(scores, {}, scores)


def score_completions(
    source: RewardFn | None, task: Any, prompts: list[str], completions: list[str]
) -> torch.Tensor:
    """Scores ``(B,)`` float32 (CPU) from ``source``, or from ``task.reward`` when ``source`` is ``None``."""
    if isinstance(source, Rewards):
        return source.evaluate(prompts, completions, task).total
    if source is None:
        if task is None:
            raise ValueError("no reward source: give reward_model, reward_fn, rewards, or a data module with a task")
        source = task.reward
    scores = torch.as_tensor(source(prompts, completions), dtype=torch.float32).cpu()
    if scores.shape != (len(prompts),):
        raise ValueError(f"the reward source returned shape {tuple(scores.shape)} for {len(prompts)} completions")
    return scores
