"""Let's Verify Step by Step, in miniature: best-of-N with a PRM vs an ORM vs majority voting.

    python benchmarks/prm_vs_orm.py [--seeds 0 1 2] [--sft-steps 1500] [--generator-data noisy|correct] [--workdir DIR]

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
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lit_rlhf.cli import make_cli
from lit_rlhf.eval.best_of_n import best_of_n, plot_best_of_n, sample_candidates
from lit_rlhf.models import load_model, load_tokenizer
from lit_rlhf.rollout.generation import SamplingConfig
from lit_rlhf.tasks import Arithmetic

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


def run(seed: int, args: argparse.Namespace, tmp: Path) -> dict:
    start = time.perf_counter()
    task = Arithmetic(min_steps=2, max_steps=3, trap_rule="first_multiply", trap_prob=args.trap_prob,
                      slip_prob=args.slip_prob, compensate_prob=args.compensate_prob)
    folder = generator_folder(seed, args, task, tmp)
    tokenizer = load_tokenizer(str(folder))
    model = load_model(str(folder), "causal_lm", tokenizer=tokenizer)
    sampling = SamplingConfig(max_new_tokens=48, temperature=1.0)
    torch.manual_seed(seed)

    # verifier training data: generator samples on training problems (other problems than the SFT ones)
    problems = list(task.problems("train", args.train_problems, seed=1000 + seed))
    samples = sample_candidates(model, tokenizer, [p.prompt for p in problems], args.train_samples, sampling)
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

    test = [r["prompt"] for _, r in task.records("prompt", "test", args.test_problems, seed=seed)]
    candidates = sample_candidates(model, tokenizer, test, args.pool, sampling)
    result = best_of_n(task, test, candidates, args.n, prm=prm, orm=orm, trials=args.trials, seed=seed)
    result.save(tmp / "best_of_n")
    sample_accuracy = float(result.correct.float().mean())
    aucs = {name: auc(s.flatten(), result.correct.flatten()) for name, s in result.scores.items()}
    print(f"\nseed {seed}: {time.perf_counter() - start:.0f} s; generator sample accuracy {sample_accuracy:.3f}; "
          f"verifier data {len(outcome_rows)} solutions ({sum(r['label'] for r in outcome_rows)} right answers); "
          "test AUC " + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items()))
    print(result.table(), flush=True)
    return {"accuracy": result.accuracy, "sample_accuracy": sample_accuracy, "auc": aucs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=1500)
    parser.add_argument("--generator-data", choices=["correct", "noisy"], default="noisy")
    parser.add_argument("--trap-prob", type=float, default=0.6, help="share of noisy solutions with the misconception")
    parser.add_argument("--slip-prob", type=float, default=0.05)
    parser.add_argument("--compensate-prob", type=float, default=0.3)
    parser.add_argument("--workdir", default=None, help="keep (and reuse) generators and results here")
    parser.add_argument("--train-problems", type=int, default=1000)
    parser.add_argument("--train-samples", type=int, default=8)
    parser.add_argument("--verifier-epochs", type=int, default=1)
    parser.add_argument("--test-problems", type=int, default=200)
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "prm_vs_orm.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        if args.workdir:
            (Path(args.workdir) / f"seed{seed}").mkdir(parents=True, exist_ok=True)
            runs.append(run(seed, args, Path(args.workdir) / f"seed{seed}"))
            continue
        with tempfile.TemporaryDirectory() as name:
            runs.append(run(seed, args, Path(name)))
    names = list(runs[0]["accuracy"])
    mean = {name: {n: (statistics.mean(r["accuracy"][name][n][0] for r in runs),
                       statistics.pstdev(r["accuracy"][name][n][0] for r in runs)) for n in args.n} for name in names}
    print(f"\nmean ± std over seeds {args.seeds} (each seed: mean of {args.trials} draws); generator sample accuracy "
          + ", ".join(f"{r['sample_accuracy']:.3f}" for r in runs) + "; verifier AUC "
          + ", ".join(f"{k} {statistics.mean(r['auc'][k] for r in runs):.3f}" for k in runs[0]["auc"]))
    print("| selector | " + " | ".join(f"N={n}" for n in args.n) + " |\n|---|" + "---|" * len(args.n))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{mean[name][n][0]:.3f} ± {mean[name][n][1]:.3f}" for n in args.n) + " |")
    plot_best_of_n(mean, args.plot, title=f"best-of-N on arithmetic ({len(runs)} seeds)")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
