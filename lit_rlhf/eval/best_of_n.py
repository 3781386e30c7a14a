"""Best-of-N verification (Lightman et al. 2023 §3; PRM800K ``eval/eval.py``).

For each problem a pool of ``M`` candidate solutions is sampled once. For each ``N`` and each of
``trials`` random draws of ``N`` candidates from the pool, every selector picks one candidate — the
highest PRM score, the highest ORM score, or any candidate carrying the most frequent final answer
(majority voting) — and selection accuracy is the share of problems whose pick is correct. Reported:
mean ± std over trials; ``pass@N`` (some candidate is correct) is the ceiling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lit_rlhf.data.schemas import DataError
from lit_rlhf.data.tokenize import Encoder
from lit_rlhf.eval.verify import Aggregate, score_outcomes, score_steps, solution_scores
from lit_rlhf.rollout.generation import SamplingConfig, generate_texts

Accuracy = dict[str, dict[int, tuple[float, float]]]  # selector -> N -> (mean, std over trials)


def sample_candidates(
    model: torch.nn.Module, tokenizer: Any, prompts: list[str], n: int, sampling: SamplingConfig, batch_size: int = 256
) -> list[list[str]]:
    """``n`` sampled completions for each prompt (prompts encoded as in training: BOS + prompt)."""
    encoder = Encoder(tokenizer, max_length=10**9)
    flat = [ids for ids in (encoder.prompt_ids(p) for p in prompts) for _ in range(n)]
    texts = generate_texts(model, tokenizer, flat, sampling, batch_size)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def _answer_ids(
    answers: Sequence[Sequence[Hashable | None]], correct: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per problem, number the distinct final answers 0..K−1 (``None`` → −1) and mark which are correct.

    Returns ``(ids (P, M) long, id_correct (P, K) bool)``.
    """
    P, M = correct.shape
    ids = torch.full((P, M), -1, dtype=torch.long)
    numbering = [{a: k for k, a in enumerate(dict.fromkeys(a for a in row if a is not None))} for row in answers]
    id_correct = torch.zeros(P, max([len(m) for m in numbering] + [1]), dtype=torch.bool)
    for p, (row, number) in enumerate(zip(answers, numbering)):
        if len(row) != M:
            raise ValueError(f"problem {p}: {len(row)} answers but {M} candidates")
        for m, a in enumerate(row):
            if a is not None:
                ids[p, m] = number[a]
                id_correct[p, number[a]] |= bool(correct[p, m])
    return ids, id_correct


