"""Secrets of RLHF II, in miniature: does preference strength find noisy pairs, and do the treatments help?

    python benchmarks/rm_denoise.py [--seeds 0 1 2] [--noise 0.25]

Ground truth: a text's reward is (#'g' − #'b') in a random 16-character string over {g, b, x, y}; training
pairs are labelled by that reward with a fraction ``--noise`` of them flipped (ties dropped); validation pairs
are clean. For each seed: an ensemble of 5 tiny reward models gives each training pair its strength
(`lit-rlhf strength`), then a reward model is trained on the pairs as they are (baseline), with the weakest 20%
flipped, with soft labels (0.5) on the weakest 20%, and with the adaptive margin (clipped at 0). Reported:
precision of the weakest 20% as "noisy", and clean validation accuracy of each variant.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch

from lit_rlhf.cli import main as cli_main
from lit_rlhf.cli import make_cli

TINY = ('{name: "lit-rlhf:tiny-llama", config: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, '
        'num_attention_heads: 2, num_key_value_heads: 2}}')


def write_pairs(path: Path, n: int, seed: int, noise: float) -> None:
    rng = random.Random(seed)
    reward = lambda t: t.count("g") - t.count("b")  # noqa: E731
    with path.open("w") as f:
        written = 0
        while written < n:
            a, b = ("".join(rng.choice("gbxy") for _ in range(16)) for _ in range(2))
            if reward(a) == reward(b):
                continue
            good, bad = (a, b) if reward(a) > reward(b) else (b, a)
            noisy = rng.random() < noise
            f.write(json.dumps({"prompt": "rate:", "chosen": bad if noisy else good, "rejected": good if noisy else bad,
                                "noisy": noisy}) + "\n")
            written += 1


def config(tmp: Path, train: Path, val: Path) -> Path:
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
trainer: {{accelerator: cpu, max_epochs: 2, logger: false, enable_checkpointing: false, enable_progress_bar: false,
          enable_model_summary: false, num_sanity_val_steps: 0, default_root_dir: {tmp}}}
""")
    return path


def val_accuracy(cfg: Path, seed: int, extra: list[str]) -> float:
    cli = make_cli(["--config", str(cfg), f"--seed_everything={seed}", *extra], run=False, save_config=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]["val/accuracy"]


def run(seed: int, noise: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        train, val, scored = tmp / "train.jsonl", tmp / "val.jsonl", tmp / "scored.jsonl"
        write_pairs(train, 2048, seed, noise)
        write_pairs(val, 512, 10_000 + seed, 0.0)
        cfg = config(tmp, train, val)
        cli_main(["strength", "--members", "5", "--output", str(scored), "--config", str(cfg),
                  f"--data.init_args.train={train}"])
        rows = sorted((json.loads(line) for line in scored.read_text().splitlines()), key=lambda r: r["strength_mean"])
        bottom = rows[: len(rows) // 5]
        result = {"precision@20%": sum(r["noisy"] for r in bottom) / len(bottom)}
        variants = {
            "baseline": [f"--data.init_args.train={train}"],
            "flip 20%": [f"--data.init_args.train={scored}", "--data.init_args.flip_fraction=0.2"],
            "soft 0.5 on weakest 20%": [f"--data.init_args.train={scored}", "--data.init_args.soft_label_bands=[[0.0, 0.2, 0.5]]"],
            "adaptive margin": [f"--data.init_args.train={scored}", "--model.init_args.margin=adaptive",
                                "--model.init_args.clip_margin=true"],
        }
        for label, extra in variants.items():
            result[label] = val_accuracy(cfg, seed, extra)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=0.25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [run(seed, args.noise) for seed in args.seeds]
    keys = list(results[0])
    print(f"noise {args.noise}, seeds {args.seeds}")
    print("| " + " | ".join(["seed", *keys]) + " |\n|" + "---|" * (len(keys) + 1))
    for seed, r in zip(args.seeds, results):
        print("| " + " | ".join([str(seed), *(f"{r[k]:.3f}" for k in keys)]) + " |")
    print("| median | " + " | ".join(f"{statistics.median(r[k] for r in results):.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
