"""Measure the quickstart (the main job): wall time and gold answer accuracy before/after SFT.

    python benchmarks/quickstart.py [--seeds 0 1 2]

Runs ``lit-rlhf fit --config configs/quickstart.yaml`` once per seed (one CPU thread, W&B offline) and
prints a Markdown table row per seed plus the command, for ``benchmarks/results/sft.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
        command = [
            sys.executable, "-m", "lit_rlhf", "fit", "--config", "configs/quickstart.yaml",
            f"--seed_everything={seed}", f"--trainer.default_root_dir={tmp}",
            f"--trainer.logger.init_args.save_dir={tmp}", "--trainer.enable_progress_bar=false",
        ]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        result = json.loads(next(Path(tmp).rglob("gold_eval.json")).read_text())
    return {"seed": seed, "wall_s": wall, "before": result["before"], "after": result["after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print("| seed | gold accuracy before | after | wall time (s) |\n|---|---|---|---|")
    for seed in args.seeds:
        r = run(seed)
        print(f"| {r['seed']} | {r['before']:.3f} | {r['after']:.3f} | {r['wall_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
