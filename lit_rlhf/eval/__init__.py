"""Evaluation: gold-reward evaluation by sampling, callbacks, logging."""

from lit_rlhf.eval.gold import GoldEval, GoldResult, sample_and_score, sequence_log_ratios
from lit_rlhf.eval.wandb import AutoWandbLogger

__all__ = ["AutoWandbLogger", "GoldEval", "GoldResult", "sample_and_score", "sequence_log_ratios"]
