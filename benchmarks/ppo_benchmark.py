"""PPO benchmarks.

(a) ``curves``: reward hacking against a flawed proxy. Gold reward = 1 if the completion has 1–3 'z' characters
    (whether or not it ended), proxy = number of 'z' characters (more is always "better"). PPO from the same tiny
    policy with adaptive KL, fixed β and β = 0; per iteration: proxy, gold and KL(π‖π_ref) of the rollouts.
(b) ``speed``: seconds per PPO iteration (generation vs update) of lit_rlhf's ``PPO`` and TRL 1.12's
    ``PPOTrainer`` on the same tiny Llama policy, reward model, value model, prompts, response length and batch
    sizes; both sides in subprocesses, one thread, interleaved rounds, medians. TRL runs from its own venv
    (``--trl-python``), e.g. ``python -m venv /work/venv-trl112 && pip install torch==2.13.0 'trl==1.12.*'``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_benchmark.py speed --trl-python /work/venv-trl112/bin/python
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_benchmark.py curves --output curves.json
(d) ``gold``: PPO (adaptive KL) and rejection sampling from the same partly trained SFT policy on arithmetic
    (the quickstart recipe stopped at 700 of 1,500 steps), rewarded by the task's gold grader; per iteration the
    rollout figures, and the gold accuracy on 200 validation problems (greedy, and sampled at T = 0.7 and 1.0)
    before training and every few iterations; one json for all seeds:

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_benchmark.py gold --seeds 0 1 2 --output gold.json
    python benchmarks/ppo_benchmark.py plot gold_runs gold.json --out ppo_rs_gold.png
(c) ``plot``: PNGs from the figures of (a) (one or more ``--output`` jsons, e.g. one per seed: mean and range) or
    from the ``metrics.csv`` of a ``lit-rlhf fit --config configs/ppo.yaml`` run logged with ``CSVLogger``:

    python benchmarks/ppo_benchmark.py plot curves curves_seed0.json curves_seed1.json --out ppo_hacking.png
    python benchmarks/ppo_benchmark.py plot gold runs/ppo/lightning_logs/version_0/metrics.csv --out ppo_gold.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4}
SETUP = dict(batch=16, mini_batches=2, epochs=4, response_length=24, temperature=0.7, iterations=4)


def prompts(n: int) -> list[str]:
    return [f"{i % 10}+{(3 * i) % 10}=" for i in range(n)]


# ------------------------------------------------------------------ shared assets
def make_assets(folder: Path) -> None:
    """A tiny causal-LM policy folder and a tiny reward-model folder (HF sequence classifier)."""
    from lit_rlhf.modules import SFT, RewardModel

    torch.manual_seed(0)
    SFT(model={"config": MODEL}).export(folder / "policy")
    RewardModel(model={"config": MODEL}).export(folder / "rm")


# ------------------------------------------------------------------ (b) speed, one side per process
def run_ours(folder: Path) -> list[dict[str, float]]:
    import lightning as L

    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.modules import PPO

    torch.set_num_threads(1)
    s = SETUP
    rows = [{"prompt": p} for p in prompts(s["batch"] * s["iterations"])]
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    module = PPO(model=str(folder / "policy"), reward_model=str(folder / "rm"), value_init=str(folder / "rm"),
                 sampling={"temperature": s["temperature"], "max_new_tokens": s["response_length"]},
                 ppo_epochs=s["epochs"], num_mini_batches=s["mini_batches"], kl_coef=0.05,
                 optimizer=lambda p: torch.optim.AdamW(p, lr=3e-6, eps=1e-5))
    out: list[dict[str, float]] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, *args):
            m = pl_module.last_metrics
            out.append({"wall": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu,
                        "generation": m["time/generation"], "update": m["time/update"]})

    dm = PromptDataModule(train=str(data), batch_size=s["batch"], group_by_length=False, max_length=64)
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[Clock()]).fit(module, dm)
    return out


def run_trl(folder: Path) -> list[dict[str, float]]:
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(1)
    s = SETUP
    tok = AutoTokenizer.from_pretrained(folder / "policy")
    policy = AutoModelForCausalLM.from_pretrained(folder / "policy")
    ref = AutoModelForCausalLM.from_pretrained(folder / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(folder / "rm", num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(folder / "rm", num_labels=1)
    ids = [tok(p)["input_ids"] for p in prompts(s["batch"] * s["iterations"])]
    dataset = Dataset.from_dict({"input_ids": ids})
    gen = {"wall": 0.0}
    original = ppo_module.batch_generation

    def timed(*args, **kwargs):
        t = time.perf_counter()
        result = original(*args, **kwargs)
        gen["wall"] += time.perf_counter() - t
        return result

    ppo_module.batch_generation = timed
    config = PPOConfig(
        output_dir=str(folder / "trl_out"), per_device_train_batch_size=s["batch"],  # TRL 1.12: the rollout batch
        gradient_accumulation_steps=1, num_mini_batches=s["mini_batches"], num_ppo_epochs=s["epochs"],
        total_episodes=s["batch"] * s["iterations"], local_rollout_forward_batch_size=s["batch"],
        response_length=s["response_length"], temperature=s["temperature"], stop_token="eos", kl_coef=0.05,
        learning_rate=3e-6, bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
        save_strategy="no", num_sample_generations=0, logging_steps=1, seed=0, dataloader_num_workers=0,
    )
    trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=ref, reward_model=rm,
                         value_model=value, train_dataset=dataset)
    out: list[dict[str, float]] = []
    last = {"wall": time.perf_counter(), "cpu": time.process_time(), "gen": 0.0}
    original_log = trainer.log

    def log(logs, *args, **kwargs):  # called once per PPO iteration
        now, cpu = time.perf_counter(), time.process_time()
        out.append({"wall": now - last["wall"], "cpu": cpu - last["cpu"], "generation": gen["wall"] - last["gen"]})
        out[-1]["update"] = out[-1]["wall"] - out[-1]["generation"]
        last.update(wall=now, cpu=cpu, gen=gen["wall"])
        return original_log(logs, *args, **kwargs)

    trainer.log = log
    last.update(wall=time.perf_counter(), cpu=time.process_time())
    trainer.train()
    return out


def speed(args: argparse.Namespace) -> None:
    folder = Path(args.folder or tempfile.mkdtemp(prefix="ppo_bench_"))
    if not (folder / "rm").exists():
        make_assets(folder)
    results: dict[str, list[dict[str, float]]] = {"lit_rlhf": [], "trl": []}
    pythons = {"lit_rlhf": sys.executable, "trl": args.trl_python}
    for _ in range(args.rounds):
        for side in ("lit_rlhf", "trl"):
            cmd = [pythons[side], __file__, "_side", side, str(folder)]
            env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
            iterations = json.loads(proc.stdout.strip().splitlines()[-1])
            results[side] += iterations[1:]  # the first iteration warms up
    table = {side: {k: statistics.median(r[k] for r in rows) for k in ("wall", "cpu", "generation", "update")}
             for side, rows in results.items()}
    for side, t in table.items():
        print(f"{side:9s} per iteration: wall {t['wall']:.3f} s, CPU {t['cpu']:.3f} s, "
              f"generation {t['generation']:.3f} s, "
              f"update {t['update']:.3f} s  (median of {len(results[side])} iterations)")
    print(f"TRL / lit_rlhf: wall {table['trl']['wall'] / table['lit_rlhf']['wall']:.2f}x, "
          f"CPU {table['trl']['cpu'] / table['lit_rlhf']['cpu']:.2f}x, "
          f"generation {table['trl']['generation'] / table['lit_rlhf']['generation']:.2f}x, "
          f"update {table['trl']['update'] / table['lit_rlhf']['update']:.2f}x")


# ------------------------------------------------------------------ (a) reward hacking curves
def gold_reward(prompts_: list[str], completions: list[str]) -> torch.Tensor:
    return torch.tensor([float(1 <= c.count("z") <= 3) for c in completions])


def proxy_reward(prompts_: list[str], completions: list[str]) -> torch.Tensor:
    return torch.tensor([float(c.count("z")) for c in completions])


def curves(args: argparse.Namespace) -> None:
    import lightning as L

    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.modules import PPO, RejectionSampling

    torch.set_num_threads(1)
    if "rs" in args.settings and args.reward != "gold":
        raise SystemExit("the rs setting records its samples' reward only: use it with --reward gold")
    folder = Path(tempfile.mkdtemp(prefix="ppo_curves_"))
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(args.batch * args.iterations)))
    reward = proxy_reward if args.reward == "proxy" else gold_reward
    kl_settings = {
        "adaptive": dict(kl_coef=0.1, kl_target=args.kl_target, kl_horizon=args.kl_horizon or args.batch * 10),
        "fixed": dict(kl_coef=0.1), "beta0": dict(kl_coef=0.0),
    }
    settings = args.settings
    history: dict[str, list[dict[str, float]]] = {}
    for name in settings:
        torch.manual_seed(args.seed)
        optimizer = lambda p: torch.optim.AdamW(p, lr=1e-3)
        sampling = {"temperature": 1.0, "max_new_tokens": 12}
        if name == "rs":  # best of 8 at T = 1 per prompt, SFT on the correct winners of all iterations
            module = RejectionSampling(model={"config": MODEL}, reward_fn=reward, k=8, sampling=sampling, sft_steps=4,
                                       sft_batch_size=32, min_score=0.5, optimizer=optimizer)
        else:
            module = PPO(model={"config": MODEL}, reward_fn=reward, ppo_epochs=4, num_mini_batches=2, sampling=sampling,
                         optimizer=optimizer, **kl_settings[name])
        rows: list[dict[str, float]] = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, *a, rows=rows):
                m = pl_module.last_metrics
                if "rs/mean_score" in m:  # RS: the mean gold reward of its K samples per prompt (T = 1)
                    nan = float("nan")
                    rows.append({"proxy": nan, "kl": nan, "beta": nan, "gold": m["rs/mean_score"]})
                    return
                texts = pl_module.buffer.texts["completions"]
                rows.append({"proxy": proxy_reward([], texts).mean().item(), "kl": m["objective/kl"],
                             "beta": m["objective/kl_coef"], "gold": gold_reward([], texts).mean().item()})

        dm = PromptDataModule(train=str(data), batch_size=args.batch, group_by_length=False, max_length=32)
        L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0, callbacks=[Record()]).fit(module, dm)
        history[name] = rows
    print("iter | " + " | ".join(f"{n}: proxy gold KL beta" for n in settings))
    for i in range(args.iterations):
        cells = [f"{h[i]['proxy']:.2f} {h[i]['gold']:.2f} {h[i]['kl']:.2f} {h[i]['beta']:.3f}"
                 for h in history.values()]
        print(f"{i:4d} | " + " | ".join(cells))
    if args.output:
        Path(args.output).write_text(json.dumps(history, indent=1))


# ------------------------------------------------------------------ (d) gold reward on arithmetic: PPO and RS
TASK = {"min_steps": 2, "max_steps": 3, "max_operand": 9, "max_value": 99}  # configs/quickstart.yaml's task


def start_policy(folder: Path, steps: int) -> Path:
    """The quickstart SFT recipe (seed 0) stopped after ``steps`` steps (cosine schedule over them), exported;
    reused when ``folder/policy`` exists."""
    import lightning as L

    from lit_rlhf.data import SFTDataModule
    from lit_rlhf.modules import SFT
    from lit_rlhf.tasks import Arithmetic

    out = folder / "policy"
    if not (out / "config.json").exists():
        L.seed_everything(0)
        module = SFT(model="lit-rlhf:tiny-llama", gold_eval_batches=0, warmup=0.05, schedule="cosine", min_lr_ratio=0.1,
                     optimizer=lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.0, betas=(0.9, 0.98)))
        dm = SFTDataModule(task=Arithmetic(**TASK), task_sizes={"train": 50000, "val": 200, "test": 200},
                           max_length=96, batch_size=32)
        L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                  num_sanity_val_steps=0).fit(module, dm)
        module.export(out)
    return out


def gold_run(args: argparse.Namespace, method: str, policy: Path, seed: int) -> dict[str, list[dict[str, float]]]:
    """One PPO or rejection-sampling run from ``policy``; per-iteration rollout metrics and the greedy gold
    accuracy on the first ``--eval-prompts`` validation problems (before training and every ``--eval-every``)."""
    import lightning as L

    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.eval.gold import sample_and_score
    from lit_rlhf.modules import PPO, RejectionSampling
    from lit_rlhf.rollout import SamplingConfig
    from lit_rlhf.tasks import Arithmetic

    torch.set_num_threads(1)
    L.seed_everything(seed)
    task = Arithmetic(**TASK)
    if method == "ppo":
        module = PPO(model=str(policy), sampling={"temperature": args.temperature, "max_new_tokens": 48},
                     ppo_epochs=4, num_mini_batches=2, kl_coef=args.kl_coef, kl_target=args.kl_target,
                     kl_horizon=args.kl_horizon, missing_eos_penalty=1.0, vf_coef=0.1, value_lr=args.value_lr,
                     optimizer=lambda p: torch.optim.AdamW(p, lr=args.lr, eps=1e-5, weight_decay=0.0))
        batch, iterations = args.batch, args.iterations
    else:
        module = RejectionSampling(model=str(policy),
                                   sampling={"temperature": args.rs_temperature, "max_new_tokens": 48},
                                   k=args.rs_k, pool="all", sft_steps=args.rs_sft_steps, sft_batch_size=32,
                                   min_score=0.5,
                                   warmup=args.rs_warmup, schedule="constant",
                                   optimizer=lambda p: torch.optim.AdamW(p, lr=args.rs_lr, weight_decay=0.0))
        batch, iterations = args.rs_batch, args.rs_iterations
    dm = PromptDataModule(task=task, task_sizes={"train": batch * iterations, "val": args.eval_prompts, "test": 10},
                          max_length=48, batch_size=batch, group_by_length=False, seed=seed)
    rows: list[dict[str, float]] = []
    evals: list[dict[str, float]] = []

    def greedy(pl_module, iteration: int) -> None:
        """Gold accuracy on the validation prompts: greedy, and sampled (2 samples per prompt) at T = 0.7 and 1.0."""
        items = dm.dataset("val").items
        row = {"iteration": iteration, "episodes": iteration * batch * (1 if method == "ppo" else args.rs_k)}
        with torch.random.fork_rng():  # evaluation draws do not change the run's random stream
            torch.manual_seed(1234)
            for key, temperature, n in (("gold", 0.0, 1), ("gold_t0.7", 0.7, 2), ("gold_t1.0", 1.0, 2)):
                result = sample_and_score(pl_module.model, pl_module.tokenizer, task,
                                          [x["prompt_ids"] for x in items for _ in range(n)],
                                          [x["prompt_text"] for x in items for _ in range(n)],
                                          SamplingConfig(max_new_tokens=48, temperature=temperature))
                row[key] = float(result.rewards.mean())
        evals.append(row)

    class Record(L.Callback):
        def on_train_start(self, trainer, pl_module):
            greedy(pl_module, 0)

        def on_train_batch_end(self, trainer, pl_module, outputs, b, batch_idx):
            rows.append(dict(pl_module.last_metrics))
            every = args.eval_every if method == "ppo" else max(1, args.eval_every // 2)
            if (batch_idx + 1) % every == 0 or batch_idx + 1 == iterations:
                greedy(pl_module, batch_idx + 1)

    start = time.perf_counter()
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
              callbacks=[Record()]).fit(module, dm)
    print(f"{method} seed {seed}: gold greedy / T=0.7 / T=1.0 " + " | ".join(
        f"{e['gold']:.3f} {e['gold_t0.7']:.3f} {e['gold_t1.0']:.3f}" for e in evals[:: max(1, len(evals) - 1)])
        + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"iterations": rows, "greedy": evals}


def gold(args: argparse.Namespace) -> None:
    folder = Path(args.folder or tempfile.mkdtemp(prefix="ppo_gold_"))
    policy = start_policy(folder, args.start_steps)
    result = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "runs": {}}
    for seed in args.seeds:
        for method in args.methods:
            result["runs"][f"{method}/{seed}"] = gold_run(args, method, policy, seed)
            if args.output:  # after every run: a killed benchmark keeps what it finished
                Path(args.output).write_text(json.dumps(result, indent=1))
    for method in args.methods:
        runs = [result["runs"][f"{method}/{seed}"]["greedy"] for seed in args.seeds]
        for key in ("gold", "gold_t0.7", "gold_t1.0"):
            before, after = torch.tensor([r[0][key] for r in runs]), torch.tensor([r[-1][key] for r in runs])
            gain = after - before
            print(f"{method} {key}: {before.mean():.3f} -> {after.mean():.3f} "
                  f"± {after.std(unbiased=len(runs) > 1):.3f}, "
                  f"gain {gain.mean():+.3f} ± {gain.std(unbiased=len(runs) > 1):.3f} over seeds {args.seeds}")


# ------------------------------------------------------------------ (c) plots
def plot_curves(paths: list[str], out: str, title: str | None = None, kl_target: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in paths]
    labels = {"adaptive": "PPO, adaptive KL", "fixed": "PPO, fixed β = 0.1", "beta0": "PPO, β = 0",
              "rs": "rejection sampling (K = 8)"}
    colors = {"adaptive": "C0", "fixed": "C1", "beta0": "C3", "rs": "C2"}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for name in (n for n in labels if n in runs[0]):
        for ax, key in zip(axes, ("gold", "proxy", "kl", "beta")):
            series = torch.tensor([[r[key] for r in run[name]] for run in runs])  # (seeds, iterations)
            if series.isnan().all():
                continue
            x = range(series.shape[1])
            ax.plot(x, series.mean(0), color=colors[name], label=labels[name])
            if len(runs) > 1:
                ax.fill_between(x, series.min(0).values, series.max(0).values, color=colors[name], alpha=0.15)
    for ax, name in zip(axes, ("gold reward (1–3 'z')", "proxy reward (#'z')", "KL(π‖π_ref) per sequence", "β")):
        ax.set_title(name)
        ax.set_xlabel("iteration")
    if kl_target is not None:
        axes[2].axhline(kl_target, color="k", ls="--", lw=1, label=f"target {kl_target}")
    axes[0].legend()
    axes[2].legend()
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    fig.suptitle(f"{title or 'Reward hacking against a flawed proxy'} ({seeds}; mean, min–max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_gold(csv: str, out: str, steps_per_iteration: int = 8) -> None:
    """PPO rows are logged per iteration (Lightning's step under manual optimisation counts batches);
    ``GoldEval`` logs at optimizer steps, converted with ``steps_per_iteration`` (ppo_epochs × num_mini_batches)."""
    import csv as csv_

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv_.DictReader(open(csv)))
    series = lambda key: [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title in ((axes[0], "objective/scores", "gold reward of the rollouts (T = 0.7)"),
                           (axes[1], "objective/kl", "KL(π‖π_ref) per sequence"),
                           (axes[2], "objective/kl_coef", "β (adaptive controller)")):
        pts = series(key)
        ax.plot([s for s, _ in pts], [v for _, v in pts], ".-", ms=3)
        ax.set_title(title)
        ax.set_xlabel("PPO iteration")
    gold = series("gold/reward")
    if gold:
        axes[0].plot([s / steps_per_iteration for s, _ in gold], [v for _, v in gold], "s-", color="C3",
                     label="greedy, 200 val prompts")
        axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_gold_runs(path: str, out: str) -> None:
    """Greedy gold of PPO and RS against sampled completions, and PPO's rollout gold, KL (with the target) and β;
    mean over seeds with the min–max range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(path).read_text())
    runs, args = data["runs"], data["args"]
    seeds = args["seeds"]

    def band(ax, x, series, color, label):
        series = torch.tensor(series, dtype=torch.float64)  # (seeds, points)
        ax.plot(x, series.mean(0), color=color, label=label)
        if len(series) > 1:
            ax.fill_between(x, series.min(0).values, series.max(0).values, color=color, alpha=0.15)

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    arms = (("ppo", "C0", "PPO (adaptive KL)"), ("rs", "C2", f"rejection sampling (K={args['rs_k']})"))
    for method, color, label in arms:
        if f"{method}/{seeds[0]}" not in runs:
            continue
        evals = [runs[f"{method}/{s}"]["greedy"] for s in seeds]
        band(axes[0], [e["episodes"] for e in evals[0]], [[e["gold"] for e in ev] for ev in evals], color, label)
    axes[0].set_title(f"greedy gold accuracy ({args['eval_prompts']} val problems)")
    axes[0].set_xlabel("sampled completions")
    axes[0].legend()
    if f"ppo/{seeds[0]}" in runs:
        its = [runs[f"ppo/{s}"]["iterations"] for s in seeds]
        x = list(range(1, len(its[0]) + 1))
        for ax, key, title in ((axes[1], "objective/scores", f"PPO rollout gold (T = {args['temperature']})"),
                               (axes[2], "objective/kl", "PPO KL(π‖π_ref) per sequence"),
                               (axes[3], "objective/kl_coef", "PPO β (adaptive controller)")):
            band(ax, x, [[r[key] for r in it] for it in its], "C0", "mean over seeds")
            ax.set_title(title)
            ax.set_xlabel("PPO iteration")
        axes[2].axhline(args["kl_target"], color="k", ls="--", lw=1, label=f"target {args['kl_target']}")
        axes[2].legend()
    fig.suptitle(f"Arithmetic, gold reward = answer correct; {len(seeds)} seeds (mean, min–max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_side":
        side, folder = sys.argv[2], Path(sys.argv[3])
        print(json.dumps(run_ours(folder) if side == "lit_rlhf" else run_trl(folder)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--trl-python", required=True, help="python of a venv with trl==1.12")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--folder", default=None, help="where the tiny policy / reward model live (made if missing)")
    cp = sub.add_parser("curves")
    cp.add_argument("--iterations", type=int, default=40)
    cp.add_argument("--batch", type=int, default=32)
    cp.add_argument("--kl-target", type=float, default=1.0)
    cp.add_argument("--kl-horizon", type=int, default=None, help="episodes (default: 10 batches)")
    cp.add_argument("--seed", type=int, default=0, help="initial policy and sampling (same for every setting)")
    cp.add_argument("--reward", choices=("proxy", "gold"), default="proxy", help="what PPO / RS optimise")
    cp.add_argument("--settings", nargs="+", choices=("adaptive", "fixed", "beta0", "rs"),
                    default=["adaptive", "fixed", "beta0"], help="rs = rejection sampling (with --reward gold)")
    cp.add_argument("--output", default=None, help="json of the per-iteration figures")
    gp = sub.add_parser("gold")
    gp.add_argument("--folder", default=None, help="where the start policy lives (trained if missing)")
    gp.add_argument("--start-steps", type=int, default=700, help="SFT steps of the start policy")
    gp.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    gp.add_argument("--methods", nargs="+", choices=("ppo", "rs"), default=["ppo", "rs"])
    gp.add_argument("--iterations", type=int, default=60, help="PPO iterations")
    gp.add_argument("--batch", type=int, default=64, help="PPO prompts per iteration")
    gp.add_argument("--temperature", type=float, default=0.7, help="PPO rollout temperature")
    gp.add_argument("--lr", type=float, default=3e-5, help="PPO policy learning rate")
    gp.add_argument("--value-lr", type=float, default=1e-3, help="PPO critic learning rate")
    gp.add_argument("--kl-coef", type=float, default=0.05, help="initial beta")
    gp.add_argument("--kl-target", type=float, default=0.5)
    gp.add_argument("--kl-horizon", type=int, default=320, help="episodes (320 = 5 iterations of 64)")
    gp.add_argument("--rs-iterations", type=int, default=30, help="RS iterations (30 x 32 x 8 = 2x PPO's samples)")
    gp.add_argument("--rs-k", type=int, default=8)
    gp.add_argument("--rs-batch", type=int, default=32)
    gp.add_argument("--rs-temperature", type=float, default=1.0)
    gp.add_argument("--rs-lr", type=float, default=2e-4)
    gp.add_argument("--rs-sft-steps", type=int, default=4, help="SFT steps on the pool per RS iteration")
    gp.add_argument("--rs-warmup", type=int, default=10, help="RS linear warm-up steps")
    gp.add_argument("--eval-prompts", type=int, default=200)
    gp.add_argument("--eval-every", type=int, default=10, help="iterations between gold evaluations (RS: half)")
    gp.add_argument("--output", default=None, help="json of every run's figures")
    pp = sub.add_parser("plot")
    pp.add_argument("kind", choices=("curves", "gold", "gold_runs"))
    pp.add_argument("inputs", nargs="+", help="curves: --output jsons of `curves`; gold: one metrics.csv; "
                    "gold_runs: the --output json of `gold`")
    pp.add_argument("--out", required=True)
    pp.add_argument("--title", default=None, help="curves: figure title")
    pp.add_argument("--kl-target", type=float, default=None, help="curves: draw the KL target")
    pp.add_argument("--steps-per-iteration", type=int, default=8, help="gold: ppo_epochs x num_mini_batches")
    args = parser.parse_args()
    if args.command == "plot":
        if args.kind == "curves":
            plot_curves(args.inputs, args.out, args.title, args.kl_target)
        elif args.kind == "gold_runs":
            plot_gold_runs(args.inputs[0], args.out)
        else:
            plot_gold(args.inputs[0], args.out, args.steps_per_iteration)
    else:
        {"speed": speed, "curves": curves, "gold": gold}[args.command](args)


if __name__ == "__main__":
    main()
