"""Secrets of RLHF II §3.2, in miniature: does MetaRM keep separating responses from a shifted distribution?

    OMP_NUM_THREADS=1 python benchmarks/meta_rm_shift.py [--seeds 0 1 2 3 4] [--steps 48]

In-distribution data ``D`` (the word pairs of ``tests/conftest.py``): a chosen reply holds 'good', the
rejected one 'bad', each at a random place in 12-13 noise letters from "xyzqwv ". Shifted distribution ``S``
(``shifted_responses`` of ``tests/modules/test_meta_rm.py``): ``K = 4`` responses per prompt written with
other noise letters ("abcde "), each holding 'good', 'bad' or no keyword (14 characters in all). Every seed
draws its own data:

* 512 training pairs from ``D``, 256 in-distribution validation pairs;
* 128 shifted groups given to MetaRM as its ``shifted`` responses (unlabelled; the vanilla RM never sees them);
* 64 held-out shifted groups, on which the spread ``J`` (``meta_difference_loss``, mean over groups) is measured;
* 256 labelled shifted test pairs, two responses from ``S`` with different keyword classes and the known
  preference 'good' > no keyword > 'bad' (responses whose noise spells an unintended 'bad' are redrawn).

For each seed, a vanilla ``RewardModel`` and ``MetaRM`` at ``meta_lr`` η ∈ {0.03, 0.1, 0.3} (first order,
the paper's rule) start from the same initial weights and see the same preference batches for the same number
of steps: tiny Llama (hidden 32, 1 layer), AdamW lr 3e-3, batch 16 pairs, 4 shifted prompts (16 sequences) per
meta step. Reported (mean ± std over seeds): (a) J on held-out shifted groups (K = 4: J ∈ [0.375, 0.75);
higher = more spread), (b) pairwise accuracy on the labelled shifted test pairs, (c) in-distribution validation
accuracy; and per η the paired difference of J to the vanilla RM of the same seed and the number of seeds
where its J (and its shifted accuracy) beats the vanilla RM's.
About 20 seconds on one CPU thread with the defaults (48 steps = 1.5 epochs, the setup of
``test_miniature_keeps_in_distribution_accuracy``); ``--steps 400`` takes about 90 seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L
import torch

from lit_rlhf.data import Collator, Encoder, MetaRMDataModule, PreferenceDataModule, PreferenceRow
from lit_rlhf.data.shifted import ShiftedCollator, encode_shifted, shifted_row
from lit_rlhf.losses.meta import meta_difference_loss
from lit_rlhf.models import ModelSpec
from lit_rlhf.modules import RewardModel
from lit_rlhf.modules.meta_rm import MetaRM

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2}
ETAS = (0.03, 0.1, 0.3)
K = 4
MAX_LENGTH = 64
SHIFT_ALPHABET = "abcde "
RANK = {"good": 2, "": 1, "bad": 0}  # the known preference on the shifted distribution


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def word_pairs(path: Path, n: int, seed: int, alphabet: str = "xyzqwv ") -> str:
    """In-distribution pairs (as ``tests/conftest.py::word_pairs`` without noise): 'good' beats 'bad'."""
    rng = random.Random(seed)
    text = lambda k: "".join(rng.choice(alphabet) for _ in range(k))
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        rows.append({"prompt": f"{rng.randint(0, 99)}:", "chosen": text(a) + "good" + text(12 - a),
                     "rejected": text(b) + "bad" + text(13 - b)})
    return write_jsonl(path, rows)


def shifted_response(rng: random.Random, word: str) -> str:
    """One 14-character response from the shifted distribution holding ``word`` ('' = no keyword)."""
    noise = lambda m: "".join(rng.choice(SHIFT_ALPHABET) for _ in range(m))
    a = rng.randint(0, 10)
    return noise(a) + word + noise(14 - a - len(word))


def shifted_groups(path: Path, n: int, seed: int) -> str:
    """Unlabelled shifted groups (as ``tests/modules/test_meta_rm.py::shifted_responses``): K responses per prompt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        responses = [shifted_response(rng, rng.choice(("good", "bad", ""))) for _ in range(K)]
        rows.append({"prompt": f"{rng.randint(0, 99)}:", "responses": responses})
    return write_jsonl(path, rows)


def keyword_class(text: str) -> str | None:
    """'good', 'bad' or '' for a response holding exactly one keyword kind (None if both)."""
    good, bad = "good" in text, "bad" in text
    return None if good and bad else "good" if good else "bad" if bad else ""


