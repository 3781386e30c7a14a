"""Let's Verify Step by Step, in miniature: best-of-N with a PRM vs an ORM vs majority voting.

    python benchmarks/prm_vs_orm.py [--seeds 0 1 2] [--sft-steps 1500] [--generator-data noisy|correct] [--workdir DIR]
        [--reuse-from DIR] [--saved] [--diagnose]

Per seed, on the ``arithmetic`` task (2–3 chained ``+ − ×`` steps):
1. generator: the quickstart SFT recipe (tiny Llama, hidden 128, 4 layers) for ``--sft-steps`` steps, on
   samples of the task's noisy solver (``noisy``, default: a learnable systematic misconception — +3 on the
   first multiplication, ``trap_rule="first_multiply"`` — in ``--trap-prob`` of the solutions, plus slips and
   compensated errors) or on correct solutions only (``correct``);
2. verifier data: ``--train-samples`` sampled solutions (temperature 1) for each of ``--train-problems``
   training problems, step labels from ``Arithmetic.check_steps`` (PRM) and final-answer labels (ORM) —
   the same solutions for both;
3. PRM (``configs/prm.yaml``) and ORM (``configs/orm.yaml``), both initialised from the generator;
4. ``--pool`` samples for each of ``--test-problems`` held-out problems; best-of-N for N ∈ ``--n`` with
   ``--trials`` random draws per N (``lit_rlhf.eval.best_of_n``).
Prints per-seed tables (with each verifier's ROC AUC for correct vs wrong test candidates) and the mean ± std
over seeds; writes ``benchmarks/prm_vs_orm.png``. With ``--workdir`` the generators, verifiers' data and
best-of-N results (``lit-rlhf best-of-n`` layout) are kept there and a generator found there is reused.

``--reuse-from W`` takes each seed's generator and test candidates from an earlier ``--workdir W`` (only the
verifiers are retrained: compare verifier settings on the same candidates). ``--saved`` trains nothing: it
re-tabulates the best-of-N results saved in ``--workdir``. ``--diagnose`` adds, per selector and N, why picks
go wrong (``diagnose``: accuracy among solvable draws, scores of wrong picks vs the best right candidate, how
rare the picked text is in the pool, error kinds of wrong picks by ``Arithmetic.error_kind``, and the accuracy
of a vote for the final answer with the most summed verifier score) and each verifier's view of each error
kind; it is saved as ``diagnose.json`` next to the results (``--plot`` elsewhere to keep the committed plot).

    python benchmarks/prm_vs_orm.py --scoring-speed [--speed-problems 8] [--speed-candidates 16] [--speed-repeats 7]

times best-of-N verifier scoring only (no training; untrained tiny-Llama PRM and ORM): ``score_steps`` and
``score_outcomes`` of ``--speed-candidates`` noisy solutions (3–5 steps) of each of ``--speed-problems`` problems whose
prompt is :data:`SYSTEM` (a long system-prompt-like prefix) + the problem, with each prompt encoded once
(``shared_prefix=True``, one layout chooser per verifier, checked on a warm-up call), the same with the key/value cache
layout switched off (the block-causal 4-D mask layout only) and without; the six runs are interleaved, each repeat in a
rotated order, and the medians of the process CPU times are printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lit_rlhf.cli import make_cli
from lit_rlhf.eval.best_of_n import (
    BestOfNResult,
    _answer_ids,
    best_of_n,
    load_candidates,
    plot_best_of_n,
    sample_candidates,
    selection_accuracy,
)
from lit_rlhf.models import load_model, load_tokenizer
from lit_rlhf.rollout.generation import SamplingConfig
from lit_rlhf.tasks import Arithmetic
from lit_rlhf.tasks.arithmetic import ERROR_KINDS, Problem, split_steps

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.enable_checkpointing=false"]


def fit(config: str, seed: int, tmp: Path, extra: list[str]):
    cli = make_cli(["--config", str(ROOT / "configs" / config), f"--seed_everything={seed}",
                    f"--trainer.default_root_dir={tmp}", *QUIET, *extra], run=False, save_config=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.model


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def auc(scores: torch.Tensor, correct: torch.Tensor) -> float:
    """P(score of a random correct candidate > score of a random wrong one), ties count ½."""
    pos, neg = scores[correct], scores[~correct]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean() + 0.5 * (pos[:, None] == neg[None, :]).float().mean()
    return float(greater)


def generator_folder(seed: int, args: argparse.Namespace, task: Arithmetic, tmp: Path) -> Path:
    if args.reuse_from:
        folder = Path(args.reuse_from) / f"seed{seed}" / "generator"
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"--reuse-from: no generator at {folder}")
        return folder
    folder = tmp / "generator"
    if (folder / "config.json").exists():
        return folder
    extra = ["--trainer.callbacks=[]", f"--trainer.max_steps={args.sft_steps}", "--trainer.val_check_interval=null",
             "--trainer.limit_val_batches=0"]
    if args.generator_data == "noisy":
        rng = random.Random(seed)
        rows = [{"prompt": p.prompt, "completion": task.sample_solution(p, rng).completion}
                for p in task.problems("train", args.sft_steps * 32, seed=seed)]
        extra.append(f"--data.init_args.train={write(tmp / 'sft.jsonl', rows)}")
    return fit("quickstart.yaml", seed, tmp / "sft", extra).export(folder)


def make_task(args: argparse.Namespace) -> Arithmetic:
    return Arithmetic(min_steps=2, max_steps=3, trap_rule="first_multiply", trap_prob=args.trap_prob,
                      slip_prob=args.slip_prob, compensate_prob=args.compensate_prob)


def train_verifiers(model, tokenizer, folder: Path, seed: int, args: argparse.Namespace, task: Arithmetic,
                    tmp: Path):
    """PRM and ORM from the generator at ``folder``, trained on the same generator samples of training problems
    (other problems than the SFT ones): step labels from ``Arithmetic.check_steps``, final-answer labels for the
    ORM. Returns the two fitted modules and ``(solutions, right answers)`` of the verifier data."""
    problems = list(task.problems("train", args.train_problems, seed=1000 + seed))
    samples = sample_candidates(model, tokenizer, [p.prompt for p in problems], args.train_samples,
                                SamplingConfig(max_new_tokens=48, temperature=1.0))
    steps_rows, outcome_rows = [], []
    for problem, completions in zip(problems, samples):
        for completion in completions:
            steps = task.split_steps(completion)
            if steps:
                labels = task.check_steps(problem.prompt, steps)
                steps_rows.append({"prompt": problem.prompt, "completions": steps, "labels": labels})
            outcome_rows.append({"text": task.solution_text(problem.prompt, completion),
                                 "label": int(task.parse_answer(completion) == problem.answer)})
    step_file, outcome_file = write(tmp / "steps.jsonl", steps_rows), write(tmp / "outcomes.jsonl", outcome_rows)
    verifier = [f"--model.init_args.model={folder}", "--trainer.val_check_interval=null",
                "--trainer.limit_val_batches=0", f"--trainer.max_epochs={args.verifier_epochs}"]
    prm = fit("prm.yaml", seed, tmp / "prm", [*verifier, f"--data.init_args.train={step_file}"])
    orm = fit("orm.yaml", seed, tmp / "orm", [*verifier, f"--data.init_args.train={outcome_file}"])
    return prm, orm, (len(outcome_rows), sum(r["label"] for r in outcome_rows))


def verifier_folders(seed: int, args: argparse.Namespace, tmp: Path) -> tuple[Path, Path, Path]:
    """The seed's generator, PRM and ORM as exported folders under ``tmp`` (trained when missing, else reused)."""
    task = make_task(args)
    generator = generator_folder(seed, args, task, tmp)
    prm_folder, orm_folder = tmp / "prm" / "export", tmp / "orm" / "export"
    if not ((prm_folder / "config.json").exists() and (orm_folder / "config.json").exists()):
        tokenizer = load_tokenizer(str(generator))
        model = load_model(str(generator), "causal_lm", tokenizer=tokenizer)
        torch.manual_seed(seed)
        prm, orm, _ = train_verifiers(model, tokenizer, generator, seed, args, task, tmp)
        prm.export(prm_folder)
        orm.export(orm_folder)
    return generator, prm_folder, orm_folder