def selection_accuracy(
    correct: torch.Tensor,
    ns: Sequence[int],
    scores: dict[str, torch.Tensor] | None = None,
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    trials: int = 100,
    seed: int = 0,
    inspect: Callable[[int, torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
) -> Accuracy:
    """Best-of-N selection accuracy for score selectors, majority voting and ``pass@N``.

    Args:
        correct: ``(P, M)`` bool, candidate ``m`` of problem ``p`` is correct.
        ns: the values of ``N`` (each ≤ ``M``).
        scores: selector name → ``(P, M)`` scores (argmax picks; ties go to a random one of them).
        answers: ``P`` lists of ``M`` final answers (``None`` = no answer) for ``majority`` voting; a
            problem whose draw has no answer at all counts as wrong; ties between answers are random.
        trials: random draws per ``N``.
        seed: seed of the draws (the same draws serve every selector).
        inspect: called as ``inspect(n, draw, picks)`` for every trial, with ``draw`` the ``(P, n)`` drawn
            candidate indices and ``picks`` score selector → ``(P,)`` index (into ``M``) of its pick — to
            diagnose the selections without redrawing.
    Returns:
        selector → ``N`` → ``(mean, std)`` over trials, selectors ``[*scores, "majority", "pass@N"]``.
    """
    correct = correct.bool()
    P, M = correct.shape
    scores = scores or {}
    for name, s in scores.items():
        if s.shape != correct.shape:
            raise ValueError(f"scores {name!r} have shape {tuple(s.shape)}, expected {(P, M)}")
    if any(not 1 <= n <= M for n in ns):
        raise ValueError(f"every N must be in [1, {M}] (the pool size), got {list(ns)}")
    generator = torch.Generator().manual_seed(seed)
    votes = _answer_ids(answers, correct) if answers is not None else None
    names = [*scores, *(["majority"] if votes else []), "pass@N"]
    out: Accuracy = {name: {} for name in names}
    for n in ns:
        per_trial: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(trials):
            draw = torch.rand(P, M, generator=generator).argsort(-1)[:, :n]  # (P, n), random order
            hit = correct.gather(1, draw)
            picks = {}
            for name, s in scores.items():
                pick = s.gather(1, draw).argmax(-1, keepdim=True)  # first maximum in a random order
                per_trial[name].append(float(hit.gather(1, pick).float().mean()))
                picks[name] = draw.gather(1, pick).squeeze(1)
            if inspect is not None:
                inspect(n, draw, picks)
            if votes:
                ids, id_correct = votes
                drawn = ids.gather(1, draw)
                counts = torch.zeros(P, id_correct.shape[1] + 1).scatter_add_(1, drawn + 1, torch.ones(P, n))[:, 1:]
                noisy = counts + 0.5 * torch.rand(counts.shape, generator=generator)  # random among tied answers
                winner = noisy.argmax(-1, keepdim=True)
                ok = id_correct.gather(1, winner).squeeze(1) & (counts.amax(-1) >= 1)
                per_trial["majority"].append(float(ok.float().mean()))
            per_trial["pass@N"].append(float(hit.any(-1).float().mean()))
        for name, values in per_trial.items():
            t = torch.tensor(values)
            out[name][n] = (float(t.mean()), float(t.std(correction=0)))
    return out


@dataclass
class BestOfNResult:
    """Candidates, their grades and verifier scores, and the selection accuracy per selector and N."""

    prompts: list[str]
    candidates: list[list[str]]
    correct: torch.Tensor
    answers: list[list[Any]]
    scores: dict[str, torch.Tensor]
    accuracy: Accuracy = field(default_factory=dict)

    def table(self) -> str:
        """Markdown table: one row per selector, one column per N."""
        ns = sorted(next(iter(self.accuracy.values())))
        lines = ["| selector | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for name, by_n in self.accuracy.items():
            lines.append(f"| {name} | " + " | ".join(f"{by_n[n][0]:.3f} ± {by_n[n][1]:.3f}" for n in ns) + " |")
        return "\n".join(lines)

    def save(self, folder: str | Path, plot: bool = True) -> Path:
        """Write ``accuracy.json``, ``candidates.jsonl`` (with grades and scores) and ``best_of_n.png``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "accuracy.json").write_text(json.dumps(
            {
                name: {str(n): {"mean": m, "std": s} for n, (m, s) in by_n.items()}
                for name, by_n in self.accuracy.items()
            },
            indent=1))
        with (folder / "candidates.jsonl").open("w") as f:
            for p, prompt in enumerate(self.prompts):
                f.write(json.dumps({
                    "prompt": prompt, "completions": self.candidates[p], "correct": self.correct[p].tolist(),
                    "answers": self.answers[p], "scores": {k: v[p].tolist() for k, v in self.scores.items()},
                }) + "\n")
        if plot:
            plot_best_of_n(self.accuracy, folder / "best_of_n.png")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BestOfNResult:
        """Read back what :meth:`save` wrote (candidates, grades, answers, scores and ``accuracy.json``)."""
        folder = Path(folder)
        path, rows = folder / "candidates.jsonl", []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                rows.append(json.loads(line))
                missing = [k for k in ("prompt", "completions", "correct", "answers", "scores") if k not in rows[-1]]
                if missing:
                    raise ValueError(f"{path}:{number}: missing field(s) {missing}")
        names = list(rows[0]["scores"]) if rows else []
        accuracy_file = folder / "accuracy.json"
        accuracy = {name: {int(n): (v["mean"], v["std"]) for n, v in by_n.items()}
                    for name, by_n in json.loads(accuracy_file.read_text()).items()} if accuracy_file.exists() else {}
        return cls(
            [r["prompt"] for r in rows], [r["completions"] for r in rows],
            torch.tensor([r["correct"] for r in rows], dtype=torch.bool), [r["answers"] for r in rows],
            {name: torch.tensor([r["scores"][name] for r in rows]) for name in names}, accuracy,
        )


def best_of_n(
    task: Any,
    prompts: list[str],
    candidates: list[list[str]],
    ns: Sequence[int] = (1, 4, 16, 64),
    prm: Any = None,
    orm: Any = None,
    aggregates: Sequence[Aggregate] = ("product", "min"),
    trials: int = 100,
    seed: int = 0,
    batch_size: int = 64,
    shared_prefix: bool = True,
) -> BestOfNResult:
    """Grade, score and select among candidate solutions.

    Args:
        task: grader: ``reward(prompts, completions) -> (B,)`` (1 = correct), ``parse_answer(completion)``
            (final answer for majority voting, ``None`` if absent), ``split_steps(completion)`` (the PRM's steps)
            and ``solution_text(prompt, completion)`` (the ORM's text).
        prompts: ``P`` problems.
        candidates: ``P`` lists of ``M`` completions each.
        ns: values of ``N``.
        prm: a :class:`~lit_rlhf.modules.ProcessRewardModel` (selectors ``PRM (<aggregate>)``), or ``None``.
        orm: an :class:`~lit_rlhf.modules.OutcomeRewardModel` (selector ``ORM``), or ``None``; it reads
            ``task.solution_text(prompt, completion)``, like the task's ``weak`` records.
        batch_size: candidates per verifier forward.
        shared_prefix: encode each problem's prompt once per batch for its candidates, where that is cheaper and
            exact (:func:`~lit_rlhf.eval.verify.score_steps`, :func:`~lit_rlhf.eval.verify.score_outcomes`).
    """
    if len(prompts) != len(candidates) or len({len(c) for c in candidates}) > 1:
        raise ValueError("need one list of candidates per prompt, all of the same length")
    P, M = len(prompts), len(candidates[0]) if candidates else 0
    flat_prompts = [p for p in prompts for _ in range(M)]
    flat = [c for row in candidates for c in row]
    correct = task.reward(flat_prompts, flat).view(P, M) > 0.5
    answers = [[task.parse_answer(c) for c in row] for row in candidates]
    scores: dict[str, torch.Tensor] = {}
    if prm is not None:
        probs, mask = score_steps(prm, flat_prompts, [task.split_steps(c) for c in flat], batch_size,
                                  shared_prefix=shared_prefix)
        for aggregate in aggregates:
            scores[f"PRM ({aggregate})"] = solution_scores(probs, mask, aggregate).view(P, M)
    if orm is not None:
        texts = [task.solution_text(p, c) for p, c in zip(flat_prompts, flat)]
        scores["ORM"] = score_outcomes(orm, texts, batch_size, groups=flat_prompts,
                                       shared_prefix=shared_prefix).view(P, M)
    accuracy = selection_accuracy(correct, ns, scores, answers, trials, seed)
    return BestOfNResult(prompts, candidates, correct, answers, scores, accuracy)


def plot_best_of_n(accuracy: Accuracy, path: str | Path, title: str = "best-of-N selection accuracy") -> Path:
    """Accuracy vs N (log scale) with ±std bars, one line per selector; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_n in accuracy.items():
        ns = sorted(by_n)
        ax.errorbar(ns, [by_n[n][0] for n in ns], yerr=[by_n[n][1] for n in ns], marker="o", capsize=3, label=name,
                    linestyle="--" if name == "pass@N" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("% problems solved")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def load_candidates(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read ``{"prompt": str, "completions": [str, ...]}`` lines; errors name the file, line and field."""
    prompts, candidates = [], []
    with Path(path).open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(where, None, f"invalid JSON: {err.msg} (column {err.colno})") from None
            if not isinstance(row, dict):
                raise DataError(where, None, f"expected an object, got {type(row).__name__}")
            if not isinstance(row.get("prompt"), str):
                raise DataError(where, "prompt", "must be a string")
            if not isinstance(row.get("completions"), list) or not all(isinstance(c, str) for c in row["completions"]):
                raise DataError(where, "completions", "must be a list of strings")
            prompts.append(row["prompt"])
            candidates.append(row["completions"])
    return prompts, candidates

