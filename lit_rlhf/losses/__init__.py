"""Pure loss functions: tensors in, per-example tensors out. No models, no Lightning."""

from lit_rlhf.losses.classification import (
    W2S_LOSSES, confidence_weight, hardened_predictions, logconf_loss, product_loss, step_loss,
    weak_to_strong_loss, xent_loss,
)
from lit_rlhf.losses.contrastive import simcse_loss, sinkhorn, swav_loss
from lit_rlhf.losses.meta import meta_difference_loss
from lit_rlhf.losses.reward import LLAMA2_MARGINS, bradley_terry_loss, reward_centering_penalty
from lit_rlhf.losses.sft import sft_loss

__all__ = [
    "LLAMA2_MARGINS", "bradley_terry_loss", "confidence_weight", "hardened_predictions", "logconf_loss",
    "meta_difference_loss", "product_loss", "reward_centering_penalty", "sft_loss", "simcse_loss", "sinkhorn",
    "step_loss", "swav_loss", "W2S_LOSSES", "weak_to_strong_loss", "xent_loss",
]
