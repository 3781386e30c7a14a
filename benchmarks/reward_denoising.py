"""Secrets of RLHF II, in miniature: does preference strength find noisy pairs, and do the treatments help?

    python benchmarks/reward_denoising.py [--seeds 0 1 2] [--noise 0.25] [--pairs 2048] [--epochs 2] [--margins-only]
        [--annotator uniform|bradley-terry] [--val-pairs 512]

Ground truth: a text's reward is (#'g' − #'b') in a random 16-character string over {g, b, x, y}; training
pairs are labelled by that reward with a fraction ``--noise`` of them flipped (ties dropped); validation pairs
are clean. ``--annotator bradley-terry`` instead flips a pair of true gap ``d`` with probability ``σ(−d / --noise)``
(a Bradley–Terry rater: similar pairs near a coin flip, separable ones almost always right, as human labels are).
For each seed: an ensemble of 5 tiny reward models gives each training pair its strength
(`lit-rlhf strength`), then a reward model is trained on the pairs as they are (baseline), with the weakest 20%
flipped, with soft labels (0.5) on the weakest 20%, with the adaptive margin (clipped at 0), and with flip +
margin. Reported: precision of the weakest 20% as "noisy", and clean validation accuracy of each variant.
Second table (Llama 2 margins): every pair carries a rating level from its true reward gap (1: negligibly,
2: slightly, 3-4: better, >= 5: significantly better); a reward model without margin and with the "small" and
"large" margin tables; clean validation accuracy per level.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
from pathlib import Path

import torch

from lit_rlhf.cli import main as cli_main
from lit_rlhf.cli import make_cli

TINY = ('{name: "lit-rlhf:tiny-llama", config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, '
        'num_attention_heads: 2, num_key_value_heads: 2}}')


LEVELS = ("significantly better", "better", "slightly better", "negligibly better / unsure")


def level(gap: int) -> str:
    return LEVELS[0] if gap >= 5 else LEVELS[1] if gap >= 3 else LEVELS[2] if gap == 2 else LEVELS[3]


def flip_probability(gap: int, noise: float, annotator: str) -> float:
    """Chance that the rater prefers the worse text of a pair whose true rewards differ by ``gap`` > 0."""
    return noise if annotator == "uniform" else 1.0 / (1.0 + math.exp(gap / noise))


def write_pairs(path: Path, n: int, seed: int, noise: float, annotator: str = "uniform") -> None:
    rng = random.Random(seed)
    reward = lambda t: t.count("g") - t.count("b")  # noqa: E731
    with path.open("w") as f:
        written = 0
        while written < n:
            a, b = ("".join(rng.choice("gbxy") for _ in range(16)) for _ in range(2))
            if reward(a) == reward(b):
                continue
            good, bad = (a, b) if reward(a) > reward(b) else (b, a)
            noisy = noise > 0 and rng.random() < flip_probability(reward(good) - reward(bad), noise, annotator)
            f.write(json.dumps({"prompt": "rate:", "chosen": bad if noisy else good, "rejected": good if noisy else bad,
                                "noisy": noisy, "rating": level(reward(good) - reward(bad))}) + "\n")
            written += 1


def config(tmp: Path, train: Path, val: Path, epochs: int = 2) -> Path:
    path = tmp / "rm.yaml"
    path.write_text(f"""
model:
  class_path: lit_rlhf.modules.RewardModel
  init_args:
    model: {TINY}
    optimizer: {{class_path: torch.optim.AdamW, init_args: {{lr: 0.003}}}}
data:
  class_path: lit_rlhf.data.PreferenceDataModule
  init_args: {{train: {train}, val: {val}, batch_size: 32, max_length: 48}}
trainer: {{accelerator: cpu, max_epochs: {epochs}, logger: false, enable_checkpointing: false,
          enable_progress_bar: false,
          enable_model_summary: false, num_sanity_val_steps: 0, default_root_dir: {tmp}}}
