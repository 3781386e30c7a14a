"""Sampling from a LoRA policy: lit_rlhf's decode loop against ``model.generate`` on the same peft-wrapped model.

    OMP_NUM_THREADS=1 python benchmarks/decode_lora.py --repeats 3

SmolLM2-135M-Instruct (``lit-rlhf assets``) with a LoRA adapter (r 16, all linear layers), 32 rows (4 prompts × 8
samples, a group's rows next to each other), 24 new tokens at T = 1, one thread. CPU-seconds per ``generate`` call,
the two decoders alternated, medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_rlhf.models import ModelSpec, load_model, load_tokenizer
from lit_rlhf.models.loading import apply_lora
from lit_rlhf.rollout.generation import SamplingConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lit-rlhf:smollm2-135m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8, help="rows per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = ModelSpec(name=args.model, lora={"r": 16, "alpha": 32, "target_modules": "all-linear"})
    tok = load_tokenizer(spec)
    net = apply_lora(load_model(ModelSpec(name=args.model), "causal_lm", tok), spec, "CAUSAL_LM").eval()
    prompts = ["An actor who", "I watched this film", "The movie was", "This story is"]
    ids = [tok(t)["input_ids"] for t in prompts for _ in range(args.samples)]
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0)
    seconds: dict[str, list[float]] = {"model.generate": [], "lit_rlhf decode loop": []}
    for _ in range(args.repeats):
        for name, decoder in (("model.generate", "hf"), ("lit_rlhf decode loop", "loop")):
            start = time.process_time()
            generate(net, tok, ids, sampling, decoder=decoder)
            seconds[name].append(time.process_time() - start)
    base = statistics.median(seconds["model.generate"])
    for name, values in seconds.items():
        print(f"{name}: {statistics.median(values):.3f} CPU-s per call ({statistics.median(values) / base:.2f}x)")


if __name__ == "__main__":
    main()
