"""End to end: ``lit-rlhf fit --config configs/quickstart.yaml`` learns multi-step arithmetic on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1260)  # ~3 min alone; the slow tier runs it beside a pytest-xdist worker's DDP runs
def test_quickstart_config_learns_arithmetic(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "lit_rlhf", "fit", "--config", "configs/quickstart.yaml",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-3000:], (err.stderr or b"")[-3000:]
        pytest.fail(f"quickstart did not finish in 1200 s; output tail: {tail}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]

    results = sorted(tmp_path.rglob("gold_eval.json"))
    assert len(results) == 1, (results, output[-3000:])
    gold = json.loads(results[0].read_text())
    # a random-init tiny Llama cannot produce "#### <answer>"; 1500 SFT steps make it mostly right
    assert gold["before"] <= 0.05, gold
    assert gold["after"] >= 0.5, gold
    assert gold["history"][0]["step"] == 0 and gold["history"][-1]["step"] == 1500, gold["history"]
    assert "gold/reward before training" in output

    runs = [p for p in tmp_path.glob("wandb/offline-run-*") if p.is_dir()]
    assert runs, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))[:50]
    assert any(any(run.glob("*.wandb")) for run in runs), [list(run.iterdir()) for run in runs]
    # the overrides took effect: the CLI saved its config in the run's own folder under tmp_path, next to the
    # checkpoint written at the end of training
    configs = sorted(tmp_path.glob("lit-rlhf/*/config.yaml"))
    assert len(configs) == 1 and (configs[0].parent / "checkpoints" / "last.ckpt").is_file(), configs
