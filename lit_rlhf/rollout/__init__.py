"""Generation, the rollout buffer, KL controllers and running reward statistics."""

from lit_rlhf.rollout.buffer import RolloutBuffer
from lit_rlhf.rollout.control import AdaptiveKLController, FixedKLController, RunningMoments, kl_controller
from lit_rlhf.rollout.generation import SamplingConfig, generate, response_mask

__all__ = [
    "AdaptiveKLController", "FixedKLController", "RolloutBuffer", "RunningMoments", "SamplingConfig", "generate",
    "kl_controller", "response_mask",
]
