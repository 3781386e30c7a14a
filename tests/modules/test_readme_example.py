"""The README's subclassing example runs and does what it says."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _example_namespace():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "class PerExampleSFT" in b)  # the subclassing example, not usage snippets
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_per_example_sft_weights_examples_equally(tiny_spec):
    module = _example_namespace()["PerExampleSFT"](model=tiny_spec)
    ids = torch.tensor([[1, 10, 11, 12, 13, 2], [1, 20, 21, 2, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    completion = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    total, count = module.loss(batch)
    logp = module(ids, attention).float().log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    first = -logp[0, 1:5].mean()   # tokens 2..5 are predicted at positions 1..4
    second = -logp[1, 1:3].mean()  # tokens 2..3 are predicted at positions 1..2
    assert count.item() == 2
    assert torch.allclose(total, first + second, atol=1e-5)
