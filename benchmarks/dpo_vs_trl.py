"""DPO training step: lit_rlhf vs TRL's DPOTrainer vs a hand-written PyTorch loop, on identical work.

    pip install trl   # benchmark-only dependency
    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py [--steps 30] [--repeats 3]        # CPU-s per step
    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py --memory [--hidden 512 --layers 8]  # peak RSS
    OMP_NUM_THREADS=1 python benchmarks/dpo_vs_trl.py --prompt 192 --reply 64 [--varied] [--memory]  # long prompts

The same tiny Llama (`lit-rlhf:tiny-llama`: hidden 128, 4 layers, or the sizes given) with the same initial
weights, saved once as a Hugging Face folder that every runner loads; the same byte tokenizer and preference
pairs (BOS + prompt, reply + EOS); batches of 8 pairs; fp32; no gradient checkpointing; β = 0.1 sigmoid loss;
fused AdamW (TRL's default optimizer) with the same settings; no gradient clipping; one CPU thread. References:
(a) a frozen copy of the starting model, (b) reference log-probs precomputed before training (their one-off pass is
not timed).
lit_rlhf runs padding-free by default (the padded [chosen; rejected] rows are packed into fewer, up to twice as
wide rows, so little compute is spent on padding) and applies the LM head only at the positions that predict
completion tokens; its padded run does the work of the hand-written loop with that LM-head trick (the loop is run
both ways: full logits as the plain floor, and with the trick).

Long prompts (``--prompt P --reply R``): prompts of P tokens (BOS included) and replies of R tokens (EOS
included), chosen and rejected of equal length; ``--varied``: each prompt and reply length drawn uniformly from
[L/2, 3L/2]. lit_rlhf's default then encodes each pair's prompt once when that is cheaper (by default
its prompt forwarded first, then chosen and rejected on its keys and values; ``shared_prefix``); its runs with the
older one-row layout ([prompt, chosen, rejected] under a block-causal 4-D mask) and without sharing (padded, and the
per-batch padded-or-packed rule) are the comparison.

Speed: CPU-seconds (process time) per optimizer step, batch start to step end, after 5 warm-up steps;
median over all measured steps of all repeats; the runners are interleaved within each repeat.
Memory: each runner in its own process (so that one runner's allocations do not hide another's) for
a few steps; peak RSS (``ru_maxrss``) and its rise above the RSS after the imports.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from rm_vs_trl import pairs
from transformers import TrainerCallback

BATCH, WARMUP, LR, BETA = 8, 5, 1e-4, 0.1
MAX_LENGTH = [64]  # the tokens a pair's row may hold (raised for long prompts)


class StepClock(TrainerCallback):
    """Process time of each optimizer step (HF Trainer step hooks; :meth:`for_lightning` for Lightning)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, *args, **kwargs) -> None:
        self.t = time.process_time()

    def on_step_end(self, *args, **kwargs) -> None:
        self.times.append(time.process_time() - self.t)

    def for_lightning(self) -> L.Callback:
        clock = self

        class BatchHooks(L.Callback):
            def on_train_batch_start(self, *args) -> None:
                clock.on_step_begin()

            def on_train_batch_end(self, *args) -> None:
                clock.on_step_end()

        return BatchHooks()


def optimizer(params):
    return torch.optim.AdamW(params, lr=LR, fused=True)


