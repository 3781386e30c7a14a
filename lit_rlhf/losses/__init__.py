"""Pure loss functions: tensors in, per-example tensors out. No models, no Lightning."""

from lit_rlhf.losses.classification import (
    W2S_LOSSES,
    confidence_weight,
    hardened_predictions,
    logconf_loss,
    product_loss,
    step_loss,
    weak_to_strong_loss,
    xent_loss,
)
from lit_rlhf.losses.contrastive import simcse_loss, sinkhorn, swav_loss
from lit_rlhf.losses.dpo import DPO_LOSS_TYPES, PAIR_LOSSES, REFERENCE_FREE, dpo_loss
from lit_rlhf.losses.group import (
    AGGREGATIONS,
    aggregate,
    group_advantages,
    group_std,
    kl_loss,
    policy_gradient_loss,
    reinforce_pp_advantages,
    rloo_advantages,
)
from lit_rlhf.losses.kto import kto_loss, kto_reference_point, kto_weight_bounds
from lit_rlhf.losses.meta import meta_difference_loss
from lit_rlhf.losses.ppo import (
    entropy_from_logits,
    gae,
    kl_penalty,
    masked_mean,
    masked_var,
    ppo_policy_loss,
    ppo_value_loss,
    shape_scores,
    token_rewards,
    whiten,
)
from lit_rlhf.losses.reward import LLAMA2_MARGINS, bradley_terry_loss, reward_centering_penalty
from lit_rlhf.losses.sft import NLL_REDUCTIONS, completion_nll, sft_loss
from lit_rlhf.losses.shaping import ensemble_reward, length_reward, place_step_rewards

__all__ = [
    "AGGREGATIONS", "DPO_LOSS_TYPES", "LLAMA2_MARGINS", "NLL_REDUCTIONS", "PAIR_LOSSES", "REFERENCE_FREE", "W2S_LOSSES",
    "aggregate", "bradley_terry_loss", "completion_nll", "confidence_weight", "dpo_loss", "ensemble_reward",
    "entropy_from_logits", "gae", "group_advantages", "group_std", "hardened_predictions", "kl_loss", "kl_penalty",
    "kto_loss", "kto_reference_point", "kto_weight_bounds", "length_reward", "logconf_loss", "masked_mean",
    "masked_var", "meta_difference_loss", "place_step_rewards", "policy_gradient_loss", "ppo_policy_loss",
    "ppo_value_loss", "product_loss", "reinforce_pp_advantages", "reward_centering_penalty", "rloo_advantages",
    "sft_loss", "shape_scores", "simcse_loss", "sinkhorn", "step_loss", "swav_loss", "token_rewards",
    "weak_to_strong_loss", "whiten", "xent_loss"
]
