"""PRM/ORM scoring and best-of-N selection, by hand."""

import math

import pytest
import torch

from lit_rlhf.eval.best_of_n import selection_accuracy
from lit_rlhf.eval.verify import correct_probability, first_wrong_step, solution_scores


def test_correct_probability_two_and_three_classes():
    two = torch.tensor([[0.0, math.log(3.0)]])  # p = [1/4, 3/4]
    assert correct_probability(two).tolist() == pytest.approx([0.75])
    three = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]])  # p = [1/8, 2/8, 5/8]
    assert correct_probability(three).tolist() == pytest.approx([7 / 8])
    assert correct_probability(three, neutral_is_correct=False).tolist() == pytest.approx([5 / 8])
    with pytest.raises(ValueError, match="2 or 3 classes"):
        correct_probability(torch.zeros(1, 4))


def test_solution_scores_product_min_last_and_empty():
    probs = torch.tensor([[0.9, 0.5, 0.8], [0.6, 0.0, 0.0], [0.3, 0.2, 0.1]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    assert solution_scores(probs, mask, "product").tolist() == pytest.approx([0.36, 0.6, 0.0])
    assert solution_scores(probs, mask, "min").tolist() == pytest.approx([0.5, 0.6, 0.0])
    assert solution_scores(probs, mask, "last").tolist() == pytest.approx([0.8, 0.6, 0.0])
    with pytest.raises(ValueError, match="aggregate"):
        solution_scores(probs, mask, "mean")


def test_first_wrong_step():
    probs = torch.tensor([[0.9, 0.4, 0.1], [0.9, 0.8, 0.2], [0.7, 0.6, 0.9]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    assert first_wrong_step(probs, mask).tolist() == [1, -1, -1]  # row 1: the 0.2 is padding
    assert first_wrong_step(probs, mask, threshold=0.65).tolist() == [1, -1, 1]


def test_selection_with_full_pool_is_deterministic():
    # 3 problems, pool of 3; with N = M every draw holds the whole pool
    correct = torch.tensor([[True, False, False], [False, True, False], [False, False, False]])
    scores = {"s": torch.tensor([[0.9, 0.1, 0.2], [0.9, 0.1, 0.2], [0.5, 0.4, 0.3]])}
    answers = [[7, 3, 3], [1, 2, 2], [None, None, 5]]
    acc = selection_accuracy(correct, [3], scores, answers, trials=5)
    assert acc["s"][3] == (pytest.approx(1 / 3), 0.0)  # picks right on problem 0 only
    assert acc["majority"][3] == (pytest.approx(1 / 3), 0.0)  # 3 wins on p0 (wrong), 2 on p1 (right), 5 on p2
    assert acc["pass@N"][3] == (pytest.approx(2 / 3), 0.0)


def test_selection_n1_is_expected_accuracy_and_ties_are_random():
    torch.manual_seed(0)
    correct = torch.rand(200, 8) < 0.3
    flat = {"constant": torch.zeros(200, 8)}  # every candidate tied: a random pick
    acc = selection_accuracy(correct, [1, 8], flat, trials=200, seed=1)
    base = correct.float().mean().item()
    assert acc["constant"][1][0] == pytest.approx(base, abs=0.01)
    assert acc["constant"][8][0] == pytest.approx(base, abs=0.01)  # ties broken at random, not "first"
    assert acc["pass@N"][8][0] == pytest.approx(correct.any(1).float().mean().item())
    assert acc["pass@N"][1][0] == pytest.approx(base, abs=0.01)


def test_majority_tie_is_random_and_no_answer_is_wrong():
    correct = torch.tensor([[True, False]])
    acc = selection_accuracy(correct, [2], answers=[[4, 5]], trials=400, seed=0)
    assert 0.4 < acc["majority"][2][0] < 0.6
    acc = selection_accuracy(torch.tensor([[False, False]]), [2], answers=[[None, None]], trials=3)
    assert acc["majority"][2][0] == 0.0


def test_selection_rejects_bad_shapes():
    with pytest.raises(ValueError, match="pool size"):
        selection_accuracy(torch.ones(2, 3, dtype=torch.bool), [4])
    with pytest.raises(ValueError, match="shape"):
        selection_accuracy(torch.ones(2, 3, dtype=torch.bool), [2], {"s": torch.zeros(2, 2)})
