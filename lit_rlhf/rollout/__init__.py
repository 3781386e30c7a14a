"""Generation, the rollout buffer, KL controllers and running reward statistics."""

from lit_rlhf.rollout.buffer import RolloutBuffer
from lit_rlhf.rollout.control import AdaptiveKLController, FixedKLController, RunningMoments, kl_controller
from lit_rlhf.rollout.generation import ChatReplier, SamplingConfig, generate, response_mask

__all__ = [
    "AdaptiveKLController", "ChatReplier", "FixedKLController", "RolloutBuffer", "RunningMoments", "SamplingConfig",
    "generate", "kl_controller", "response_mask",
]
