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
