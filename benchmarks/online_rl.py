"""Online RL on arithmetic with the gold verifier: GRPO and its relatives vs PPO and rejection sampling.

``gold``: from the same partly trained SFT policy (the quickstart recipe stopped at 700 of 1,500 steps, as in
``ppo_benchmark.py gold``), each method trains on the task's gold reward with the same number of sampled
completions per iteration (``--prompts`` × ``--group-size``); before training and every ``--eval-every``
iterations the gold accuracy on the first ``--eval-prompts`` validation problems is measured greedily and by
sampling at T = 1 (``--eval-samples`` per problem), with the Monte-Carlo sequence KL to the start policy and the
mean response length of those T = 1 samples. Every update also records the module's training metrics (TRL's names:
``reward``, ``reward_std``, ``frac_reward_zero_std``, ``completions/mean_length``, ``clip_ratio/...``, ``entropy``,
``kl`` when β > 0, ``dynamic_sampling/...``) and, every ``--kl-every`` iterations, the Monte-Carlo KL to the start
policy of that iteration's training samples (``kl_start``, nats per sequence; also with β = 0). One json for all
methods and seeds (written after every run):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/online_rl.py gold --methods grpo --seeds 0 1 2 \\
        --output benchmarks/data/online_rl/grpo.json
    python benchmarks/online_rl.py table benchmarks/data/online_rl/grpo.json
    python benchmarks/online_rl.py plot benchmarks/data/online_rl/grpo.json --out benchmarks/online_rl_gold.png

Methods (``--methods``): ``grpo`` (β = 0, token-mean loss, ε = 0.2), ``dr_grpo`` (no std scaling, constant
normaliser), ``dapo`` (clip-higher 0.28, dynamic sampling, token-mean), ``gspo`` (sequence-level ratio),
``rloo``, ``reinforce_pp``, ``ppo`` (critic + GAE, adaptive KL) and ``rs`` (rejection sampling, best of G).
``--set key=value`` overrides a group method's ``GRPO`` argument (e.g. ``num_iterations=2``, ``scale_rewards=none``,
``dynamic_sampling=true``) and ``--name`` stores the run under another name than the method's, so that settings
of one method can share a json.

``process``: process vs outcome rewards on the arithmetic task with a learnable trap (+3 on the first multiplication
in ``--trap-prob`` of the generator's SFT solutions). Per seed, ``prm_vs_orm.py``'s generator, PRM and ORM (trained
in ``--workdir``, reused when there); then from that generator, with the same batch, G and budget, one arm per reward:
``gold`` (the grader, GRPO), ``orm`` (P(right answer), GRPO), ``prm`` (min over steps of P(step correct), GRPO) and
``prm_dense`` (each step's P(correct) − 0.5 on the token that closes it, REINFORCE++). Evaluations add the shares of
T = 1 samples that fall into the trap (``trap``) and that reach the right answer through a wrong step
(``compensated``):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/online_rl.py process --seeds 0 1 2 --workdir W \
        --iterations 200 --eval-every 50 --output benchmarks/data/online_rl/process.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_benchmark import TASK, start_policy  # noqa: E402  (the same start policy and task settings)

GROUP_METHODS: dict[str, dict[str, Any]] = {
    "grpo": {"advantage": "grpo"},
    "dr_grpo": {"advantage": "dr_grpo"},
    "dapo": {"advantage": "grpo", "clip_high": 0.28, "dynamic_sampling": True},
    "gspo": {"advantage": "grpo", "loss_level": "sequence", "clip_low": 3e-4, "clip_high": 4e-4},
    "rloo": {"advantage": "rloo"},
    "reinforce_pp": {"advantage": "reinforce_pp"},
}
METHODS = (*GROUP_METHODS, "ppo", "rs")
EVAL_METRICS = ("greedy", "sampled", "trap", "compensated", "kl", "length")
PROGRESS = ("reward", "frac_reward_zero_std", "completions/mean_length", "clip_ratio/region_mean", "entropy",
            "objective/scores", "objective/kl", "policy/clipfrac_avg", "policy/entropy_avg")  # group methods; PPO


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["num_iterations=2", "dynamic_sampling=true"]`` → ``{"num_iterations": 2, "dynamic_sampling": True}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        lowered = raw.lower()
        if lowered in ("true", "false", "none"):
            out[key] = {"true": True, "false": False, "none": None}[lowered]
            continue
        try:
            out[key] = int(raw)
        except ValueError:
            try:
                out[key] = float(raw)
            except ValueError:
                out[key] = raw
    return out


def build(method: str, policy: Path, args: argparse.Namespace, extra: dict[str, Any] | None = None):
    """The module of ``method`` and its prompts per iteration (each iteration samples prompts × G completions);
    ``extra``: more ``GRPO`` arguments (e.g. ``rewards``) for a group method."""
    from lit_rlhf.modules import GRPO, PPO, RejectionSampling

    sampling = {"temperature": 1.0, "max_new_tokens": args.max_new_tokens}
    adam = lambda lr: (lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=0.0))  # noqa: E731
    if method in GROUP_METHODS:
        module = GRPO(model=str(policy), sampling=sampling, group_size=args.group_size, beta=args.beta,
                      optimizer=adam(args.lr),
                      **{**GROUP_METHODS[method], **(extra or {}), **parse_overrides(args.set)})
        return module, args.prompts
    if method == "ppo":  # the same completions per iteration: prompts × G single samples
        module = PPO(model=str(policy), sampling=sampling, ppo_epochs=4, num_mini_batches=2, kl_coef=0.05,
                     kl_target=6.0, kl_horizon=3200, missing_eos_penalty=1.0, vf_coef=0.1, value_lr=1e-3,
                     optimizer=lambda p: torch.optim.AdamW(p, lr=args.ppo_lr, eps=1e-5, weight_decay=0.0))
        return module, args.prompts * args.group_size
    module = RejectionSampling(model=str(policy), sampling=sampling, k=args.group_size, pool="all", sft_steps=4,
                               sft_batch_size=32, min_score=0.5, schedule="constant", optimizer=adam(args.rs_lr))
    return module, args.prompts


def evaluate(module, reference, task, items, args: argparse.Namespace) -> dict[str, float]:
    """Gold accuracy greedy and at T = 1, and the KL to the start policy and length of the T = 1 samples; with a
    task that names error kinds (``Arithmetic.error_kind``), the shares of T = 1 samples that fall into the
    problem's trap (``trap``) and that reach the right answer through a wrong step (``compensated``)."""
    from lit_rlhf.eval.gold import sample_and_score, sequence_log_ratios
    from lit_rlhf.models import sequence_logps
    from lit_rlhf.rollout import SamplingConfig

    out: dict[str, float] = {}
    model, tok = module.model, module.tokenizer
    was_training = model.training
    model.eval()
    with torch.random.fork_rng():  # evaluation draws do not change the run's random stream
        torch.manual_seed(1234)
        for key, temperature, n in (("greedy", 0.0, 1), ("sampled", 1.0, args.eval_samples)):
            prompt_ids = [x["prompt_ids"] for x in items for _ in range(n)]
            result = sample_and_score(model, tok, task, prompt_ids, [x["prompt_text"] for x in items for _ in range(n)],
                                      SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=temperature))
            out[key] = float(result.rewards.mean())
        if hasattr(task, "error_kind"):
            kinds = [task.error_kind(p, c) for p, c in zip(result.prompts, result.completions)]
            out.update({kind: kinds.count(kind) / len(kinds) for kind in ("trap", "compensated")})
        policy_logps = lambda *a: sequence_logps(model, *a)[0]  # noqa: E731
        reference_logps = lambda *a: sequence_logps(reference, *a)[0]  # noqa: E731
        ratios = sequence_log_ratios(policy_logps, reference_logps, prompt_ids, result.completion_ids, tok.pad_token_id)
        out["kl"] = float(ratios.mean())
        out["length"] = statistics.fmean(len(c) for c in result.completion_ids)
    model.train(was_training)
    return out


