"""Verifiers at inference: PRM step scores, solution scores and ORM outcome scores.

They live in :mod:`lit_rlhf.rollout.verifiers` (the RL reward sources use them too); this module keeps the names.
"""

from lit_rlhf.losses.classification import correct_probability, first_wrong_step  # noqa: F401  (public here too)
from lit_rlhf.rollout.verifiers import AGGREGATES, Aggregate, score_outcomes, score_steps, solution_scores

__all__ = ["AGGREGATES", "Aggregate", "correct_probability", "first_wrong_step", "score_outcomes", "score_steps",
           "solution_scores"]
