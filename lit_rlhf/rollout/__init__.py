"""Generation (and, later, rollout buffers and KL controllers)."""

from lit_rlhf.rollout.generation import ChatReplier, SamplingConfig, generate

__all__ = ["ChatReplier", "SamplingConfig", "generate"]
