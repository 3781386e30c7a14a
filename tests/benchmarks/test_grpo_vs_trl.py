"""The identical-work setup of benchmarks/grpo_vs_trl.py: prompt lengths, tokenization on both sides, the clock."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_dir = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_dir))
_spec = importlib.util.spec_from_file_location("grpo_vs_trl", _dir / "grpo_vs_trl.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("tokens", [8, 16, 256])
def test_prompts_have_exactly_the_asked_tokens_and_tokenize_alike_on_both_sides(tokens):
    from lit_rlhf.data.tokenize import Encoder
    from lit_rlhf.models import build_byte_tokenizer

    tok = build_byte_tokenizer()
    texts = bench.prompt_texts(5, tokens)
    trl_ids = tok(text=texts)["input_ids"]  # how TRL's GRPOTrainer tokenizes plain-text prompts
    assert [len(ids) for ids in trl_ids] == [tokens] * 5
    assert trl_ids == [Encoder(tok).prompt_ids(t) for t in texts]  # lit_rlhf's PromptDataModule
    assert len(set(texts)) == 5 and bench.prompt_texts(5, tokens) == texts  # distinct, and fixed by the seed


def test_too_short_prompts_are_refused():
    with pytest.raises(ValueError, match="prompt-tokens"):
        bench.prompt_texts(1, 1)


def test_digit_share_reward():
    assert bench.digit_share(["12ab", "", "x9"]) == [0.5, 0.0, 0.5]
    assert torch.equal(bench.lit_reward([], ["1a"]), torch.tensor([0.5]))


def test_clock_splits_generation_from_the_rest_and_records_shapes():
    class Fake(torch.nn.Module):
        def generate(self, input_ids, **kwargs):
            return torch.cat([input_ids, torch.zeros(len(input_ids), 3, dtype=torch.long)], 1)

    model = Fake()
    clock = bench.Clock(model)
    clock.begin()
    model.generate(input_ids=torch.ones(4, 5, dtype=torch.long))
    sum(i * i for i in range(200_000))  # some work outside generate
    clock.end()
    assert clock.generated == [(4, 3)]
    (total, generation), = clock.steps
    assert 0 <= generation <= total and total > 0