@torch.no_grad()
def training_kl(module, reference) -> float:
    """Monte-Carlo KL to the start policy of the samples in the module's buffer: mean over the sequences of
    ``Σ_t log π_θ_old(o_t) − log π_start(o_t)``, both at the sampling temperature (the rollout's own log-probs).

    When the update was one on-policy step the rollout kept no log-probs (``needs_rollout_logprobs``); the
    policy's are then those of the updated policy, one optimizer step after the samples were drawn."""
    buffer = module.buffer
    mask = buffer["response_mask"]
    ids, attention, width = buffer["input_ids"], buffer["attention_mask"], mask.shape[1]
    ref = module.forward_pass(reference, ids, attention, width)["logprobs"]
    policy = buffer["logprobs"] if "logprobs" in buffer.data else module.forward_pass(
        module.model, ids, attention, width)["logprobs"]
    return float(((policy - ref) * mask).sum(-1).mean())


def run(method: str, policy: Path, seed: int, args: argparse.Namespace,
        save: Callable[[dict[str, Any]], None] | None = None, task: Any = None,
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run; ``save`` receives the run so far (``partial``) after every evaluation, so a killed run keeps it.
    ``task``: the arithmetic task (default the quickstart's, ``TASK``); ``extra``: more ``GRPO`` arguments."""
    import copy

    import lightning as L

    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.tasks import Arithmetic

    torch.set_num_threads(1)
    L.seed_everything(seed)
    task = task if task is not None else Arithmetic(**TASK)
    module, prompts = build(method, policy, args, extra)
    reference = copy.deepcopy(module.model).eval().requires_grad_(False)
    completions = prompts * (1 if method == "ppo" else args.group_size)
    # one epoch of `iterations` batches (DAPO refills zero-spread groups from the same stream: fewer updates)
    dm = PromptDataModule(task=task, task_sizes={"train": prompts * args.iterations, "val": args.eval_prompts,
                                                 "test": 10}, max_length=48, batch_size=prompts, group_by_length=False,
                          seed=seed)
    settings = {"method": method, "lr": args.lr, "prompts": prompts, "group_size": args.group_size,
                "iterations": args.iterations, "overrides": parse_overrides(args.set),
                "rewards": (extra or {}).get("rewards")}
    evals: list[dict[str, float]] = []
    train: list[dict[str, float]] = []  # one row per update: the module's training metrics of that iteration
    clock = {"train": 0.0}

    def record(pl_module, iteration: int) -> None:
        row = {"iteration": iteration, "completions": iteration * completions,
               **evaluate(pl_module, reference, task, dm.dataset("val").items, args)}
        evals.append(row)
        if save is not None and iteration < args.iterations:
            save({"evals": evals, "train": train, "partial": True, "settings": settings})
        print(f"{method} seed {seed} it {iteration}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()
                                                                  if k not in ("iteration", "completions")), flush=True)

    class Record(L.Callback):
        def on_train_start(self, trainer, pl_module):
            record(pl_module, 0)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = time.process_time()
            self.step = trainer.global_step

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock["train"] += time.process_time() - self.start
            done = batch_idx + 1
            # an iteration without an optimizer step (a dynamic-sampling batch still filling) logs nothing new
            if trainer.global_step != self.step and getattr(pl_module, "last_metrics", None):
                row = {"iteration": done, "completions": done * completions, **pl_module.last_metrics}
                if method != "rs" and (done % args.kl_every == 0 or done == 1):
                    row["kl_start"] = training_kl(pl_module, reference)
                train.append(row)
                if len(train) % 10 == 0:  # progress: the last 10 updates' means
                    last = train[-10:]
                    print(f"{method} seed {seed} it {done} train: " + " ".join(
                        f"{k} {statistics.fmean(r[k] for r in last):.3f}" for k in PROGRESS if k in last[-1]),
                          flush=True)
            if done % args.eval_every == 0 or done == args.iterations:
                record(pl_module, done)

    start = time.perf_counter()
    L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=args.iterations, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
              num_sanity_val_steps=0, callbacks=[Record()]).fit(module, dm)
    return {"evals": evals, "train": train, "train_cpu_s": clock["train"], "wall_s": time.perf_counter() - start,
            "settings": settings}


