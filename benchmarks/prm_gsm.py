"""Let's Verify Step by Step on GSM8K-style word problems: a PRM vs an ORM vs majority voting, SmolLM2-135M + LoRA.

    python benchmarks/prm_gsm.py --workdir runs/prm_gsm_bench [--seeds 0 1 2] [--steps 250] [--test-problems 128]
        [--pool 16] [--n 1 2 4 8] [--trials 100] [--model NAME] [--set KEY=VALUE ...] [--plot PNG]
    python benchmarks/prm_gsm.py --workdir runs/prm_gsm_bench --saved

Needs ``pip install 'lit-rlhf[gsm]'`` (reasoning-gym) and ``lit-rlhf assets`` (SmolLM2). Per seed N, under
``WORKDIR/seedN``:

1. ``prm/`` and ``orm/``: the PRM (``configs/prm_gsm.yaml``: each step correct or wrong, up to the first error) and
   the ORM (``configs/orm_gsm.yaml``: final-answer correctness), both on the task's mix of gold, slipped and
   compensated (right answer, wrong process) solutions, each ``lit-rlhf fit --ckpt_path last`` with
   ``seed_everything`` and data seed N and ``max_steps`` = ``--steps``. A killed fit resumes from its ``last.ckpt``,
   written every ``--checkpoint-every`` steps (the configs' own checkpoints come only with validation and are not
   ``last``: ``--ckpt_path last`` would start over). A larger ``--steps`` extends a finished run from its
   ``last.ckpt`` (step count, optimizer state, data order and W&B run go on). The cosine schedule (and the warm-up,
   a fraction of it) spans ``max_steps``: an extension re-stretches it over the new total. Its first step still uses
   the finished run's last LR (the minimum), then the LR jumps to the longer curve's value at the step reached and
   decays along it (250 -> 500 steps: from 0.1x to 0.58x the peak, a partial warm restart; a run shorter than the
   new warm-up goes back into warm-up), so the result differs from a straight run of the new length. For an
   extension equal to a straight run use a constant schedule with warm-up in steps (``--set
   model.init_args.schedule=constant model.init_args.warmup=12``), or choose the final ``--steps`` up front.
2. ``test`` of each verifier on the task's test split: PRM ``step_accuracy`` and ``first_error_accuracy``, ORM
   ``accuracy``.
3. ``pool.jsonl``: ``--pool`` solutions of each of ``--test-problems`` held-out problems drawn by ``GSM.sample``
   (the config's solution mix) under ``random.Random(N)``; ``kinds`` says which are gold, slipped or compensated.
4. ``best_of_n/``: ``lit-rlhf best-of-n --candidates pool.jsonl`` with both verifiers: PRM (product, min), ORM,
   majority voting and pass@N for each ``--n``, ``--trials`` random draws per N; plus the *process accuracy* (the
   pick is a gold solution, not a compensated one) and each verifier's ROC AUC over the pool, for right vs wrong
   final answers and for gold vs other solutions.
5. ``results.json``: every figure and the process CPU seconds of each stage; a stage whose inputs have not changed
   is skipped, so a rerun resumes.

Prints each seed's tables, then the mean ± std over seeds, and writes ``--plot`` (default ``WORKDIR/prm_gsm.png``).
``--saved`` trains and scores nothing: it re-tabulates the saved scores (with any ``--n`` and ``--trials``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import yaml
from prm_vs_orm import accuracy_table, auc, over_seeds, write

from lit_rlhf.cli import make_cli
from lit_rlhf.eval.best_of_n import BestOfNResult, plot_best_of_n, selection_accuracy
from lit_rlhf.pipelines import best_of_n
from lit_rlhf.tasks import GSM

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"prm": "prm_gsm.yaml", "orm": "orm_gsm.yaml"}
HELD_OUT = {"prm": ("test/step_accuracy", "test/first_error_accuracy"), "orm": ("test/accuracy",)}


def make_task() -> GSM:
    """The gsm task with the verifier configs' solution mix."""
    config = yaml.safe_load((ROOT / "configs" / CONFIGS["prm"]).read_text())
    return GSM(**config["data"]["init_args"]["task"]["init_args"])