def rss_mb() -> float:
    """Current resident set size (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def save_initial_model(folder: Path, overrides: dict[str, int]) -> None:
    from transformers import LlamaForCausalLM

    from lit_rlhf.models import build_byte_tokenizer
    from lit_rlhf.models.assets import tiny_llama_config

    tok = build_byte_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tok, overrides)).save_pretrained(folder)
    tok.save_pretrained(folder)


def long_pairs(n: int, prompt: int, reply: int, varied: bool, seed: int = 0) -> list[dict[str, str]]:
    """Pairs whose prompt has ``prompt`` tokens with BOS and whose replies have ``reply`` tokens with EOS (byte
    tokenizer: a character per token); ``varied``: lengths uniform in [L/2, 3L/2], chosen and rejected apart."""
    rng = random.Random(seed)

    def length(n: int) -> int:
        return rng.randint(n // 2, n * 3 // 2) if varied else n

    def text(k: int) -> str:  # k - 1 characters (at least one), the first not a space
        return rng.choice("xyzqwv") + "".join(rng.choice("xyzqwv ") for _ in range(k - 2))

    return [{"prompt": text(length(prompt)), "chosen": text(length(reply)), "rejected": text(length(reply))}
            for _ in range(n)]


def run_lit(folder: Path, data: Path, steps: int, reference: str, cache: Path, grouped: bool = False,
            padding_free: bool = True, shared_prefix: bool = True, layouts: tuple[str, ...] = ()) -> list[float]:
    from lit_rlhf.data import PreferenceDataModule
    from lit_rlhf.modules import DPO

    clock = StepClock()
    module = DPO(model=str(folder), beta=BETA, reference=reference, reference_cache=str(cache), optimizer=optimizer,
                 padding_free=padding_free, shared_prefix=shared_prefix)
    for layout in layouts:  # switch these layouts off (e.g. "cached": the prompt once under a 4-D mask only)
        module.layout.enabled[layout] = False
    dm = PreferenceDataModule(train=str(data), batch_size=BATCH, max_length=MAX_LENGTH[0], group_by_length=grouped)
    trainer = L.Trainer(accelerator="cpu", max_steps=WARMUP + steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[clock.for_lightning()])
    trainer.fit(module, datamodule=dm)
    return clock.times[WARMUP:]


def run_trl(folder: Path, data: Path, steps: int, reference: str, out: Path) -> list[float]:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    clock = StepClock()
    precompute = reference == "precomputed"
    args = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=WARMUP + steps, learning_rate=LR, beta=BETA,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to=[], save_strategy="no",
        logging_steps=10_000, max_length=MAX_LENGTH[0], dataloader_num_workers=0, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.01, precompute_ref_log_probs=precompute, optim="adamw_torch_fused",
        max_grad_norm=0.0,
    )
    model = AutoModelForCausalLM.from_pretrained(folder)
    ref_model = None if precompute else AutoModelForCausalLM.from_pretrained(folder)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args,
                         processing_class=AutoTokenizer.from_pretrained(folder),
                         train_dataset=load_dataset("json", data_files=str(data), split="train"), callbacks=[clock])
    trainer.train()
    return clock.times[WARMUP:]


def run_loop(folder: Path, data: Path, steps: int, head_on_completions: bool = False) -> list[float]:
    """The floor: a minimal PyTorch DPO step (one forward over [chosen; rejected], frozen-copy reference).

    ``head_on_completions``: run the backbone, then the LM head and log-softmax only at the positions that
    predict completion tokens (the trick lit_rlhf uses), instead of over all ``(B, T)`` positions."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from lit_rlhf.data import PreferenceDataModule

    policy = AutoModelForCausalLM.from_pretrained(folder)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = optimizer(policy.parameters())
    dm = PreferenceDataModule(train=str(data), batch_size=BATCH, max_length=MAX_LENGTH[0], tokenizer=str(folder))
    loader = torch.utils.data.DataLoader(dm.dataset("train"), batch_size=BATCH, shuffle=True, collate_fn=dm.collator())

    def logps(net, ids, attention, mask):
        if head_on_completions:
            hidden = net.model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            where = mask[:, 1:].bool()
            logits = net.lm_head(hidden[:, :-1][where]).float()  # (N, V): completion positions only
            picked = torch.gather(logits, -1, ids[:, 1:][where][:, None]).squeeze(-1) - logits.logsumexp(-1)
            return torch.zeros(len(ids)).index_add(0, where.nonzero()[:, 0], picked)
        logits = net(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        picked = torch.gather(logits, -1, ids[:, 1:, None]).squeeze(-1) - logits.logsumexp(-1)
        return (picked * mask[:, 1:]).sum(-1)

    times = []
    for _, batch in zip(range(WARMUP + steps), loader):
        t = time.process_time()
        args = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        pc, pr = logps(policy, *args).chunk(2)
        with torch.no_grad():
            rc, rr = logps(ref, *args).chunk(2)
        loss = -F.logsigmoid(BETA * ((pc - rc) - (pr - rr))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.process_time() - t)
    return times[WARMUP:]


RUNNERS = {
    "hand-written loop (frozen copy)": lambda f, d, s, tmp: run_loop(f, d, s),
    "hand-written loop (frozen copy, LM head on completion positions)": lambda f, d, s, tmp: run_loop(
        f, d, s, head_on_completions=True),
    "lit_rlhf DPO (frozen copy, padded batches)": lambda f, d, s, tmp: run_lit(
        f, d, s, "copy", tmp / "cache", padding_free=False, shared_prefix=False),
    "lit_rlhf DPO (frozen copy, padding-free)": lambda f, d, s, tmp: run_lit(f, d, s, "copy", tmp / "cache"),
    "lit_rlhf DPO (precomputed, padding-free)": lambda f, d, s, tmp: run_lit(f, d, s, "precomputed", tmp / "cache"),
    "TRL DPOTrainer (frozen copy)": lambda f, d, s, tmp: run_trl(f, d, s, "copy", tmp / "trl"),
    "TRL DPOTrainer (precomputed)": lambda f, d, s, tmp: run_trl(f, d, s, "precomputed", tmp / "trl"),
    # lit_rlhf's default batching: other batches (less padding), so not part of the like-for-like ratios
    "lit_rlhf DPO (frozen copy, padding-free, length-grouped batches)": lambda f, d, s, tmp: run_lit(
        f, d, s, "copy", tmp / "cache", grouped=True),
}
LONG_RUNNERS = {  # --prompt: the default (shared prompts where cheaper) against lit_rlhf without sharing
    "hand-written loop (frozen copy)": RUNNERS["hand-written loop (frozen copy)"],
    "lit_rlhf DPO (frozen copy, default: shared prompts)": lambda f, d, s, tmp: run_lit(
        f, d, s, "copy", tmp / "cache"),
    "lit_rlhf DPO (frozen copy, shared prompts under a 4-D mask only)": lambda f, d, s, tmp: run_lit(
        f, d, s, "copy", tmp / "cache", layouts=("cached",)),
    "lit_rlhf DPO (frozen copy, no sharing: padded or packed)": lambda f, d, s, tmp: run_lit(
        f, d, s, "copy", tmp / "cache", shared_prefix=False),
    "lit_rlhf DPO (frozen copy, padded batches)": RUNNERS["lit_rlhf DPO (frozen copy, padded batches)"],
    "TRL DPOTrainer (frozen copy)": RUNNERS["TRL DPOTrainer (frozen copy)"],
    "lit_rlhf DPO (precomputed, default: shared prompts)": lambda f, d, s, tmp: run_lit(
        f, d, s, "precomputed", tmp / "cache"),
    "TRL DPOTrainer (precomputed)": RUNNERS["TRL DPOTrainer (precomputed)"],
}


def prepare(tmp: Path, steps: int, overrides: dict[str, int], long: tuple[int, int, bool] | None = None
            ) -> tuple[Path, Path]:
    folder, data = tmp / "init", tmp / "pairs.jsonl"
    save_initial_model(folder, overrides)
    n = BATCH * (WARMUP + steps) * 2
    rows = long_pairs(n, *long) if long else pairs(n)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, data


def one_runner(name: str, tmp: Path, steps: int, runners: dict) -> None:
    """Memory mode, in a child process: import everything, then run one runner and print its RSS figures."""
    import lightning  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import lit_rlhf.modules  # noqa: F401

    base = rss_mb()
    times = runners[name](tmp / "init", tmp / "pairs.jsonl", steps, tmp)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"name": name, "base_mb": base, "peak_mb": peak, "median_s": statistics.median(times)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak RSS per runner, each in its own process")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (default: the tiny-llama asset's)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--prompt", type=int, default=None, help="long-prompt setting: prompt tokens")
    parser.add_argument("--reply", type=int, default=64, help="long-prompt setting: reply tokens")
    parser.add_argument("--varied", action="store_true", help="long-prompt setting: lengths in [L/2, 3L/2]")
    parser.add_argument("--select", default=None, help="only the runners whose name contains this text")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # memory mode: the child's runner
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    long = (args.prompt, args.reply, args.varied) if args.prompt else None
    runners = LONG_RUNNERS if long else RUNNERS
    if args.select:
        runners = {k: v for k, v in runners.items() if args.select in k}
    if long:
        MAX_LENGTH[0] = (args.prompt + 2 * args.reply) * 2  # never truncates
    if args.only:
        one_runner(args.only, Path(args.tmp), args.steps, runners)
        return
    overrides = {}
    if args.hidden:
        overrides.update(hidden_size=args.hidden, intermediate_size=3 * args.hidden)
    if args.layers:
        overrides.update(num_hidden_layers=args.layers)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder, data = prepare(tmp, args.steps, overrides, long)
        if args.memory:
            print("| runner | peak RSS (MiB) | rise above RSS after imports (MiB) | "
                  f"CPU-s per step (median of {args.steps}) |")
            print("|---|---|---|---|")
            extra = ["--prompt", str(args.prompt), "--reply", str(args.reply), *["--varied"] * args.varied] if long \
                else []
            extra += ["--select", args.select] if args.select else []
            for runner in runners:
                out = subprocess.run([sys.executable, __file__, "--only", runner, "--tmp", name, "--steps",
                                      str(args.steps), *extra], capture_output=True, text=True, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {runner} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | {r['median_s']:.3f} |")
            return
        results: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(args.repeats):
            for runner, fn in runners.items():
                results[runner] += fn(folder, data, args.steps, tmp)
    median = {k: statistics.median(v) for k, v in results.items()}
    if long:
        report_long(median, len(results[runner]))
        return
    base = median["lit_rlhf DPO (frozen copy, padding-free)"]
    print(f"| runner | CPU-s per step (median of {len(results[runner])}) | vs lit_rlhf (frozen copy) |\n|---|---|---|")
    for runner, value in median.items():
        print(f"| {runner} | {value:.4f} | {value / base:.2f}× |")
    trl, padded = median["TRL DPOTrainer (frozen copy)"], median["lit_rlhf DPO (frozen copy, padded batches)"]
    loop, loop_head = median["hand-written loop (frozen copy)"], median[
        "hand-written loop (frozen copy, LM head on completion positions)"]
    print(f"\nlit_rlhf / TRL, frozen copy: {base / trl:.2f}× (padded batches: {padded / trl:.2f}×); precomputed: "
          f"{median['lit_rlhf DPO (precomputed, padding-free)'] / median['TRL DPOTrainer (precomputed)']:.2f}×; "
          f"lit_rlhf / hand loop, frozen copy: {base / loop:.2f}× (padded batches, the loop's own work: "
          f"{padded / loop:.2f}×); lit_rlhf / hand loop with the LM head on completion positions: "
          f"{base / loop_head:.2f}× (padded batches, the loop's own work: {padded / loop_head:.2f}×); "
          f"hand loop / TRL: {loop / trl:.2f}×, with the LM head on completion positions: {loop_head / trl:.2f}×")


def report_long(median: dict[str, float], n: int) -> None:
    """The long-prompt table and the ratios of the runners that ran."""
    base = median.get("lit_rlhf DPO (frozen copy, default: shared prompts)", next(iter(median.values())))
    print(f"| runner | CPU-s per step (median of {n}) | vs lit_rlhf default (frozen copy) |\n|---|---|---|")
    for runner, value in median.items():
        print(f"| {runner} | {value:.4f} | {value / base:.2f}× |")
    ratios = [("lit_rlhf default / TRL, frozen copy", "lit_rlhf DPO (frozen copy, default: shared prompts)",
               "TRL DPOTrainer (frozen copy)"),
              ("no sharing / TRL", "lit_rlhf DPO (frozen copy, no sharing: padded or packed)",
               "TRL DPOTrainer (frozen copy)"),
              ("padded / TRL", "lit_rlhf DPO (frozen copy, padded batches)", "TRL DPOTrainer (frozen copy)"),
              ("default / 4-D mask only", "lit_rlhf DPO (frozen copy, default: shared prompts)",
               "lit_rlhf DPO (frozen copy, shared prompts under a 4-D mask only)"),
              ("default / no sharing", "lit_rlhf DPO (frozen copy, default: shared prompts)",
               "lit_rlhf DPO (frozen copy, no sharing: padded or packed)"),
              ("default / padded", "lit_rlhf DPO (frozen copy, default: shared prompts)",
               "lit_rlhf DPO (frozen copy, padded batches)"),
              ("default / hand loop", "lit_rlhf DPO (frozen copy, default: shared prompts)",
               "hand-written loop (frozen copy)"),
              ("hand loop / TRL", "hand-written loop (frozen copy)", "TRL DPOTrainer (frozen copy)"),
              ("lit_rlhf default / TRL, precomputed", "lit_rlhf DPO (precomputed, default: shared prompts)",
               "TRL DPOTrainer (precomputed)")]
    print("\n" + "; ".join(f"{name}: {median[a] / median[b]:.2f}×" for name, a, b in ratios
                           if a in median and b in median))

if __name__ == "__main__":
    main()
