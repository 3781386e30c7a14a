"""Test defaults: one CPU thread, fixed seeds, no network, caches in a temp folder."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tok():
    """The byte tokenizer of ``lit-rlhf:tiny-llama``."""
    from lit_rlhf.models import build_byte_tokenizer

    return build_byte_tokenizer()


@pytest.fixture
def tiny_spec():
    from lit_rlhf.models import ModelSpec

    return ModelSpec(config=dict(TINY))


def write_jsonl(path, rows) -> str:
    """Write ``rows`` (dicts) as jsonl; return the path as a string."""
    import json

    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def word_pairs(path, n, seed, noise=0.0, alphabet="xyzqwv ") -> str:
    """Preference pairs with a known rule: chosen replies contain 'good', rejected ones 'bad', at a random
    place in random text; a fraction ``noise`` of the pairs is flipped (marked ``noisy``)."""
    import random

    rng = random.Random(seed)
    text = lambda k: "".join(rng.choice(alphabet) for _ in range(k))  # noqa: E731
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        good, bad = text(a) + "good" + text(12 - a), text(b) + "bad" + text(13 - b)
        noisy = rng.random() < noise
        rows.append({"prompt": f"{rng.randint(0, 99)}:", "chosen": bad if noisy else good,
                     "rejected": good if noisy else bad, "noisy": noisy})
    return write_jsonl(path, rows)


def quiet_trainer(tmp_path, **kwargs):
    """A CPU Lightning trainer without logger, checkpoints, progress bar, summary or sanity validation
    (``kwargs`` may override any of these)."""
    import lightning as L

    settings = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0)
    return L.Trainer(default_root_dir=tmp_path, **{**settings, **kwargs})


def online_trainer(tmp_path, max_steps, callbacks=(), **kwargs):
    """:func:`quiet_trainer` for the online-RL modules: ``max_steps`` iterations, no validation, checkpoints only
    when ``callbacks`` (e.g. a ``ModelCheckpoint``) are given."""
    return quiet_trainer(tmp_path, max_steps=max_steps, enable_checkpointing=bool(callbacks),
                         callbacks=list(callbacks), limit_val_batches=0, **kwargs)


def arithmetic_prompts(n_train=8, batch_size=4):
    """A prompt data module over the arithmetic task (at most 2 steps): ``n_train`` train, 4 val and 4 test prompts."""
    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.tasks import Arithmetic

    return PromptDataModule(task=Arithmetic(max_steps=2), task_sizes={"train": n_train, "val": 4, "test": 4},
                            batch_size=batch_size, max_length=64)


def keyword_text(rng, positive: bool) -> str:
    """12 random noise letters with 'right' (positive) or 'wrong' inserted at a random place."""
    noise = "".join(rng.choice("xyzqwv ") for _ in range(12))
    cut = rng.randint(0, 12)
    return noise[:cut] + ("right" if positive else "wrong") + noise[cut:]


def run_in_group(cmd: list[str], cwd: os.PathLike | str, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in a new process group (stdout and stderr merged); after ``timeout`` seconds kill the whole
    group. Returns ``(exit code, output)``, the exit code ``None`` when the run was killed."""
    import signal
    import subprocess

    # as from a user's shell: the command starts its own W&B service. The pytest worker's (started by other tests'
    # in-process W&B runs, advertised in WANDB_SERVICE) outlives each command and would keep its run open, so that a
    # second command continuing that run (`--ckpt_path last`) is refused ("run ID ... is in use").
    env = {k: v for k, v in env.items() if k != "WANDB_SERVICE"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output
    return proc.returncode, output


def tiny_prm_checkpoint(folder, steps: int = 1, lr: float = 1e-3) -> str:
    """A ``ProcessRewardModel`` (tiny Llama) trained ``steps`` steps on arithmetic step labels; its ``.ckpt`` path."""
    from pathlib import Path

    from lit_rlhf.data import StepLabelDataModule
    from lit_rlhf.models import ModelSpec
    from lit_rlhf.modules import ProcessRewardModel
    from lit_rlhf.tasks import Arithmetic

    prm = ProcessRewardModel(model=ModelSpec(config=dict(TINY)), optimizer=lambda p: torch.optim.AdamW(p, lr=lr))
    dm = StepLabelDataModule(task=Arithmetic(max_steps=2), task_sizes={"train": 16, "val": 4, "test": 4},
                             batch_size=8, max_length=64)
    trainer = quiet_trainer(folder, max_steps=steps, limit_val_batches=0)
    trainer.fit(prm, datamodule=dm)
    path = Path(folder) / "prm.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture
def fitted_trainers(monkeypatch):
    """The list of every ``lightning.Trainer`` whose ``fit`` runs during the test (filled as they run)."""
    import lightning as L

    trainers = []
    fit = L.Trainer.fit

    def recording_fit(self, *args, **kwargs):
        trainers.append(self)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    return trainers