def run(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    start = time.perf_counter()
    task = make_task(args)
    folder = generator_folder(seed, args, task, tmp)
    tokenizer = load_tokenizer(str(folder))
    model = load_model(str(folder), "causal_lm", tokenizer=tokenizer)
    sampling = SamplingConfig(max_new_tokens=48, temperature=1.0)
    torch.manual_seed(seed)
    prm, orm, (solutions, right) = train_verifiers(model, tokenizer, folder, seed, args, task, tmp)

    if args.reuse_from:
        test, candidates = load_candidates(Path(args.reuse_from) / f"seed{seed}" / "best_of_n" / "candidates.jsonl")
    else:
        test = [r["prompt"] for _, r in task.records("prompt", "test", args.test_problems, seed=seed)]
        candidates = sample_candidates(model, tokenizer, test, args.pool, sampling)
    result = best_of_n(task, test, candidates, args.n, prm=prm, orm=orm, trials=args.trials, seed=seed)
    result.save(tmp / "best_of_n")
    print(f"\nseed {seed}: {time.perf_counter() - start:.0f} s; verifier data {solutions} solutions "
          f"({right} right answers)")
    return report(seed, task, result, args, tmp / "best_of_n")


def saved(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    """Re-tabulate (and diagnose) the best-of-N results a run saved in ``tmp``; trains nothing."""
    result = BestOfNResult.load(tmp / "best_of_n")
    result.accuracy = selection_accuracy(result.correct, args.n, result.scores, result.answers, args.trials, seed)
    print(f"\nseed {seed}: saved results in {tmp / 'best_of_n'}")
    return report(seed, make_task(args), result, args, tmp / "best_of_n")


def report(seed: int, task: Arithmetic, result: BestOfNResult, args: argparse.Namespace, folder: Path) -> dict:
    """Print one seed's table (and diagnostics); return its figures."""
    sample_accuracy = float(result.correct.float().mean())
    aucs = {name: auc(s.flatten(), result.correct.flatten()) for name, s in result.scores.items()}
    print(f"seed {seed}: generator sample accuracy {sample_accuracy:.3f}; test AUC "
          + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()))
    print(result.table(), flush=True)
    out = {"accuracy": result.accuracy, "sample_accuracy": sample_accuracy, "auc": aucs}
    if args.diagnose:
        out["diagnose"] = diagnose(task, result, args.n, args.trials, seed)
        (folder / "diagnose.json").write_text(json.dumps(out["diagnose"], indent=1))
        print(diagnose_tables(out["diagnose"]), flush=True)
    return out


def diagnose(task: Arithmetic, result: BestOfNResult, ns: list[int], trials: int, seed: int) -> dict:
    """Why best-of-N picks go wrong, per score selector and N, over the same draws as the accuracy table.

    ``by_n[selector][N]``: ``accuracy``, ``pass@N``, ``solved_if_solvable`` (accuracy / pass@N: the share of draws
    holding a right candidate whose pick is right), ``wrong_pick_score`` and ``best_right_score`` (medians over
    draws that hold a right candidate but pick a wrong one), ``pool_count_wrong_pick`` / ``pool_count_right_pick``
    (mean number of copies of the picked text among the ``M`` pool candidates: how rare the pick is),
    ``wrong_pick_kinds`` (share of each ``Arithmetic.error_kind`` among wrong picks) and ``weighted_vote`` (the
    accuracy of voting for the final answer with the most summed score in the draw, instead of the top text;
    ties random). ``distinct[N]``: mean
    number of distinct right and wrong texts in a draw. ``by_kind[selector][kind]`` — for ``correct``,
    ``compensated`` and each wrong kind split by the operator of the first wrong step (``end``: a step or the
    answer missing or extra): the kind's ``share`` of the pool, its ``mean_score``, and ``beats_right``, the share
    of its candidates, on problems with a right candidate, that outscore every right candidate of their problem
    (one such text in a draw beats the right ones).
    """
    correct, M = result.correct, result.correct.shape[1]
    kind_index = {k: i for i, k in enumerate(ERROR_KINDS)}
    kind_names = [[error_kind_and_op(task, p, c) for c in row] for p, row in zip(result.prompts, result.candidates)]
    kinds = torch.tensor([[kind_index[k.split(" ")[0]] for k in row] for row in kind_names])
    fine_names = sorted({k for row in kind_names for k in row}, key=lambda k: (kind_index[k.split(" ")[0]], k))
    fine = torch.tensor([[fine_names.index(k) for k in row] for row in kind_names])
    text_ids = torch.tensor(
        [[{t: i for i, t in enumerate(dict.fromkeys(row))}[c] for c in row] for row in result.candidates]
    )
    copies = (text_ids[:, :, None] == text_ids[:, None, :]).sum(-1)  # (P, M) copies of each text in the pool
    solvable_problem = correct.any(-1)
    answer_ids, answer_correct = _answer_ids(result.answers, correct)
    ties = torch.Generator().manual_seed(seed)  # not the draws' generator: the draws stay the table's
    sums: dict = {name: {n: {"hit": 0.0, "solvable": 0.0, "vote": 0.0, "wrong_pick_score": [], "best_right_score": [],
                             "count_wrong": [], "count_right": [], "kinds": torch.zeros(len(ERROR_KINDS))}
                         for n in ns} for name in result.scores}
    distinct = {n: {"right": 0.0, "wrong": 0.0} for n in ns}

    def inspect(n: int, draw: torch.Tensor, picks: dict[str, torch.Tensor]) -> None:
        right = correct.gather(1, draw)
        solvable = right.any(-1)
        seen = torch.nn.functional.one_hot(text_ids.gather(1, draw), M).bool()  # (P, n, M)
        distinct[n]["right"] += float((seen & right[..., None]).any(1).sum(-1).float().mean()) / trials
        distinct[n]["wrong"] += float((seen & ~right[..., None]).any(1).sum(-1).float().mean()) / trials
        for name, pick in picks.items():
            scores, acc = result.scores[name], sums[name][n]
            ok = correct.gather(1, pick[:, None]).squeeze(1)
            missed = ~ok & solvable
            best_right = torch.where(right, scores.gather(1, draw), -torch.inf).amax(-1)
            acc["hit"] += float(ok.float().mean()) / trials
            acc["vote"] += float(weighted_vote(answer_ids, answer_correct, draw, scores, ties).float().mean()) / trials
            acc["solvable"] += float(solvable.float().mean()) / trials
            acc["wrong_pick_score"].append(scores.gather(1, pick[:, None]).squeeze(1)[missed])
            acc["best_right_score"].append(best_right[missed])
            count = copies.gather(1, pick[:, None]).squeeze(1)
            acc["count_wrong"].append(count[~ok])
            acc["count_right"].append(count[ok])
            acc["kinds"] += torch.bincount(kinds.gather(1, pick[:, None]).squeeze(1)[~ok], minlength=len(ERROR_KINDS))

    selection_accuracy(correct, ns, result.scores, result.answers, trials, seed, inspect=inspect)  # the table's draws

    def stat(parts: list[torch.Tensor], how: str) -> float:
        values = torch.cat(parts).float()
        return float("nan") if not len(values) else float(values.median() if how == "median" else values.mean())

    by_n = {name: {n: {
        "accuracy": acc["hit"], "pass@N": acc["solvable"],
        "solved_if_solvable": acc["hit"] / max(acc["solvable"], 1e-9),
        "weighted_vote": acc["vote"],
        "wrong_pick_score": stat(acc["wrong_pick_score"], "median"),
        "best_right_score": stat(acc["best_right_score"], "median"),
        "pool_count_wrong_pick": stat(acc["count_wrong"], "mean"),
        "pool_count_right_pick": stat(acc["count_right"], "mean"),
        "wrong_pick_kinds": dict(zip(ERROR_KINDS, (acc["kinds"] / acc["kinds"].sum().clamp(min=1)).tolist())),
    } for n, acc in per_n.items()} for name, per_n in sums.items()}
    by_kind = {}
    for name, scores in result.scores.items():
        best_right = torch.where(correct, scores, -torch.inf).amax(-1, keepdim=True)
        beats = (scores > best_right) & ~correct & solvable_problem[:, None]
        by_kind[name] = {k: {
            "share": float((fine == i).float().mean()),
            "mean_score": float(scores[fine == i].mean()),
            "beats_right": float(beats[(fine == i) & solvable_problem[:, None]].float().mean())
            if ((fine == i) & solvable_problem[:, None]).any() else float("nan"),
        } for i, k in enumerate(fine_names)}
    return {"by_n": by_n, "distinct": distinct, "by_kind": by_kind}


def weighted_vote(answer_ids: torch.Tensor, answer_correct: torch.Tensor, draw: torch.Tensor, scores: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Per problem, is the drawn final answer with the largest summed score right? ``(P,)`` bool; ties random.

    ``answer_ids``/``answer_correct`` as from ``_answer_ids``; a draw without any answer is wrong.
    """
    drawn = answer_ids.gather(1, draw) + 1  # 0: no answer
    width = answer_correct.shape[1] + 1
    votes = torch.zeros(len(draw), width).scatter_add_(1, drawn, scores.gather(1, draw).float())[:, 1:]
    present = torch.zeros(len(draw), width, dtype=torch.bool).scatter_(1, drawn, True)[:, 1:]
    votes = torch.where(present, votes, -torch.inf)
    top = present & (votes == votes.amax(-1, keepdim=True))
    winner = (top.float() * (1 + torch.rand(top.shape, generator=generator))).argmax(-1, keepdim=True)
    return answer_correct.gather(1, winner).squeeze(1) & present.any(-1)


def error_kind_and_op(task: Arithmetic, prompt: str, completion: str) -> str:
    """``Arithmetic.error_kind``, for a wrong answer followed by the operator of the first wrong step (or ``end``)."""
    kind = task.error_kind(prompt, completion)
    if kind in ("correct", "compensated"):
        return kind
    steps, first = Problem.parse(prompt).steps, task.first_error(prompt, split_steps(completion))
    return f"{kind} {steps[first][0] if first is not None and first < len(steps) else 'end'}"


def diagnose_tables(d: dict) -> str:
    """Markdown tables of :func:`diagnose` (or of its mean over seeds)."""
    wrong_kinds = ERROR_KINDS[2:]  # a wrong pick has a wrong answer
    lines = ["| selector | N | accuracy | pass@N | accuracy / pass@N | median score: wrong pick / best right "
             "| pool copies: wrong / right pick | wrong picks: " + " / ".join(wrong_kinds) + " | score-weighted vote |",
             "|---" * 9 + "|"]
    for name, per_n in d["by_n"].items():
        for n, x in per_n.items():
            lines.append(f"| {name} | {n} | {x['accuracy']:.3f} | {x['pass@N']:.3f} | {x['solved_if_solvable']:.3f} | "
                         f"{x['wrong_pick_score']:.3f} / {x['best_right_score']:.3f} | "
                         f"{x['pool_count_wrong_pick']:.1f} / {x['pool_count_right_pick']:.1f} | "
                         + " / ".join(f"{x['wrong_pick_kinds'][k]:.2f}" for k in wrong_kinds)
                         + f" | {x['weighted_vote']:.3f} |")
    lines += ["", "distinct texts per draw (right / wrong): " + ", ".join(
        f"N={n} {x['right']:.2f} / {x['wrong']:.2f}" for n, x in d["distinct"].items()), ""]
    names = list(d["by_kind"])
    lines += ["| kind | share of pool | " + " | ".join(f"{n}: mean score / beats right" for n in names) + " |",
              "|---" * (2 + len(names)) + "|"]
    for k in sorted(d["by_kind"][names[0]], key=lambda k: (ERROR_KINDS.index(k.split(" ")[0]), k)):
        first = d["by_kind"][names[0]][k]
        lines.append(f"| {k} | {first['share']:.3f} | " + " | ".join(
            f"{d['by_kind'][n][k]['mean_score']:.3f} / {d['by_kind'][n][k]['beats_right']:.3f}" for n in names) + " |")
    return "\n".join(lines)


def mean_over(values: list):
    """Element-wise mean of nested dicts of numbers (NaNs and keys some dicts lack skipped)."""
    if isinstance(values[0], dict):
        return {k: mean_over([v[k] for v in values if k in v]) for k in dict.fromkeys(k for v in values for k in v)}
    finite = [v for v in values if not math.isnan(v)]
    return statistics.mean(finite) if finite else float("nan")


def over_seeds(accuracies: list[dict], ns: list[int]) -> dict[str, dict[int, tuple[float, float]]]:
    """Selector -> N -> (mean, population std) over seeds of each seed's mean accuracy (``accuracies``: one
    ``selection_accuracy`` result per seed)."""
    return {name: {n: (statistics.mean(a[name][n][0] for a in accuracies),
                       statistics.pstdev(a[name][n][0] for a in accuracies)) for n in ns} for name in accuracies[0]}


def accuracy_table(mean: dict[str, dict[int, tuple[float, float]]], ns: list[int]) -> str:
    """Markdown table of :func:`over_seeds`: one row per selector, ``mean ± std`` per N."""
    lines = ["| selector | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    lines += [f"| {name} | " + " | ".join(f"{by_n[n][0]:.3f} ± {by_n[n][1]:.3f}" for n in ns) + " |"
              for name, by_n in mean.items()]
    return "\n".join(lines)


SYSTEM = ("You are a careful assistant that solves arithmetic problems. Apply each operation from left to right, one "
          "operation per line, then write the final answer after four hash marks.\n")


def scoring_speed(args: argparse.Namespace) -> None:
    """Median CPU seconds of PRM and ORM best-of-N scoring with each prompt encoded once and without (interleaved)."""
    from lit_rlhf.models import ForwardLayout
    from lit_rlhf.modules import OutcomeRewardModel, ProcessRewardModel
    from lit_rlhf.rollout.verifiers import score_outcomes, score_steps

    task, rng = Arithmetic(min_steps=3, max_steps=5), random.Random(0)
    problems = list(task.problems("test", args.speed_problems))
    prompts = [SYSTEM + p.prompt for p in problems for _ in range(args.speed_candidates)]
    completions = [task.sample_solution(p, rng).completion for p in problems for _ in range(args.speed_candidates)]
    steps = [task.split_steps(c) for c in completions]
    texts = [task.solution_text(p, c) for p, c in zip(prompts, completions)]
    torch.manual_seed(0)
    prm, orm = ProcessRewardModel(), OutcomeRewardModel()
    layouts = {(name, kind): ForwardLayout(padding_free=False) for name in ("PRM", "ORM") for kind in ("once", "mask")}
    for name in ("PRM", "ORM"):
        layouts[name, "mask"].enabled["cached"] = False
    b = args.speed_batch_size
    prm_run = functools.partial(score_steps, prm, prompts, steps, b)
    orm_run = functools.partial(score_outcomes, orm, texts, b, groups=prompts)
    runs = {("PRM", "padded"): functools.partial(prm_run, shared_prefix=False),
            ("ORM", "padded"): functools.partial(orm_run, shared_prefix=False)}
    for kind in ("once", "mask"):
        runs["PRM", kind] = functools.partial(prm_run, layout=layouts["PRM", kind])
        runs["ORM", kind] = functools.partial(orm_run, layout=layouts["ORM", kind])
    # warm-up (the prompt-once layouts are checked here); the PRM's step probabilities, the ORM's scores
    outputs = {key: (lambda out: out[0] if isinstance(out, tuple) else out)(run()) for key, run in runs.items()}
    for (name, kind), layout in layouts.items():
        gap = (outputs[name, kind] - outputs[name, "padded"]).abs().max().item()
        print(f"{name} ({kind}): layout {layout.last!r}, largest difference to the padded forward {gap:.2e}")
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    keys = list(runs)
    for r in range(args.speed_repeats):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.process_time()
            runs[key]()
            times[key].append(time.process_time() - start)
    lengths = [len(prm.tokenizer(t)["input_ids"]) for t in texts]
    print(f"\n{args.speed_problems} problems × {args.speed_candidates} candidates, prompts "
          f"{min(len(prm.tokenizer(p)['input_ids']) for p in prompts)}–"
          f"{max(len(prm.tokenizer(p)['input_ids']) for p in prompts)} tokens, solution texts {min(lengths)}–"
          f"{max(lengths)} tokens, batch size {b}; median CPU-s of {args.speed_repeats} interleaved repeats")
    print("| verifier | default: prompt once (layout) | 4-D mask only (layout) | padded rows | default / padded | "
          "mask / padded |\n|---|---|---|---|---|---|")
    for name in ("PRM", "ORM"):
        once, mask, off = (statistics.median(times[name, kind]) for kind in ("once", "mask", "padded"))
        print(f"| {name} | {once:.3f} ({layouts[name, 'once'].last}) | {mask:.3f} ({layouts[name, 'mask'].last}) | "
              f"{off:.3f} | {once / off:.2f}× | {mask / off:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=1500)
    parser.add_argument("--generator-data", choices=["correct", "noisy"], default="noisy")
    parser.add_argument("--trap-prob", type=float, default=0.6, help="share of noisy solutions with the misconception")
    parser.add_argument("--slip-prob", type=float, default=0.05)
    parser.add_argument("--compensate-prob", type=float, default=0.3)
    parser.add_argument("--workdir", default=None, help="keep (and reuse) generators and results here")
    parser.add_argument("--reuse-from", default=None,
                        help="an earlier --workdir: take each seed's generator and test candidates from it")
    parser.add_argument("--saved", action="store_true", help="train nothing: re-tabulate the results in --workdir")
    parser.add_argument("--diagnose", action="store_true", help="per-N diagnostics of the picks")
    parser.add_argument("--train-problems", type=int, default=1000)
    parser.add_argument("--train-samples", type=int, default=8)
    parser.add_argument("--verifier-epochs", type=int, default=1)
    parser.add_argument("--test-problems", type=int, default=200)
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "prm_vs_orm.png"))
    parser.add_argument("--scoring-speed", action="store_true",
                        help="only time PRM/ORM scoring with and without encoding each prompt once")
    parser.add_argument("--speed-problems", type=int, default=8)
    parser.add_argument("--speed-candidates", type=int, default=16)
    parser.add_argument("--speed-repeats", type=int, default=7)
    parser.add_argument("--speed-batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.scoring_speed:
        torch.set_num_threads(1)
        scoring_speed(args)
        return
    if args.saved and not args.workdir:
        parser.error("--saved needs --workdir")
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        if args.workdir:
            (Path(args.workdir) / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            runs.append((saved if args.saved else run)(seed, args, Path(args.workdir) / f"seed{seed}"))
            continue
        with tempfile.TemporaryDirectory() as name:
            runs.append(run(seed, args, Path(name)))
    mean = over_seeds([r["accuracy"] for r in runs], args.n)
    print(f"\nmean ± std over seeds {args.seeds} (each seed: mean of {args.trials} draws); generator sample accuracy "
          + ", ".join(f"{r['sample_accuracy']:.3f}" for r in runs) + "; verifier AUC "
          + ", ".join(f"{k} {statistics.mean(r['auc'][k] for r in runs):.3f}" for k in runs[0]["auc"]))
    print(accuracy_table(mean, args.n))
    if args.diagnose:
        tables = diagnose_tables(mean_over([r["diagnose"] for r in runs]))
        print(f"\ndiagnostics, mean over seeds {args.seeds}:\n" + tables)
    plot_best_of_n(mean, args.plot, title=f"best-of-N on arithmetic ({len(runs)} seeds)")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
