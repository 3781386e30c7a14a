"""GRPO iteration: lit_rlhf vs TRL's GRPOTrainer vs a hand-written PyTorch loop, on identical work; and peak RSS
of GRPO vs PPO.

    pip install trl   # benchmark-only dependency (TRL 1.16, no vLLM)
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py speed [--steps 6] [--rounds 3] [--prompt-tokens 16]
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py speed --num-mini-batches 2 [--num-iterations 2] \
        --runners "lit_rlhf GRPO" "lit_rlhf GRPO (no sharing)"   # lit_rlhf only, ratios to "no sharing"
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py memory [--hidden 512 --layers 8]
    OMP_NUM_THREADS=1 python benchmarks/grpo_vs_trl.py generation [--rounds 3 --steps 6] [--compiled]

Identical work on every runner: the same tiny Llama (by default the quickstart policy's shape, as in
``ppo_benchmark.py`` and ``online_rl.py``: hidden 64, 2 layers, byte vocabulary; or ``--hidden``/``--layers`` on
the ``lit-rlhf:tiny-llama`` asset) with the same initial weights, saved once as a Hugging Face folder that every
runner loads; the same prompts (``--prompt-tokens`` tokens each, BOS included, so no prompt padding); 8 prompts
per step, G = 8 completions per prompt (64 per step), sampled at T = 1 with exactly ``--max-new-tokens`` new
tokens each (EOS is held back by ``min_new_tokens`` on every side: the folder's generation config for lit_rlhf
and the loop, ``generation_kwargs`` for TRL); the same reward function; group-normalised advantages, token-mean loss,
one optimizer step per generation (on-policy, ``num_iterations`` 1), KL weight β (k3) with a frozen reference copy
when β > 0; fp32; no gradient checkpointing; fused AdamW (TRL's default) with the same settings; gradient clipping at
1.0; one CPU thread.

Speed: CPU-seconds (process time) per iteration from batch start to optimizer step end, and of it the time spent
generating ("generation": inside ``model.generate`` for TRL and the loop, inside lit_rlhf's ``generate`` for
lit_rlhf, whose decode loop does not call ``model.generate``; the runner "lit_rlhf GRPO (model.generate)" makes it
fall back to ``model.generate``); the rest ("update") is everything else of the iteration (scoring, log-prob
passes, loss, backward, optimizer). Each runner runs in its own subprocess for ``--warmup`` + ``--steps`` iterations
(warm-up dropped); the runners are interleaved within each of ``--rounds`` rounds; medians over all measured steps.
Memory: each runner in its own process; peak RSS (``ru_maxrss``) and its rise above the RSS after the imports.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_vs_trl import rss_mb  # noqa: E402

PROMPTS, G, LR = 8, 8, 1e-5
# the lit_rlhf GRPO runners' update (--num-mini-batches, --num-iterations); the other runners take one on-policy step
UPDATE = {"num_mini_batches": 1, "num_iterations": 1}
DIGITS = set("0123456789")


def digit_share(completions: list[str]) -> list[float]:
    """The benchmark's reward: the share of digits in each completion (cheap, and spread within groups)."""
    return [sum(ch in DIGITS for ch in c) / max(len(c), 1) for c in completions]


def lit_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
    return torch.tensor(digit_share(completions))


def trl_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    return digit_share(completions)


