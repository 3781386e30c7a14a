"""PPO benchmarks.

(a) ``curves``: reward hacking against a flawed proxy. Gold reward = 1 if the completion has 1–3 'z' characters
    (and ended), proxy = number of 'z' characters (more is always "better"). PPO from the same tiny policy with
    adaptive KL, fixed β and β = 0; per iteration: proxy, gold and KL(π‖π_ref) of the rollouts.
(b) ``speed``: seconds per PPO iteration (generation vs update) of lit_rlhf's ``PPO`` and TRL 1.12's
    ``PPOTrainer`` on the same tiny Llama policy, reward model, value model, prompts, response length and batch
    sizes; both sides in subprocesses, one thread, interleaved rounds, medians. TRL runs from its own venv
    (``--trl-python``), e.g. ``python -m venv /work/venv-trl112 && pip install torch==2.13.0 'trl==1.12.*'``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_benchmark.py speed --trl-python /work/venv-trl112/bin/python
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/ppo_benchmark.py curves --output curves.json
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
    from lit_rlhf.modules import RewardModel, SFT

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
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
            iterations = json.loads(proc.stdout.strip().splitlines()[-1])
            results[side] += iterations[1:]  # the first iteration warms up
    table = {side: {k: statistics.median(r[k] for r in rows) for k in ("wall", "cpu", "generation", "update")}
             for side, rows in results.items()}
    for side, t in table.items():
        print(f"{side:9s} per iteration: wall {t['wall']:.3f} s, CPU {t['cpu']:.3f} s, generation {t['generation']:.3f} s, "
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
    from lit_rlhf.modules import PPO

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="ppo_curves_"))
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts(args.batch * args.iterations)))
    settings = {"adaptive": dict(kl_coef=0.1, kl_target=args.kl_target, kl_horizon=args.kl_horizon or args.batch * 10),
                "fixed": dict(kl_coef=0.1), "beta0": dict(kl_coef=0.0)}
    history: dict[str, list[dict[str, float]]] = {}
    for name, kl in settings.items():
        torch.manual_seed(args.seed)
        module = PPO(model={"config": MODEL}, reward_fn=proxy_reward, ppo_epochs=4, num_mini_batches=2,
                     sampling={"temperature": 1.0, "max_new_tokens": 12}, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
                     **kl)
        rows: list[dict[str, float]] = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, *a):
                buf, m = pl_module.buffer, pl_module.last_metrics
                rows.append({"proxy": m["objective/scores"], "kl": m["objective/kl"], "beta": m["objective/kl_coef"],
                             "gold": gold_reward([], buf.texts["completions"]).mean().item()})

        dm = PromptDataModule(train=str(data), batch_size=args.batch, group_by_length=False, max_length=32)
        L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0, callbacks=[Record()]).fit(module, dm)
        history[name] = rows
    print("iter | " + " | ".join(f"{n}: proxy gold KL beta" for n in settings))
    for i in range(args.iterations):
        cells = [f"{h[i]['proxy']:.2f} {h[i]['gold']:.2f} {h[i]['kl']:.2f} {h[i]['beta']:.3f}" for h in history.values()]
        print(f"{i:4d} | " + " | ".join(cells))
    if args.output:
        Path(args.output).write_text(json.dumps(history, indent=1))


# ------------------------------------------------------------------ (c) plots
def plot_curves(paths: list[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [json.loads(Path(p).read_text()) for p in paths]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, color in (("adaptive", "C0"), ("fixed", "C1"), ("beta0", "C3")):
        for ax, key in zip(axes, ("gold", "proxy", "kl")):
            series = torch.tensor([[r[key] for r in run[name]] for run in runs])  # (seeds, iterations)
            x = range(series.shape[1])
            label = {"adaptive": "adaptive KL", "fixed": "fixed β = 0.1", "beta0": "β = 0"}[name]
            ax.plot(x, series.mean(0), color=color, label=label)
            if len(runs) > 1:
                ax.fill_between(x, series.min(0).values, series.max(0).values, color=color, alpha=0.15)
    for ax, title in zip(axes, ("gold reward (1–3 'z')", "proxy reward (#'z')", "KL(π‖π_ref) per sequence")):
        ax.set_title(title)
        ax.set_xlabel("PPO iteration")
    axes[0].legend()
    fig.suptitle(f"Reward hacking against a flawed proxy ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
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
        axes[0].plot([s / steps_per_iteration for s, _ in gold], [v for _, v in gold], "s-", color="C3", label="greedy, 200 val prompts")
        axes[0].legend()
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
    cp.add_argument("--seed", type=int, default=0, help="initial policy and sampling (same for the three settings)")
    cp.add_argument("--output", default=None, help="json of the per-iteration figures")
    pp = sub.add_parser("plot")
    pp.add_argument("kind", choices=("curves", "gold"))
    pp.add_argument("inputs", nargs="+", help="curves: --output jsons of `curves`; gold: one metrics.csv")
    pp.add_argument("--out", required=True)
    pp.add_argument("--steps-per-iteration", type=int, default=8, help="gold: ppo_epochs x num_mini_batches")
    args = parser.parse_args()
    if args.command == "plot":
        plot_curves(args.inputs, args.out) if args.kind == "curves" else plot_gold(args.inputs[0], args.out, args.steps_per_iteration)
    else:
        speed(args) if args.command == "speed" else curves(args)


if __name__ == "__main__":
    main()
