"""On-policy preference pairs: K samples per prompt, every pair labelled by the gold reward."""

import pytest
import torch

from lit_rlhf.models import load_model
from lit_rlhf.rollout.generation import SamplingConfig
from lit_rlhf.rollout.pairs import sample_preference_pairs


def test_sample_preference_pairs_labels_every_pair_by_gold_reward(tiny_spec, tok):
    class Length:  # gold reward: completion length
        def reward(self, prompts, completions):
            return torch.tensor([float(len(c)) for c in completions])

    torch.manual_seed(0)
    model = load_model(tiny_spec, "causal_lm", tok)
    prompts = ["1+2=", "3*4="]
    rows = sample_preference_pairs(model, tok, Length(), prompts, [tok(p)["input_ids"] for p in prompts],
                                   samples_per_prompt=4, sampling=SamplingConfig(max_new_tokens=12, temperature=1.0))
    assert 0 < len(rows) <= 12  # at most 6 pairs per prompt (ties skipped)
    for row in rows:
        assert len(row["chosen"]) == row["gold_reward_chosen"] > row["gold_reward_rejected"] == len(row["rejected"])
    assert {r["prompt"] for r in rows} <= set(prompts)
    with pytest.raises(ValueError, match="samples_per_prompt"):
        sample_preference_pairs(model, tok, Length(), prompts, [[1], [1]], samples_per_prompt=1)


def test_an_annotator_decides_the_labels_and_the_gold_reward_is_kept_or_absent(tiny_spec, tok):
    class Length:  # gold reward: completion length
        def reward(self, prompts, completions):
            return torch.tensor([float(len(c)) for c in completions])

    def shortest(prompts, completions):  # the annotator prefers the opposite: a list of floats is fine
        return [-float(len(c)) for c in completions]

    model = load_model(tiny_spec, "causal_lm", tok)
    prompts = ["1+2=", "3*4="]
    ids = [tok(p)["input_ids"] for p in prompts]
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0)
    for task in (Length(), None):
        torch.manual_seed(0)
        rows = sample_preference_pairs(model, tok, task, prompts, ids, 4, sampling, annotator=shortest)
        assert rows
        for row in rows:
            assert row["score_chosen"] == -len(row["chosen"]) > row["score_rejected"] == -len(row["rejected"])
            if task is None:
                assert "gold_reward_chosen" not in row
            else:  # the gold reward disagrees with the annotator on every labelled pair, and is written as is
                assert row["gold_reward_chosen"] == len(row["chosen"]) < row["gold_reward_rejected"]
    with pytest.raises(ValueError, match="no reward to label"):
        sample_preference_pairs(model, tok, None, prompts, ids, 4, sampling)
