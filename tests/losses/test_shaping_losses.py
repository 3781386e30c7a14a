"""Reward shaping maths: step rewards placed on tokens, the ensemble's uncertainty penalty, length rewards, and
REINFORCE++ with dense step rewards — against hand computation."""

import pytest
import torch

from lit_rlhf.losses import ensemble_reward, length_reward, place_step_rewards, reinforce_pp_advantages, whiten

MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_step_rewards_land_on_their_tokens_and_add_up_where_they_share_one():
    values = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.75, 0.0]])
    positions = torch.tensor([[1, 3, 3], [0, 2, 0]])
    step_mask = torch.tensor([[True, True, True], [True, True, False]])
    dense = place_step_rewards(values, positions, step_mask, MASK)
    assert dense.tolist() == [[0.0, 0.5, 0.0, 1.0, 0.0], [0.25, 0.0, 0.75, 0.0, 0.0]]


def test_step_rewards_refuse_padding_and_out_of_range_positions():
    with pytest.raises(ValueError, match="padding"):
        place_step_rewards(torch.ones(2, 1), torch.tensor([[0], [4]]), torch.ones(2, 1, dtype=torch.bool), MASK)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        place_step_rewards(torch.ones(2, 1), torch.tensor([[5], [0]]), torch.ones(2, 1, dtype=torch.bool), MASK)


def test_ensemble_reward_is_mean_minus_lambda_population_std():
    scores = torch.tensor([[1.0, 2.0, 0.0], [3.0, 6.0, 0.0]])  # 2 members x 3 completions
    # means 2, 4, 0; population stds 1, 2, 0
    assert ensemble_reward(scores, 0.5).tolist() == [1.5, 3.0, 0.0]
    assert ensemble_reward(scores).tolist() == [2.0, 4.0, 0.0]
    assert ensemble_reward(scores[:1], 3.0).tolist() == [1.0, 2.0, 0.0]  # one member: no spread


def test_length_reward_with_and_without_a_target():
    lengths = torch.tensor([3, 10, 7])
    assert length_reward(lengths).tolist() == [-3.0, -10.0, -7.0]
    assert length_reward(lengths, target=7).tolist() == [-4.0, -3.0, 0.0]


def test_reinforce_pp_adds_dense_step_rewards_before_the_returns():
    outcome = torch.tensor([2.0, 1.0])
    steps = torch.tensor([[0.0, 0.5, 0.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    # rewards: row 0 [0, .5, 0, -1, 2], row 1 [0, 0, 1 | pad pad]; returns (gamma 1) by hand:
    returns = torch.tensor([[1.5, 1.5, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 0.0, 0.0]])
    valid = returns[MASK.bool()]
    expected = (returns - valid.mean()) / (valid.var() + 1e-8).sqrt() * MASK
    got = reinforce_pp_advantages(outcome, MASK, step_rewards=steps)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(got, whiten(returns, MASK) * MASK, atol=1e-6)
    with pytest.raises(ValueError, match="step_rewards"):
        reinforce_pp_advantages(outcome, MASK, step_rewards=steps[:, :4])