""")
    return path


def val_metrics(cfg: Path, seed: int, extra: list[str]) -> dict[str, float]:
    cli = make_cli(["--config", str(cfg), f"--seed_everything={seed}", *extra], run=False, save_config=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]


def run(seed: int, noise: float, pairs: int, epochs: int, margins_only: bool, annotator: str = "uniform",
        val_pairs: int = 512) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        train, val, scored = tmp / "train.jsonl", tmp / "val.jsonl", tmp / "scored.jsonl"
        write_pairs(train, pairs, seed, noise, annotator)
        write_pairs(val, val_pairs, 10_000 + seed, 0.0)
        cfg = config(tmp, train, val, epochs)
        result = {} if margins_only else denoising(seed, cfg, train, scored)
        for table in ("none", "small", "large"):
            extra = [f"--data.init_args.train={train}",
                     "--model.init_args.margin=" + ("none" if table == "none" else "rating")]
            if table != "none":
                extra.append(f"--model.init_args.rating_margins={table}")
            metrics = val_metrics(cfg, seed, extra)
            for lvl in LEVELS:
                result[f"{table}|{lvl}"] = metrics.get(f"val/accuracy/{lvl}", float("nan"))
    return result


def denoising(seed: int, cfg: Path, train: Path, scored: Path) -> dict[str, float]:
    """Precision of the weakest 20% as noisy, and clean accuracy of each treatment."""
    cli_main(["strength", "--members", "5", "--output", str(scored), "--config", str(cfg),
              f"--data.init_args.train={train}"])
    rows = sorted((json.loads(line) for line in scored.read_text().splitlines()), key=lambda r: r["strength_mean"])
    bottom = rows[: len(rows) // 5]
    result = {"precision@20%": sum(r["noisy"] for r in bottom) / len(bottom)}
    margin = ["--model.init_args.margin=adaptive", "--model.init_args.clip_margin=true"]
    variants = {
        "baseline": [f"--data.init_args.train={train}"],
        "flip 20%": [f"--data.init_args.train={scored}", "--data.init_args.flip_fraction=0.2"],
        "soft 0.5 on weakest 20%": [
            f"--data.init_args.train={scored}", "--data.init_args.soft_label_bands=[[0.0, 0.2, 0.5]]"
        ],
        "adaptive margin": [f"--data.init_args.train={scored}", *margin],
        "flip + margin": [f"--data.init_args.train={scored}", "--data.init_args.flip_fraction=0.2", *margin],
    }
    for label, extra in variants.items():
        result[label] = val_metrics(cfg, seed, extra)["val/accuracy"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--pairs", type=int, default=2048, help="training pairs")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--margins-only", action="store_true", help="only the Llama 2 margin table")
    parser.add_argument("--annotator", choices=["uniform", "bradley-terry"], default="uniform",
                        help="label noise: a fixed flip rate, or σ(−gap / noise) per pair")
    parser.add_argument("--val-pairs", type=int, default=512, help="clean validation pairs")
    parser.add_argument("--json", default=None, help="also write each seed's figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [run(seed, args.noise, args.pairs, args.epochs, args.margins_only, args.annotator, args.val_pairs)
               for seed in args.seeds]
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seeds": results}, indent=1))

    def cell(key: str, minus: str | None = None) -> str:
        values = [r[key] - (r[minus] if minus else 0.0) for r in results]
        above = f" ({sum(v > 0 for v in values)}/{len(values)} > 0)" if minus else ""
        return f"{statistics.mean(values):+.3f} ± {statistics.pstdev(values):.3f}{above}" if minus else \
            f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    print(f"{args.annotator} noise {args.noise}, {args.pairs} pairs, {args.epochs} epochs, seeds {args.seeds} "
          "(mean ± std)")
    keys = [k for k in results[0] if "|" not in k]
    if keys:
        print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        print("| " + " | ".join(cell(k) for k in keys) + " |")
    print("\n| margin table | " + " | ".join(LEVELS) + " |\n|" + "---|" * (len(LEVELS) + 1))
    for table in ("none", "small", "large"):
        print(f"| {table} | " + " | ".join(cell(f"{table}|{lvl}") for lvl in LEVELS) + " |")
    print("\npaired by seed, gain over no margin (seeds where it is > 0):")
    for table in ("small", "large"):
        print(f"| {table} − none | " + " | ".join(cell(f"{table}|{lvl}", f"none|{lvl}") for lvl in LEVELS) + " |")


if __name__ == "__main__":
    main()
