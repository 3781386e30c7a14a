"""PRM/ORM scoring and best-of-N selection, by hand."""

import math

import pytest
import torch

from lit_rlhf.eval.best_of_n import BestOfNResult, selection_accuracy
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


def test_inspect_sees_every_draw_and_pick():
    correct = torch.tensor([[True, False, False, False], [False, False, True, False]])
    scores = {"s": torch.tensor([[0.1, 0.9, 0.2, 0.3], [0.5, 0.4, 0.8, 0.1]])}
    seen = []
    acc = selection_accuracy(correct, [2, 4], scores, trials=6, seed=3,
                             inspect=lambda n, draw, picks: seen.append((n, draw, picks["s"])))
    assert [n for n, _, _ in seen] == [2] * 6 + [4] * 6
    for n, draw, pick in seen:
        assert draw.shape == (2, n) and (draw == pick[:, None]).any(1).all()  # the pick is one of the drawn
        assert torch.equal(pick, torch.stack([row[scores["s"][p][row].argmax()] for p, row in enumerate(draw)]))
    assert [pick.tolist() for n, _, pick in seen if n == 4] == [[1, 2]] * 6  # the whole pool: the maxima
    hits = [correct[[0, 1], pick].float().mean().item() for n, _, pick in seen if n == 2]
    assert acc["s"][2][0] == pytest.approx(sum(hits) / 6)  # the picks are the ones the accuracy counts


def test_best_of_n_result_save_load_round_trip(tmp_path):
    result = BestOfNResult(
        ["1+1=", "2*3="], [["1+1=2\n#### 2", "1+1=3\n#### 3"], ["2*3=6\n#### 6", "junk"]],
        torch.tensor([[True, False], [True, False]]), [[2, 3], [6, None]],
        {"PRM (product)": torch.tensor([[0.75, 0.25], [0.5, 0.125]])}, {"pass@N": {1: (0.5, 0.0), 2: (1.0, 0.0)}},
    )
    back = BestOfNResult.load(result.save(tmp_path / "bon", plot=False))
    assert back.prompts == result.prompts and back.candidates == result.candidates and back.answers == result.answers
    assert torch.equal(back.correct, result.correct)
    assert torch.equal(back.scores["PRM (product)"], result.scores["PRM (product)"])
    assert back.accuracy == result.accuracy
    lines = (tmp_path / "bon" / "candidates.jsonl").read_text().splitlines()
    (tmp_path / "bon" / "candidates.jsonl").write_text(lines[0] + "\n" + lines[1].replace('"answers"', '"answer"'))
    with pytest.raises(ValueError, match=r"candidates.jsonl:2: missing field\(s\) \['answers'\]"):
        BestOfNResult.load(tmp_path / "bon")
