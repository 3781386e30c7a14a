"""Evaluation: gold-reward evaluation by sampling, verifiers and best-of-N, callbacks, logging."""

from lit_rlhf.eval.best_of_n import BestOfNResult, best_of_n, sample_candidates, selection_accuracy
from lit_rlhf.eval.gold import GoldEval, GoldResult, sample_and_score, sequence_log_ratios
from lit_rlhf.eval.verify import correct_probability, first_wrong_step, score_outcomes, score_steps, solution_scores
from lit_rlhf.eval.w2s import performance_gap_recovered
from lit_rlhf.eval.wandb import AutoWandbLogger

__all__ = [
    "AutoWandbLogger", "BestOfNResult", "GoldEval", "GoldResult", "best_of_n", "correct_probability",
    "first_wrong_step",
    "performance_gap_recovered", "sample_and_score", "sample_candidates", "score_outcomes", "score_steps",
    "selection_accuracy", "sequence_log_ratios", "solution_scores",
]