def load_results(out: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """The results json at ``out`` (runs by ``name/seed``), or a new one; its ``args`` are this invocation's."""
    result = json.loads(out.read_text()) if out is not None and out.exists() else {"runs": {}}
    result["args"] = {k: v for k, v in vars(args).items() if k != "func"}
    return result


def saver(result: dict[str, Any], key: str, out: Path | None) -> Callable[[dict[str, Any]], None] | None:
    """``None`` when ``key`` has a finished run in ``result`` (nothing to do), else the function that stores the run
    under ``key`` and writes the json: called after every evaluation, so a killed benchmark keeps what it did."""
    if key in result["runs"] and not result["runs"][key].get("partial") and not result["args"].get("rerun"):
        return None

    def save(run_: dict[str, Any]) -> None:
        result["runs"][key] = run_
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1))

    return save


def gold(args: argparse.Namespace) -> None:
    folder = Path(args.folder or tempfile.mkdtemp(prefix="online_rl_"))
    if args.name and len(args.methods) > 1:
        raise SystemExit("--name names the runs of one method; give one --methods entry with it")
    policy = start_policy(folder, args.start_steps)
    out = Path(args.output) if args.output else None
    result = load_results(out, args)
    for seed in args.seeds:
        for method in args.methods:
            save = saver(result, f"{args.name or method}/{seed}", out)
            if save is not None:
                save(run(method, policy, seed, args, save))
    table(result)


