"""Generation (and, later, rollout buffers and KL controllers)."""

from lit_rlhf.rollout.generation import SamplingConfig, generate

__all__ = ["SamplingConfig", "generate"]