def fit_args(name: str, seed: int, args: argparse.Namespace, folder: Path) -> list[str]:
    """The ``lit-rlhf fit`` command line of verifier ``name`` (``prm`` or ``orm``) in its run folder."""
    model = [f"--model.init_args.model.name={args.model}"] if args.model else []
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": args.checkpoint_every}}
    return ["fit", "--config", str(ROOT / "configs" / CONFIGS[name]), f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}", f"--trainer.max_steps={args.steps}",
            f"--trainer.default_root_dir={folder}", f"--trainer.logger.init_args.save_dir={folder}",
            f"--trainer.callbacks+={json.dumps(checkpoint)}", "--trainer.enable_progress_bar=false", "--ckpt_path=last",
            *model, *(f"--{kv}" for kv in args.set)]


def train(name: str, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Fit verifier ``name`` to ``--steps`` steps (new, resumed or extended), then test it on the held-out split."""
    import wandb

    start = time.process_time()
    try:
        with mock.patch.object(sys, "argv", sys.argv[:1]):  # the command line is fit_args, not the benchmark's
            cli = make_cli(fit_args(name, seed, args, folder))
        metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    finally:
        wandb.finish()  # a live wandb.run would be reused by the next fit of this process
    return {"steps": cli.trainer.global_step, "test": {k: float(v) for k, v in metrics.items()},
            "cpu_s": time.process_time() - start}


def make_pool(task: GSM, seed: int, args: argparse.Namespace, path: Path) -> None:
    """``--pool`` ``GSM.sample`` solutions of each of ``--test-problems`` test problems, written to ``path``."""
    rng, rows = random.Random(seed), []
    for problem in task.problems("test", args.test_problems, seed=seed):
        solutions = [task.sample(problem, rng) for _ in range(args.pool)]
        rows.append({"prompt": problem.question, "completions": [s.completion for s in solutions],
                     "kinds": [s.kind for s in solutions]})
    write(path, rows)


def tabulate(seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Best-of-N figures of the scores saved in ``folder``: accuracy (right final answer) and process accuracy
    (a gold pick) per selector and N over the same draws, pool make-up, and each verifier's ROC AUCs."""
    result = BestOfNResult.load(folder / "best_of_n")
    kinds = [json.loads(line)["kinds"] for line in (folder / "pool.jsonl").read_text().splitlines()]
    gold = torch.tensor([[k == "correct" for k in row] for row in kinds])
    process: dict[str, dict[int, list[float]]] = {name: {n: [] for n in args.n} for name in [*result.scores, "pass@N"]}

    def inspect(n: int, draw: torch.Tensor, picks: dict[str, torch.Tensor]) -> None:
        for name, pick in picks.items():
            process[name][n].append(float(gold.gather(1, pick[:, None]).float().mean()))
        process["pass@N"][n].append(float(gold.gather(1, draw).any(-1).float().mean()))

    accuracy = selection_accuracy(result.correct, args.n, result.scores, result.answers, args.trials, seed, inspect)
    flat = [k for row in kinds for k in row]
    return {
        "accuracy": accuracy,
        "process_accuracy": {name: {n: (statistics.mean(v), statistics.pstdev(v)) for n, v in by_n.items()}
                             for name, by_n in process.items()},
        "auc": {name: auc(s.flatten(), result.correct.flatten()) for name, s in result.scores.items()},
        "auc_gold": {name: auc(s.flatten(), gold.flatten()) for name, s in result.scores.items()},
        "pool": {kind: flat.count(kind) / len(flat) for kind in ("correct", "slip", "compensated")},
    }


def run_seed(seed: int, args: argparse.Namespace, folder: Path) -> dict:
    """Every stage of one seed that its ``results.json`` does not already hold; returns its figures."""
    path = folder / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    settings = {"model": args.model, "set": args.set}
    if results.setdefault("settings", settings) != settings:
        raise SystemExit(f"{path}: trained with {results['settings']}, not {settings}: use another --workdir")
    for name in CONFIGS:
        done = results.get(name, {}).get("steps")
        if done is not None and done > args.steps:
            raise SystemExit(f"{folder / name} is trained to {done} steps, more than --steps {args.steps}")
        if done != args.steps:
            results[name] = train(name, seed, args, folder / name)
            path.write_text(json.dumps(results, indent=1))
    task = make_task()
    make_pool(task, seed, args, folder / "pool.jsonl")  # deterministic; also tells the task its problems' answers
    inputs = {"prm_steps": results["prm"]["steps"], "orm_steps": results["orm"]["steps"], "n": args.n,
              "test_problems": args.test_problems, "pool": args.pool, "trials": args.trials}
    if results.get("best_of_n", {}).get("inputs") != inputs:
        start = time.process_time()
        best_of_n(str(folder / "best_of_n"), candidates=str(folder / "pool.jsonl"), task=task, prm=str(folder / "prm"),
                  orm=str(folder / "orm"), n=args.n, trials=args.trials, seed=seed, batch_size=args.batch_size)
        results["best_of_n"] = {"inputs": inputs, "cpu_s": time.process_time() - start}
    figures = tabulate(seed, args, folder)
    results["best_of_n"].update(figures)
    path.write_text(json.dumps(results, indent=1))
    return {**results, "best_of_n": {**results["best_of_n"], **figures}}  # N keys as ints


def held_out(r: dict) -> dict[str, float]:
    """One seed's held-out verifier figures: test-split metrics, pool AUCs and steps trained."""
    out = {f"{name.upper()} {key}": r[name]["test"][key] for name, keys in HELD_OUT.items() for key in keys}
    out.update({f"AUC right answer: {k}": v for k, v in r["best_of_n"]["auc"].items()})
    out.update({f"AUC gold solution: {k}": v for k, v in r["best_of_n"]["auc_gold"].items()})
    return {**out, "PRM steps": r["prm"]["steps"], "ORM steps": r["orm"]["steps"]}


def report(runs: dict[int, dict], args: argparse.Namespace) -> None:
    """Each seed's tables, then mean ± std over seeds, and the plot."""
    for seed, r in runs.items():
        print(f"\nseed {seed}: pool " + ", ".join(f"{k} {v:.2f}" for k, v in r["best_of_n"]["pool"].items())
              + "".join(f"\n{k}: {v:.3f}" if isinstance(v, float) else f"\n{k}: {v}" for k, v in held_out(r).items())
              + "\nbest-of-N accuracy (right final answer)\n" + accuracy_table(r["best_of_n"]["accuracy"], args.n)
              + "\nprocess accuracy (gold pick)\n" + accuracy_table(r["best_of_n"]["process_accuracy"], args.n))
    figures = [held_out(r) for r in runs.values()]
    print(f"\nmean ± std over seeds {list(runs)} (each seed: mean of {args.trials} draws per N)\n"
          "| held out | mean ± std |\n|---|---|")
    for key in figures[0]:
        values = [f[key] for f in figures]
        print(f"| {key} | {statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f} |")
    mean = over_seeds([r["best_of_n"]["accuracy"] for r in runs.values()], args.n)
    print("\nbest-of-N accuracy (right final answer)\n" + accuracy_table(mean, args.n))
    process = over_seeds([r["best_of_n"]["process_accuracy"] for r in runs.values()], args.n)
    print("\nprocess accuracy (the pick is a gold solution)\n" + accuracy_table(process, args.n))
    plot = args.plot or str(Path(args.workdir) / "prm_gsm.png")
    plot_best_of_n(mean, plot, title=f"best-of-N on GSM, SmolLM2-135M + LoRA ({len(runs)} seeds)")
    print(f"plot: {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run folders, pools and results, one folder per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps of each verifier (a rerun extends)")
    parser.add_argument("--checkpoint-every", type=int, default=25,
                        help="write last.ckpt every this many steps (a killed fit resumes from it)")
    parser.add_argument("--test-problems", type=int, default=128)
    parser.add_argument("--pool", type=int, default=16, help="candidate solutions per test problem")
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=100, help="random draws of N candidates per N")
    parser.add_argument("--batch-size", type=int, default=16, help="candidates per verifier forward when scoring")
    parser.add_argument("--model", default=None, help="backbone instead of the configs' (e.g. lit-rlhf:tiny-llama)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="fit overrides for both verifiers, e.g. trainer.val_check_interval=50")
    parser.add_argument("--saved", action="store_true", help="train and score nothing: re-tabulate saved scores")
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {}
    for seed in args.seeds:
        folder = Path(args.workdir) / f"seed{seed}"
        if args.saved:
            results = json.loads((folder / "results.json").read_text())
            runs[seed] = {**results, "best_of_n": tabulate(seed, args, folder)}
        else:
            folder.mkdir(parents=True, exist_ok=True)
            runs[seed] = run_seed(seed, args, folder)
    report(runs, args)


if __name__ == "__main__":
    main()
