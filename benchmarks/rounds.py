"""Iterated alignment with the gold grader as annotator: does updating the reward model each round keep it accurate on
the policy's own samples, and does that turn into gold reward? And is online DPO better than offline DPO at the same
number of labels?

Gold task (``--task``): ``letters`` (default), :class:`LetterCount`, the proxy-vs-gold setting of
``ppo_benchmark.py curves`` as a task (gold reward 1 for 1–3 'z' characters in the completion), from a tiny Llama
SFT for ``--start-steps`` (200) steps on completions with about 0.75 z's each (gold ≈ 0.5); or ``arithmetic``, from
the quickstart recipe stopped at ``--start-steps`` (700) of 1,500 steps, as in ``ppo_benchmark.py gold`` (there a
reward model trained on one round's ~110 comparisons orders the policy's samples below chance: nothing to learn at
this budget). Each arm runs ``lit-rlhf rounds`` (:mod:`lit_rlhf.rounds`) for ``--rounds`` rounds; per round it
records the gold reward and the reward model's mean score (proxy) of the policy's samples on ``--eval-prompts``
validation prompts, and the reward model's accuracy on pairs of those samples judged by gold.

Arms (``--arms``):

* ``frozen`` — (a) the reward model is trained on round 0's gold-labelled comparisons and kept;
* ``retrain`` — (b) Llama 2: each round labels the new samples and retrains the reward model on all comparisons;
* ``meta_rm`` — (c) Secrets of RLHF II: after round 0, the reward model is adapted each round with MetaRM's meta step
  on the new policy samples (no new labels);
* ``online_dpo`` — (d) online DPO (OAIF): every step samples 2 completions per prompt from the current policy and the
  gold grader labels the pair; the reference is the start policy;
* ``offline_dpo`` — (d) DPO on pairs of 2 samples per prompt from the start policy, labelled once by the gold grader,
  with as many label queries as ``online_dpo`` makes over all its rounds (one round: the same steps in total;
  compare it with ``online_dpo``'s last round, which has spent the same labels).

(a)–(c) improve the policy by ``--policy-method`` (rejection sampling, best of ``--k``, by default) against their
reward model. (d)'s reward model is trained on round 0's comparisons only to measure the proxy reward. One json for
all arms and seeds (written after every run; a killed benchmark resumes each loop where it stopped):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/rounds.py run --task letters --start-steps 200 \\
        --max-new-tokens 16 --policy-lr 1e-3 --dpo-lr 1e-4 --arms frozen retrain meta_rm online_dpo offline_dpo \\
        --seeds 0 1 2 --rounds 5 --folder /tmp/rounds_bench_l --output benchmarks/data/rounds/rounds.json
    python benchmarks/rounds.py table benchmarks/data/rounds/rounds.json
    python benchmarks/rounds.py plot benchmarks/data/rounds/rounds.json --out benchmarks/rounds.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_benchmark import TASK, start_policy  # noqa: E402  (the same start policy and task settings)

from lit_rlhf.tasks.base import Task  # noqa: E402


class LetterCount(Task):
    """The proxy-vs-gold setting of ``ppo_benchmark.py curves`` as a task: gold reward 1 if the completion has
    ``low``–``high`` (1–3) ``letter`` ('z') characters, else 0; "more z" is what a reward model learns from pairs of
    the start policy's samples (mostly 0 vs 1–2 z), and it is wrong past 3.

    Prompts: 4 random letters and ':'; ``sft`` records add a completion of ``length`` characters, each ``letter``
    with probability ``rate`` and otherwise uniform over ``alphabet`` (the start policy is SFT on them: about half its
    samples have no z, so its gold reward starts near 0.5).
    """

    name = "letter_count"
    kinds = ("sft", "prompt")

    def __init__(self, letter: str = "z", low: int = 1, high: int = 3, length: int = 12, rate: float = 1 / 16,
                 alphabet: str = "abcdefghijklmno") -> None:
        self.letter, self.low, self.high, self.length, self.rate = letter, low, high, length, rate
        self.alphabet = alphabet

    def records(self, kind: str, split: str, n: int, seed: int = 0):
        import random

        self.check_kind(kind)
        rng = random.Random(f"{self.name}/{kind}/{split}/{seed}")
        for i in range(n):
            record = {"prompt": "".join(rng.choice(self.alphabet) for _ in range(4)) + ":"}
            if kind == "sft":
                record["completion"] = "".join(self.letter if rng.random() < self.rate else rng.choice(self.alphabet)
                                               for _ in range(self.length))
            yield f"task:{self.name}/{split}#{i}", record

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([float(self.low <= c.count(self.letter) <= self.high) for c in completions])


def letters_start_policy(folder: Path, steps: int) -> Path:
    """The tiny Llama SFT on :class:`LetterCount`'s ``sft`` records (seed 0, ``steps`` steps of 32), exported;
    reused when ``folder/policy`` exists."""
    import lightning as L

    from lit_rlhf.data import SFTDataModule
    from lit_rlhf.modules import SFT

    out = folder / "policy"
    if not (out / "config.json").exists():
        L.seed_everything(0)
        module = SFT(model="lit-rlhf:tiny-llama", gold_eval_batches=0,
                     optimizer=lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.0))
        dm = SFTDataModule(task=LetterCount(), task_sizes={"train": 32 * steps, "val": 0, "test": 0}, max_length=32,
                           batch_size=32)
        L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                  num_sanity_val_steps=0).fit(module, dm)
        module.export(out)
    return out


RM_ARMS = {"frozen": "frozen", "retrain": "retrain", "meta_rm": "meta_rm"}
ARMS = (*RM_ARMS, "online_dpo", "offline_dpo")
METRICS = ("gold_reward", "proxy_reward", "rm_accuracy")


def settings(arm: str, policy: Path, seed: int, folder: Path, args: argparse.Namespace):
    """The :class:`~lit_rlhf.rounds.RoundsSettings` of one arm and seed."""
    from lit_rlhf.rounds import LabelSettings, PolicySettings, RewardModelSettings, RoundsSettings
    from lit_rlhf.tasks import Arithmetic

    rm = dict(model="lit-rlhf:tiny-llama", steps=args.rm_steps, batch_size=16, lr=args.rm_lr, meta_lr=args.meta_lr,
              shifted_batch_size=4, max_length=128, init_args={"margin": "none"})
    task = LetterCount() if args.task == "letters" else Arithmetic(**TASK)
    common = dict(policy=str(policy), task=task, samples_per_prompt=args.samples,
                  sampling={"max_new_tokens": args.max_new_tokens, "temperature": 1.0},
                  label=LabelSettings(noise=args.label_noise), eval_prompts=args.eval_prompts,
                  eval_samples=args.eval_samples, checkpoint_every=args.checkpoint_every, wandb=args.wandb,
                  project="lit-rlhf-rounds", seed=seed, accelerator="cpu", output=str(folder / arm / f"seed{seed}"))
    from lit_rlhf.rollout.generation import SamplingConfig

    common["sampling"] = SamplingConfig(**common["sampling"])
    if arm in RM_ARMS:
        init = {"k": args.k, "sft_steps": 4, "sft_batch_size": 16} if args.policy_method == "rejection_sampling" \
            else {"group_size": args.k}
        policy_update = PolicySettings(method=args.policy_method, steps=args.policy_steps, batch_size=args.batch,
                                       lr=args.policy_lr, init_args=init)
        return RoundsSettings(rounds=args.rounds, prompts=args.prompts, reward_model=RewardModelSettings(
            update=RM_ARMS[arm], **rm), policy_update=policy_update, **common)
    if arm == "online_dpo":
        policy_update = PolicySettings(method="online_dpo", reward="gold", reference="fixed", steps=args.dpo_steps,
                                       batch_size=args.batch, lr=args.dpo_lr,
                                       init_args={"group_size": 2, "beta": args.beta})
        return RoundsSettings(rounds=args.rounds, prompts=args.prompts, reward_model=RewardModelSettings(
            update="frozen", **rm), policy_update=policy_update, **common)
    # offline: every label query at once from the start policy (2 samples per prompt: one query each)
    queries = args.rounds * args.dpo_steps * args.batch
    policy_update = PolicySettings(method="dpo", steps=args.rounds * args.dpo_steps, batch_size=args.batch,
                                   lr=args.dpo_lr, init_args={"beta": args.beta})
    return RoundsSettings(**{**common, "samples_per_prompt": 2}, rounds=1, prompts=queries,
                          reward_model=RewardModelSettings(update="frozen", **rm), policy_update=policy_update)


def label_queries(arm: str, summary: dict[str, Any], args: argparse.Namespace) -> list[int]:
    """Cumulative annotator label queries after each round (pairs shown to the gold grader for training)."""
    out, total = [], 0
    for r in summary["rounds"]:
        if arm == "online_dpo":
            total += r["stages"]["policy"].get("online_labels", 0)
        elif arm == "offline_dpo":
            total += summary["settings"]["prompts"]
        else:
            total += r["labels"]
        out.append(total)
    return out


def run(args: argparse.Namespace) -> None:
    from lit_rlhf.rounds import run_rounds

    folder = Path(args.folder or tempfile.mkdtemp(prefix="rounds_"))
    torch.set_num_threads(1)
    if args.start_steps is None:
        args.start_steps = 200 if args.task == "letters" else 700
    policy = (letters_start_policy if args.task == "letters" else start_policy)(folder, args.start_steps)
    out = Path(args.output) if args.output else None
    result = json.loads(out.read_text()) if out is not None and out.exists() else {"runs": {}}
    result["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    for seed in args.seeds:
        for arm in args.arms:
            key = f"{arm}/{seed}"
            if key in result["runs"] and not args.rerun:
                continue
            clock, cpu = time.perf_counter(), time.process_time()
            summary = run_rounds(settings(arm, policy, seed, folder, args))
            result["runs"][key] = {"start": summary["start"], "rounds": [
                {"round": r["round"], **{m: r.get(m) for m in METRICS}, "rm_accuracy_before": r["rm_accuracy_before"],
                 "labels_total": r["labels_total"]} for r in summary["rounds"]],
                "label_queries": label_queries(arm, summary, args),
                "wall_s": time.perf_counter() - clock, "cpu_s": time.process_time() - cpu}
            if out is not None:  # after every run: a killed benchmark keeps what it finished
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=1))
    table(result)


def load(paths: list[str]) -> dict[str, Any]:
    """The runs of one or more result jsons (e.g. one per process), merged; a run in two files is an error."""
    merged: dict[str, Any] = {"runs": {}, "args": []}
    for path in paths:
        result = json.loads(Path(path).read_text())
        twice = set(result["runs"]) & set(merged["runs"])
        if twice:
            raise SystemExit(f"{path}: runs {sorted(twice)} are also in an earlier file")
        merged["runs"].update(result["runs"])
        merged["args"].append(result.get("args"))
    return merged


def _by_arm(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for key, run_ in result["runs"].items():
        by_arm.setdefault(key.split("/")[0], []).append(run_)
    return by_arm


def _cell(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def table(result: dict[str, Any] | list[str]) -> None:
    """Per arm and round: gold reward, proxy reward, RM accuracy on the policy's samples after the round and, before
    the reward model's update, the previous round's reward model on the new samples (mean ± std over seeds), label
    queries so far; the start policy's gold reward first."""
    if isinstance(result, list):
        result = load(result)
    print(f"{'arm':<12}{'round':>6}{'gold reward':>18}{'proxy reward':>18}{'RM acc (own samples)':>22}"
          f"{'prev. RM acc':>18}{'labels':>9}{'seeds':>7}")
    for arm, runs in _by_arm(result).items():
        print(f"{arm:<12}{'start':>6}{_cell([r['start']['gold_reward'] for r in runs]):>18}")
        for i in range(max(len(r["rounds"]) for r in runs)):
            rows = [r["rounds"][i] for r in runs if len(r["rounds"]) > i]
            labels = statistics.fmean(r["label_queries"][i] for r in runs if len(r["rounds"]) > i)
            print(f"{'':<12}{i:>6}{_cell([x['gold_reward'] for x in rows]):>18}"
                  f"{_cell([x['proxy_reward'] for x in rows]):>18}{_cell([x['rm_accuracy'] for x in rows]):>22}"
                  f"{_cell([x['rm_accuracy_before'] for x in rows]):>18}{labels:>9.0f}{len(rows):>7}")
        print(f"{'':<12}CPU-s per run {statistics.fmean(r['cpu_s'] for r in runs):.0f}")
    online_vs_offline(result)