def process_arms(prm: Path, orm: Path) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """``process``'s arms: name → (method, reward sources). One source each, so the arms differ only in the reward."""
    return {
        "gold": ("grpo", [{"source": "gold"}]),
        "orm": ("grpo", [{"source": "orm", "path": str(orm)}]),
        "prm": ("grpo", [{"source": "prm", "path": str(prm), "aggregate": "min"}]),
        # each step's P(correct) − 0.5 on the token that closes it: a trapped step is penalised where it happens
        "prm_dense": ("reinforce_pp", [{"source": "prm", "path": str(prm), "aggregate": "min", "offset": 0.5}]),
    }


def process(args: argparse.Namespace) -> None:
    """Process vs outcome rewards on the arithmetic task with a learnable trap: per seed, the generator, PRM and ORM
    of ``prm_vs_orm.py`` (trained in ``--workdir``, reused when there), then GRPO from that generator with each arm's
    reward; evaluations record the trap rate of the T = 1 samples next to the gold accuracy."""
    from prm_vs_orm import make_task, verifier_folders

    out = Path(args.output)
    result = load_results(out, args)
    for seed in args.seeds:
        seed_dir = Path(args.workdir) / f"seed{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        generator, prm, orm = verifier_folders(seed, args, seed_dir)
        arms = process_arms(prm, orm)
        for arm in args.arms:
            save = saver(result, f"{arm}/{seed}", out)
            if save is not None:
                method, rewards = arms[arm]
                save(run(method, generator, seed, args, save, task=make_task(args), extra={"rewards": rewards}))
    table(result)