def shifted_test_pairs(path: Path, n: int, seed: int) -> str:
    """Labelled shifted pairs: two keyword classes, chosen = the higher one ('good' > none > 'bad')."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(list(RANK), 2)
        texts = []
        for word in words:
            text = shifted_response(rng, word)
            while keyword_class(text) != word:  # the noise letters can spell 'bad' by chance
                text = shifted_response(rng, word)
            texts.append(text)
        (w0, t0), (w1, t1) = zip(words, texts)
        chosen, rejected = (t0, t1) if RANK[w0] > RANK[w1] else (t1, t0)
        rows.append({"prompt": f"{rng.randint(0, 99)}:", "chosen": chosen, "rejected": rejected})
    return write_jsonl(path, rows)


def trainer(root: Path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     default_root_dir=root, **kw)


@torch.no_grad()
def pair_accuracy(module: RewardModel, path: str) -> float:
    """Fraction of pairs with r(chosen) > r(rejected) (ties count as wrong, as in ``val/accuracy``)."""
    enc = Encoder(module.tokenizer, max_length=MAX_LENGTH)
    rows = [PreferenceRow(**json.loads(line)) for line in Path(path).read_text().splitlines()]
    batch = Collator(module.tokenizer.pad_token_id, pair_keys=("chosen", "rejected"))([enc.preference(r) for r in rows])
    chosen, rejected = module(batch["input_ids"], batch["attention_mask"]).chunk(2)
    return (chosen > rejected).float().mean().item()


@torch.no_grad()
def spread(module: RewardModel, path: str) -> float:
    """Mean J (``meta_difference_loss``) over the held-out shifted groups."""
    enc = Encoder(module.tokenizer, max_length=MAX_LENGTH)
    lines = Path(path).read_text().splitlines()
    groups = [shifted_row(json.loads(line), f"{path}:{i}") for i, line in enumerate(lines)]
    batch = ShiftedCollator(module.tokenizer.pad_token_id)([encode_shifted(enc, g) for g in groups])
    rewards = module(batch["input_ids"], batch["attention_mask"]).view(len(groups), K)
    return meta_difference_loss(rewards).mean().item()


def train_and_measure(
    data: dict[str, str], root: Path, meta_lr: float | None, seed: int, steps: int
) -> dict[str, float]:
    """Train one model (``meta_lr=None``: vanilla RM) and return its three metrics."""
    L.seed_everything(seed, verbose=False)  # same initial weights for every method of a seed
    kw = {"model": ModelSpec(config=dict(TINY)), "optimizer": lambda p: torch.optim.AdamW(p, lr=3e-3)}
    common = {"train": data["train"], "batch_size": 16, "max_length": MAX_LENGTH, "seed": seed}
    if meta_lr is None:
        module, dm = RewardModel(**kw), PreferenceDataModule(**common)
    else:
        module = MetaRM(meta_lr=meta_lr, **kw)
        dm = MetaRMDataModule(shifted=data["shifted"], shifted_batch_size=4, **common)
    trainer(root, max_steps=steps).fit(module, datamodule=dm)
    module.eval()
    return {"J": spread(module, data["held_out"]), "shifted acc": pair_accuracy(module, data["shifted_test"]),
            "in-dist acc": pair_accuracy(module, data["val"])}


def run(seed: int, steps: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = 10 * seed
        data = {
            "train": word_pairs(root / "train.jsonl", 512, base),
            "val": word_pairs(root / "val.jsonl", 256, base + 1),
            "shifted": shifted_groups(root / "shifted.jsonl", 128, base + 2),
            "held_out": shifted_groups(root / "held_out.jsonl", 64, base + 3),
            "shifted_test": shifted_test_pairs(root / "shifted_test.jsonl", 256, base + 4),
        }
        methods = {"vanilla RM": None, **{f"MetaRM η={eta}": eta for eta in ETAS}}
        return {name: train_and_measure(data, root, eta, seed, steps) for name, eta in methods.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=48, help="optimizer steps per model (batch 16 pairs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in ("lightning.pytorch", "lightning.fabric"):  # no per-fit "GPU available" / "max_steps reached" lines
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\.|$)")  # Lightning's advice on workers, pytree, ...
    start = time.perf_counter()
    results = []
    for seed in args.seeds:
        results.append(run(seed, args.steps))
        print(f"seed {seed}: " + "; ".join(f"{m} " + ", ".join(f"{k} {v:.3f}" for k, v in r.items())
                                          for m, r in results[-1].items()), flush=True)

    methods, metrics = list(results[0]), list(results[0]["vanilla RM"])

    def cell(method: str, key: str) -> str:
        values = [r[method][key] for r in results]
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}"

    def wins(method: str, key: str) -> str:
        if method == "vanilla RM":
            return "–"
        return f"{sum(r[method][key] > r['vanilla RM'][key] for r in results)}/{len(results)}"

    print(f"\nMetaRM miniature: {args.steps} steps, seeds {args.seeds} (mean ± std over seeds); "
          f"J on 64 held-out shifted groups of K={K}; 256 labelled shifted pairs; 256 in-distribution pairs")
    def paired(method: str, key: str) -> str:
        if method == "vanilla RM":
            return "–"
        diffs = [r[method][key] - r["vanilla RM"][key] for r in results]
        return f"{statistics.mean(diffs):+.3f} ± {statistics.pstdev(diffs):.3f}"

    header = ["method", *metrics, "ΔJ vs vanilla (paired)", "seeds J > vanilla", "seeds shifted acc > vanilla"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for m in methods:
        print(f"| {m} | " + " | ".join(cell(m, k) for k in metrics)
              + f" | {paired(m, 'J')} | {wins(m, 'J')} | {wins(m, 'shifted acc')} |")
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