def prompt_texts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` arithmetic-looking prompts of ``tokens - 1`` ASCII characters (one byte token each; BOS makes
    ``tokens``)."""
    if tokens < 2:
        raise ValueError(f"--prompt-tokens must be >= 2 (BOS + one character), got {tokens}")
    rng = random.Random(seed)
    return ["".join(rng.choice("0123456789+-* ") for _ in range(tokens - 2)) + "=" for _ in range(n)]


def prepare(tmp: Path, n_prompts: int, prompt_tokens: int, max_new_tokens: int, overrides: dict[str, int]) -> None:
    """The shared inputs: the initial model folder (its generation config fixes the completion length) and
    ``prompts.jsonl``."""
    from dpo_vs_trl import save_initial_model
    from transformers import GenerationConfig

    folder = tmp / "init"
    save_initial_model(folder, overrides)
    config = GenerationConfig.from_pretrained(folder)
    config.min_new_tokens = max_new_tokens  # every completion has exactly max_new_tokens tokens
    config.save_pretrained(folder)
    texts = prompt_texts(n_prompts, prompt_tokens)
    (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))


class Clock:
    """Process time per iteration and the part of it spent generating: inside ``owner.<name>``, wrapped in place
    (``model.generate`` for TRL and the loop; lit_rlhf's own ``generate``, which decodes without
    ``model.generate``)."""

    def __init__(self, owner: Any, name: str = "generate") -> None:
        self.steps: list[tuple[float, float]] = []
        self.generated: list[tuple[int, int]] = []  # (rows, new tokens) of each generate call
        self.in_generate = 0.0
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                out = original(*args, **kwargs)
            finally:
                self.in_generate += time.process_time() - t
            if isinstance(out, tuple):  # lit_rlhf's generate: (texts, sequences, prompt width)
                self.generated.append((out[1].shape[0], out[1].shape[1] - out[2]))
            else:
                prompt = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
                self.generated.append((out.shape[0], out.shape[1] - prompt.shape[1]))
            return out

        setattr(owner, name, timed)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self.t, self.g = time.process_time(), self.in_generate

    def end(self, *args: Any, **kwargs: Any) -> None:
        self.steps.append((time.process_time() - self.t, self.in_generate - self.g))


def optimizer(params):
    return torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)


def run_lit(tmp: Path, iterations: int, beta: float, max_new_tokens: int, method: str = "grpo",
            shared_prefix: bool = True, decoder: str = "auto", layouts: tuple[str, ...] = ()) -> Clock:
    import lightning as L

    import lit_rlhf.rollout.experience as experience
    from lit_rlhf.data import PromptDataModule
    from lit_rlhf.modules import GRPO, PPO

    sampling = {"temperature": 1.0, "max_new_tokens": max_new_tokens}
    if method == "grpo":
        module = GRPO(model=str(tmp / "init"), sampling=sampling, group_size=G, beta=beta, reward_fn=lit_reward,
                      optimizer=optimizer, shared_prefix=shared_prefix, **UPDATE)
        for layout in layouts:  # switched off (e.g. "cached": each prompt once under a 4-D mask only)
            module.layout.enabled[layout] = False
        batch = PROMPTS
    else:  # PPO on the same completions per iteration: 64 single samples, one epoch, one minibatch
        module = PPO(model=str(tmp / "init"), sampling=sampling, reward_fn=lit_reward, ppo_epochs=1, num_mini_batches=1,
                     value_head=method == "ppo_value_head", optimizer=optimizer)
        batch = PROMPTS * G
    if decoder != "auto":
        experience.generate = functools.partial(experience.generate, decoder=decoder)
    clock = Clock(experience)  # the rollout's generate (its decode loop, or model.generate where it falls back)

    class Hooks(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            clock.begin()

        def on_train_batch_end(self, *args: Any) -> None:
            clock.end()

    dm = PromptDataModule(train=str(tmp / "prompts.jsonl"), batch_size=batch, group_by_length=False, max_length=512)
    steps = UPDATE["num_mini_batches"] * UPDATE["num_iterations"] if method == "grpo" else 1  # optimizer steps
    L.Trainer(accelerator="cpu", max_steps=iterations * steps, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
              callbacks=[Hooks()]).fit(module, datamodule=dm)
    return clock


def run_trl(tmp: Path, iterations: int, beta: float, max_new_tokens: int) -> Clock:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=PROMPTS * G, num_generations=G,
        max_completion_length=max_new_tokens, generation_kwargs={"min_new_tokens": max_new_tokens}, beta=beta,
        learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0, optim="adamw_torch_fused", max_grad_norm=1.0,
        max_steps=iterations, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False, report_to=[],
        save_strategy="no", logging_steps=10_000, dataloader_num_workers=0, seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(tmp / "init")
    clock = Clock(model)

    class Hooks(TrainerCallback):
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            clock.begin()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            clock.end()

    GRPOTrainer(model=model, reward_funcs=trl_reward, args=args, processing_class=AutoTokenizer.from_pretrained(
        tmp / "init"), train_dataset=load_dataset("json", data_files=str(tmp / "prompts.jsonl"), split="train"),
        callbacks=[Hooks()]).train()
    return clock


def run_loop(tmp: Path, iterations: int, beta: float, max_new_tokens: int) -> Clock:
    """The floor: generate, score, group advantages, one forward with gradient (LM head on the completion
    positions), k3 KL against a frozen copy when β > 0, token-mean loss, backward, clip, fused AdamW."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tmp / "init").train()
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if beta > 0 else None
    tok = AutoTokenizer.from_pretrained(tmp / "init")
    opt = optimizer(policy.parameters())
    texts = [json.loads(line)["prompt"] for line in (tmp / "prompts.jsonl").read_text().splitlines()]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).tolist()
    clock = Clock(policy)
    N = max_new_tokens

    def token_logps(net, ids, attention):
        logits = net(input_ids=ids, attention_mask=attention, logits_to_keep=N + 1, use_cache=False).logits[:, :-1]
        return torch.gather(logits, -1, ids[:, -N:, None]).squeeze(-1) - logits.logsumexp(-1)

    for step in range(iterations):
        clock.begin()
        prompts = [texts[i] for i in order[step * PROMPTS:(step + 1) * PROMPTS] for _ in range(G)]
        enc = tok(text=prompts, padding=True, padding_side="left", return_tensors="pt")
        with torch.no_grad():
            ids = policy.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=True,
                                  temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=N, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)
        completion = ids[:, -N:]
        is_eos = (completion == tok.eos_token_id).long()
        mask = ((is_eos.cumsum(-1) - is_eos) == 0).float()  # up to and including the first EOS
        attention = torch.cat([enc["attention_mask"], mask.long()], 1)
        rewards = torch.tensor(digit_share(tok.batch_decode(completion, skip_special_tokens=True))).view(-1, G)
        adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1, 1)
        logps = token_logps(policy, ids, attention)
        per_token = -torch.exp(logps - logps.detach()) * adv
        if ref is not None:
            with torch.no_grad():
                ref_logps = token_logps(ref, ids, attention)
            per_token = per_token + beta * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
        loss = (per_token * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        clock.end()
    return clock


RUNNERS = {
    "hand-written loop": run_loop,
    "lit_rlhf GRPO": run_lit,
    "lit_rlhf GRPO (no sharing)": lambda tmp, n, beta, m: run_lit(tmp, n, beta, m, shared_prefix=False),
    "lit_rlhf GRPO (model.generate)": lambda tmp, n, beta, m: run_lit(tmp, n, beta, m, decoder="hf"),
    "TRL GRPOTrainer": run_trl,
}
MASK_RUNNER = {  # --with-mask-runner: each prompt once under the one-row 4-D-mask layout (the cache layout off)
    "lit_rlhf GRPO (prompt once, 4-D mask only)": lambda tmp, n, beta, m: run_lit(tmp, n, beta, m, layouts=("cached",)),
}
MEMORY_RUNNERS = {
    "lit_rlhf GRPO (β = 0: policy only)": lambda tmp, n, m: run_lit(tmp, n, 0.0, m),
    "lit_rlhf GRPO (β = 0.04: + frozen reference)": lambda tmp, n, m: run_lit(tmp, n, 0.04, m),
    "lit_rlhf PPO (+ reference + critic model)": lambda tmp, n, m: run_lit(tmp, n, 0.05, m, method="ppo"),
    "lit_rlhf PPO (+ reference + value head on the policy)": lambda tmp, n, m: run_lit(
        tmp, n, 0.05, m, method="ppo_value_head"),
    "TRL GRPOTrainer (β = 0)": lambda tmp, n, m: run_trl(tmp, n, 0.0, m),
}


def child(args: argparse.Namespace) -> None:
    """One runner in this process; prints one json line: per-step (total, generation) CPU-s and memory."""
    import lightning  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    import lit_rlhf.modules  # noqa: F401

    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = rss_mb()
    tmp, iterations = Path(args.tmp), args.warmup + args.steps
    UPDATE.update(num_mini_batches=args.num_mini_batches, num_iterations=args.num_iterations)
    if args.memory:
        clock = MEMORY_RUNNERS[args.only](tmp, iterations, args.max_new_tokens)
    else:
        clock = {**RUNNERS, **MASK_RUNNER}[args.only](tmp, iterations, args.beta, args.max_new_tokens)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"steps": clock.steps[args.warmup:], "generated": clock.generated, "base_mb": base,
                      "peak_mb": peak}))


def run_child(name: str, tmp: str, args: argparse.Namespace, beta: float = 0.0, memory: bool = False) -> dict:
    cmd = [sys.executable, __file__, "child", "--only", name, "--tmp", tmp, "--beta", str(beta), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--max-new-tokens", str(args.max_new_tokens),
           "--num-mini-batches", str(args.num_mini_batches), "--num-iterations", str(args.num_iterations)]
    proc = subprocess.run(cmd + (["--memory"] if memory else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} (β = {beta}) failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = PROMPTS * G
    bad = [g for g in result["generated"] if g != [expected, args.max_new_tokens]]
    if bad:  # the identical-work guarantee: every generate call made 64 completions of exactly N tokens
        raise RuntimeError(f"{name}: generate calls {bad} differ from ({expected}, {args.max_new_tokens})")
    return result


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def speed(args: argparse.Namespace, tmp: str) -> None:
    runners = [r for r in RUNNERS if args.runners is None or r in args.runners]
    minibatches = (args.num_mini_batches, args.num_iterations) != (1, 1)
    reference, short = ("lit_rlhf GRPO (no sharing)", "no sharing") if minibatches else ("TRL GRPOTrainer", "TRL")
    if reference not in runners:
        raise SystemExit(f"--runners must include '{reference}' (the ratios' reference)")
    if minibatches and any(not r.startswith("lit_rlhf GRPO") for r in runners):
        raise SystemExit("--num-mini-batches/--num-iterations: lit_rlhf GRPO runners only (the others take one step)")
    runners += list(MASK_RUNNER) if args.with_mask_runner else []
    steps: dict[tuple[float, str], list[list[float]]] = {(b, r): [] for b in args.betas for r in runners}
    loads = [load()]
    for _ in range(args.rounds):
        for beta in args.betas:
            for runner in runners:
                steps[beta, runner] += run_child(runner, tmp, args, beta)["steps"]
        loads.append(load())
    print(f"prompt tokens {args.prompt_tokens}, new tokens {args.max_new_tokens}, {PROMPTS} prompts × G = {G}; "
          f"lit_rlhf: {args.num_mini_batches} minibatches × {args.num_iterations} passes per iteration; "
          f"{args.rounds} rounds × {args.steps} measured iterations; {' → '.join(loads)}\n")
    print(f"| β | runner | CPU-s per iteration | generation | update (rest) | iteration vs {short} | "
          f"update vs {short} |")
    print("|---|---|---|---|---|---|---|")
    for beta in args.betas:
        med = {r: [statistics.median(s[i] for s in steps[beta, r]) for i in (0, 1)]
               + [statistics.median(s[0] - s[1] for s in steps[beta, r])] for r in runners}
        trl = med[reference]
        for r, (total, gen, rest) in med.items():
            print(f"| {beta:g} | {r} | {total:.3f} | {gen:.3f} | {rest:.3f} | {total / trl[0]:.2f}× | "
                  f"{rest / trl[2]:.2f}× |")


def memory(args: argparse.Namespace, tmp: str) -> None:
    print(f"{load()}\n\n| runner | peak RSS (MiB) | rise above RSS after imports (MiB) |\n|---|---|---|")
    for runner in MEMORY_RUNNERS:
        r = run_child(runner, tmp, args, memory=True)
        print(f"| {runner} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} |", flush=True)
    print(load())


def generation(args: argparse.Namespace, tmp: str) -> None:
    """Generation alone, in this process: lit_rlhf's ``generate`` with its decode loop vs with ``model.generate``,
    on one iteration's work (64 rows = 8 prompts × G, exactly ``--max-new-tokens`` each), alternated
    ``--rounds`` × ``--steps`` times; medians of CPU-seconds per call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_rlhf.rollout.generation import SamplingConfig, generate

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "init").eval()
    tok = AutoTokenizer.from_pretrained(Path(tmp) / "init")
    texts = [json.loads(line)["prompt"] for line in (Path(tmp) / "prompts.jsonl").read_text().splitlines()]
    rows = [tok(t)["input_ids"] for t in texts[:PROMPTS] for _ in range(G)]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0)
    times: dict[str, list[float]] = {"loop": [], "hf": []}
    print(load())
    for i in range(args.warmup + args.rounds * args.steps):
        for decoder in times:
            t = time.process_time()
            _, sequences, width = generate(model, tok, rows, sampling, decoder=decoder)
            if i >= args.warmup:
                times[decoder].append(time.process_time() - t)
            assert sequences.shape == (PROMPTS * G, width + args.max_new_tokens), sequences.shape
    if args.compiled:
        ids = torch.tensor(rows)
        compiled, eager = (static_cache_decoder(model, ids, args.max_new_tokens, c) for c in (True, False))
        start = time.perf_counter()
        compiled()  # the compilation (inductor's C++ build runs in worker processes: wall time, not CPU time)
        print(f"compilation and first call: {time.perf_counter() - start:.0f} s wall")
        times.update(compiled=[], static=[])
        for i in range(args.warmup + args.rounds * args.steps):
            for name, decode in (("compiled", compiled), ("static", eager)):
                t = time.process_time()
                decode()
                if i >= args.warmup:
                    times[name].append(time.process_time() - t)
    hf = statistics.median(times["hf"])
    labels = {"loop": "lit_rlhf decode loop", "hf": "model.generate", "static": "static-cache loop, eager",
              "compiled": "static-cache loop, torch.compile"}
    print(f"{load()}\n\n| decoder | CPU-s per call (median of {len(times['hf'])}) | vs model.generate |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {labels[name]} | {statistics.median(values):.3f} | {statistics.median(values) / hf:.2f}× |")


def static_cache_decoder(model: Any, prompt_ids: torch.Tensor, new_tokens: int, compiled: bool) -> Any:
    """A probe of compiled decoding (not a lit_rlhf code path): ``prompt_ids`` (B, P) without padding, a
    ``StaticCache`` of P + ``new_tokens`` positions, then one ``model`` forward per new token sampled at T = 1 by
    the inverse CDF; with ``compiled`` the decode step runs through ``torch.compile`` (fixed shapes: one graph)."""
    from transformers import StaticCache

    B, P = prompt_ids.shape
    mask = torch.ones(B, P + new_tokens, dtype=torch.long)

    def step(tokens: torch.Tensor, cache: Any, position: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=tokens, attention_mask=mask, past_key_values=cache, cache_position=position,
                       position_ids=position.expand(B, 1), use_cache=True).logits[:, -1]
        return logits.float().softmax(-1)

    step_fn = torch.compile(step, dynamic=False) if compiled else step

    @torch.no_grad()
    def decode() -> torch.Tensor:
        cache = StaticCache(config=model.config, max_cache_len=P + new_tokens)
        logits = model(input_ids=prompt_ids, attention_mask=mask[:, :P], past_key_values=cache,
                       cache_position=torch.arange(P), use_cache=True).logits[:, -1]
        probs, out = logits.float().softmax(-1), []
        for i in range(new_tokens):
            token = (probs.cumsum(-1) < torch.rand(B, 1)).sum(-1, keepdim=True).clamp(max=probs.shape[-1] - 1)
            out.append(token)
            if i + 1 < new_tokens:
                probs = step_fn(token, cache, torch.tensor([P + i]))
        return torch.cat(out, 1)

    return decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("speed", "memory", "generation", "child"))
    parser.add_argument("--steps", type=int, default=6, help="measured iterations per runner and round")
    parser.add_argument("--warmup", type=int, default=2, help="iterations dropped at the start of each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.04])
    parser.add_argument("--prompt-tokens", type=int, default=16, help="tokens per prompt, BOS included")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--num-mini-batches", type=int, default=1,
                        help="speed: lit_rlhf GRPO's minibatches per pass (> 1: lit_rlhf runners only)")
    parser.add_argument("--num-iterations", type=int, default=1, help="speed: lit_rlhf GRPO's passes per iteration")
    parser.add_argument("--runners", nargs="+", choices=list(RUNNERS), help="speed: these runners only (default all)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (default: the quickstart policy's 64)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--with-mask-runner", action="store_true",
                        help="also run lit_rlhf with each prompt once under a 4-D mask only (long prompts)")
    parser.add_argument("--compiled", action="store_true",
                        help="generation: also a static-cache decode loop, eager and through torch.compile (a probe)")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--beta", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.command == "child":
        child(args)
        return
    from ppo_benchmark import MODEL

    overrides: dict[str, int] = {} if args.hidden or args.layers else dict(MODEL)
    if args.hidden:
        overrides.update(hidden_size=args.hidden, intermediate_size=3 * args.hidden)
    if args.layers:
        overrides.update(num_hidden_layers=args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp), PROMPTS * G * (args.warmup + args.steps), args.prompt_tokens, args.max_new_tokens, overrides)
        {"speed": speed, "memory": memory, "generation": generation}[args.command](args, tmp)


if __name__ == "__main__":
    main()