def window(rows: list[dict[str, float]], metric: str, first: bool) -> float:
    """Mean of ``metric`` over the first (or last) tenth of the recorded updates."""
    n = max(1, len(rows) // 10)
    part = rows[:n] if first else rows[-n:]
    return statistics.fmean(r[metric] for r in part)


def trajectory(runs: list[dict[str, Any]], metric: str) -> str:
    """``iteration: mean ± std`` of an evaluation metric over the runs at every evaluation they all reached."""
    reached = min(len(r["evals"]) for r in runs)
    cells = []
    for i in range(reached):
        values = [r["evals"][i][metric] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{runs[0]['evals'][i]['iteration']}: {statistics.fmean(values):.3f} ± {spread:.3f}")
    return ", ".join(cells)


def smooth(values: list[float], width: int = 20) -> list[float]:
    """Trailing moving average over ``width`` points (fewer at the start)."""
    return [statistics.fmean(values[max(0, i - width + 1):i + 1]) for i in range(len(values))]


def runs_by_name(paths: list[str], only: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The runs of one or more jsons grouped by name (``name/seed`` keys), optionally only the names in ``only``."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for key, run_ in json.loads(Path(path).read_text())["runs"].items():
            if not only or key.split("/")[0] in only:
                by_method.setdefault(key.split("/")[0], []).append(run_)
    return by_method


def table(result: dict[str, Any] | list[str]) -> None:
    """Per method: before → after (mean ± std over seeds) and the per-seed gains, greedy and sampled."""
    if isinstance(result, list):
        by_method = runs_by_name(result)
    else:
        by_method = {}
        for key, run_ in result["runs"].items():
            by_method.setdefault(key.split("/")[0], []).append(run_)
    for method, runs in by_method.items():
        partial = sum(bool(r.get("partial")) for r in runs)
        line = [f"{method:<13} n={len(runs)}" + (f" ({partial} stopped early: last evaluation)" if partial else "")]
        for metric in [m for m in EVAL_METRICS if m in runs[0]["evals"][0]]:
            before = [r["evals"][0][metric] for r in runs]
            after = [r["evals"][-1][metric] for r in runs]
            gains = [a - b for a, b in zip(after, before)]
            spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
            line.append(f"{metric} {statistics.fmean(before):.3f}→{statistics.fmean(after):.3f} "
                        f"(gain {statistics.fmean(gains):+.3f} ± {spread:.3f}; per seed "
                        + " ".join(f"{g:+.3f}" for g in gains) + ")")
        if all(r.get("train") for r in runs):
            line.append("updates " + " ".join(str(len(r["train"])) for r in runs))
        for metric in ("reward", "frac_reward_zero_std"):
            if all(r.get("train") and metric in r["train"][0] for r in runs):
                first = [window(r["train"], metric, first=True) for r in runs]
                last = [window(r["train"], metric, first=False) for r in runs]
                line.append(f"train {metric} {statistics.fmean(first):.3f}→{statistics.fmean(last):.3f} (first→last "
                            "tenth of the updates)")
        for metric in ("trap", "sampled"):  # process runs: how fast each reward removes the trap
            if "trap" in runs[0]["evals"][0]:
                line.append(f"{metric} by iteration " + trajectory(runs, metric))
        iterations = runs[0]["evals"][-1]["iteration"]
        if not partial:
            line.append(f"train CPU-s/iteration {statistics.fmean(r['train_cpu_s'] for r in runs) / iterations:.2f}")
        print(" | ".join(line))


def plot(paths: list[str], out: str, only: list[str] | None = None) -> None:
    """Gold accuracy (greedy, T = 1), KL and response length against completions seen; mean and range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method = runs_by_name(paths, only)
    color: dict[str, str] = {}
    first = next(iter(by_method.values()))[0]["evals"][0]
    metrics = [m for m in EVAL_METRICS if m in first]
    trained = ("reward", "frac_reward_zero_std")
    metrics += tuple(m for m in trained if any(m in t for runs in by_method.values() for r in runs
                                               for t in r.get("train", [])))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for method, runs in by_method.items():
        x = [e["completions"] for e in runs[0]["evals"]]
        for ax, metric in zip(axes, metrics):
            if metric in trained:  # per update, smoothed; one line per seed (updates differ with dynamic sampling)
                for r in runs:  # methods that log another name (PPO, rejection sampling) have no line here
                    rows = [t for t in r.get("train", []) if metric in t]
                    if rows:
                        ax.plot([t["completions"] for t in rows], smooth([t[metric] for t in rows]),
                                color=color[method], alpha=0.8, label=None)
                continue
            series = torch.tensor([[e[metric] for e in r["evals"]] for r in runs])
            line, = ax.plot(x, series.mean(0), label=method)
            color[method] = line.get_color()
            ax.fill_between(x, series.min(0).values, series.max(0).values, color=line.get_color(), alpha=0.2)
    titles = {"greedy": "gold accuracy, greedy", "sampled": "gold accuracy, T = 1", "kl": "KL to start (nats)",
              "trap": "trap rate, T = 1", "compensated": "right answer, wrong step (T = 1)",
              "length": "response tokens (T = 1)", "reward": "training reward (20-update mean)",
              "frac_reward_zero_std": "share of zero-spread groups"}
    for ax, metric in zip(axes, metrics):
        ax.set_title(titles[metric])
        ax.set_xlabel("completions sampled")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def run_arguments(g: argparse.ArgumentParser) -> None:
    """The arguments of one training run (``gold`` and ``process``)."""
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    g.add_argument("--iterations", type=int, default=300)
    g.add_argument("--prompts", type=int, default=8, help="prompts per iteration")
    g.add_argument("--group-size", type=int, default=8, help="completions per prompt (G)")
    g.add_argument("--max-new-tokens", type=int, default=48)
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument("--beta", type=float, default=0.0)
    g.add_argument("--ppo-lr", type=float, default=3e-5)
    g.add_argument("--rs-lr", type=float, default=1e-4)
    g.add_argument("--eval-every", type=int, default=50)
    g.add_argument("--eval-prompts", type=int, default=200)
    g.add_argument("--eval-samples", type=int, default=2, help="T = 1 samples per validation problem")
    g.add_argument("--kl-every", type=int, default=10, help="iterations between KL-to-start figures")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a group method's GRPO argument")
    g.add_argument("--rerun", action="store_true", help="rerun method/seed pairs already in --output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gold", help="train each method from the SFT start and evaluate against the gold grader")
    g.add_argument("--methods", nargs="+", default=["grpo"], choices=METHODS)
    g.add_argument("--folder", default=None, help="where the start policy is trained (reused when present)")
    g.add_argument("--start-steps", type=int, default=700)
    g.add_argument("--name", default=None, help="store the runs under this name instead of the method's")
    g.add_argument("--output", default=None)
    run_arguments(g)
    pr = sub.add_parser("process", help="GRPO with PRM step rewards vs ORM vs gold outcome on the trap task")
    pr.add_argument("--arms", nargs="+", default=["gold", "orm", "prm", "prm_dense"],
                    choices=["gold", "orm", "prm", "prm_dense"])
    pr.add_argument("--workdir", required=True, help="each seed's generator, PRM and ORM (reused when present)")
    pr.add_argument("--output", required=True)
    pr.add_argument("--sft-steps", type=int, default=1500, help="generator: quickstart SFT steps on noisy solutions")
    pr.add_argument("--generator-data", choices=["correct", "noisy"], default="noisy")
    pr.add_argument("--trap-prob", type=float, default=0.6, help="share of noisy solutions with the misconception")
    pr.add_argument("--slip-prob", type=float, default=0.05)
    pr.add_argument("--compensate-prob", type=float, default=0.3)
    pr.add_argument("--train-problems", type=int, default=2000, help="verifier data: problems × --train-samples")
    pr.add_argument("--train-samples", type=int, default=8)
    pr.add_argument("--verifier-epochs", type=int, default=2)
    run_arguments(pr)
    pr.set_defaults(reuse_from=None, name=None)
    t = sub.add_parser("table")
    t.add_argument("path", nargs="+", help="one or more jsons of `gold` or `process`")
    p = sub.add_parser("plot")
    p.add_argument("path", nargs="+", help="one or more jsons of `gold` or `process`")
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="*", default=None, help="plot only these run names")
    args = parser.parse_args()
    if args.command == "gold":
        gold(args)
    elif args.command == "process":
        process(args)
    elif args.command == "table":
        table(args.path)
    else:
        plot(args.path, args.out, args.only)

if __name__ == "__main__":
    main()