def online_vs_offline(result: dict[str, Any]) -> None:
    """Online DPO's last round against offline DPO (the same label queries), paired per seed."""
    runs = result["runs"]
    seeds = sorted({k.split("/")[1] for k in runs if k.startswith("online_dpo/")}
                   & {k.split("/")[1] for k in runs if k.startswith("offline_dpo/")})
    if not seeds:
        return
    online = [runs[f"online_dpo/{s}"]["rounds"][-1]["gold_reward"] for s in seeds]
    offline = [runs[f"offline_dpo/{s}"]["rounds"][-1]["gold_reward"] for s in seeds]
    labels = [(runs[f"online_dpo/{s}"]["label_queries"][-1], runs[f"offline_dpo/{s}"]["label_queries"][-1])
              for s in seeds]
    diff = [a - b for a, b in zip(online, offline)]
    print(f"online vs offline DPO at equal labels (online {labels[0][0]}, offline {labels[0][1]} label queries, seed "
          f"{seeds[0]}): gold {_cell(online)} vs {_cell(offline)}; paired difference {_cell(diff)}, online ahead on "
          f"{sum(d > 0 for d in diff)}/{len(diff)} seeds")


def plot(paths: list[str], out: str) -> None:
    """Gold reward, proxy reward and RM accuracy on the policy's own samples per round (start = round −1);
    mean and range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = load(paths)
    titles = {"gold_reward": "gold reward (accuracy)", "proxy_reward": "proxy reward (RM score)",
              "rm_accuracy": "RM accuracy on the policy's samples"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.4 * len(METRICS), 3.4))
    for arm, runs in _by_arm(result).items():
        n = min(len(r["rounds"]) for r in runs)
        for ax, metric in zip(axes, METRICS):
            start = [r["start"].get(metric) for r in runs] if metric == "gold_reward" else None
            series = [[(start[j] if start else None)] + [r["rounds"][i][metric] for i in range(n)]
                      for j, r in enumerate(runs)]
            x = list(range(-1, n))
            keep = [i for i in range(len(x)) if all(s[i] is not None for s in series)]
            values = torch.tensor([[s[i] for i in keep] for s in series], dtype=torch.float)
            xs = [x[i] for i in keep]
            line, = ax.plot(xs, values.mean(0), marker="o", label=arm)
            ax.fill_between(xs, values.min(0).values, values.max(0).values, color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    for ax, metric in zip(axes, METRICS):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(titles[metric])
        ax.set_xlabel("round (−1 = start)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run each arm's rounds from the SFT start and evaluate against the gold grader")
    r.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--task", default="letters", choices=("letters", "arithmetic"),
                   help="the gold task: LetterCount (1-3 z's) or arithmetic (quickstart's)")
    r.add_argument("--folder", default=None, help="where the start policy and the loops live (reused when present)")
    r.add_argument("--start-steps", type=int, default=None, help="SFT steps of the start policy (letters 200, "
                   "arithmetic 700)")
    r.add_argument("--prompts", type=int, default=64, help="fresh prompts sampled per round")
    r.add_argument("--samples", type=int, default=4, help="samples per prompt (all their pairs are labelled)")
    r.add_argument("--label-noise", type=float, default=0.0)
    r.add_argument("--max-new-tokens", type=int, default=48)
    r.add_argument("--rm-steps", type=int, default=100)
    r.add_argument("--rm-lr", type=float, default=1e-3)
    r.add_argument("--meta-lr", type=float, default=0.01)
    r.add_argument("--policy-method", default="rejection_sampling", choices=("rejection_sampling", "grpo", "ppo"))
    r.add_argument("--policy-steps", type=int, default=40)
    r.add_argument("--policy-lr", type=float, default=1e-4)
    r.add_argument("--k", type=int, default=4, help="best of K (rejection sampling) or the group size (GRPO)")
    r.add_argument("--batch", type=int, default=16, help="prompts per policy step (pairs per DPO step)")
    r.add_argument("--dpo-steps", type=int, default=40, help="DPO steps per round (online DPO)")
    r.add_argument("--dpo-lr", type=float, default=3e-5)
    r.add_argument("--beta", type=float, default=0.1)
    r.add_argument("--eval-prompts", type=int, default=200)
    r.add_argument("--eval-samples", type=int, default=4)
    r.add_argument("--checkpoint-every", type=int, default=10)
    r.add_argument("--wandb", action="store_true", help="log every stage to W&B (offline without an account)")
    r.add_argument("--rerun", action="store_true", help="rerun arm/seed pairs already in --output")
    r.add_argument("--output", default=None)
    t = sub.add_parser("table")
    t.add_argument("paths", nargs="+", help="result jsons (merged)")
    p = sub.add_parser("plot")
    p.add_argument("paths", nargs="+", help="result jsons (merged)")
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    elif args.command == "table":
        table(args.paths)
    else:
        plot(args.paths, args.out)


if __name__ == "__main__":
    main()
