"""One LightningModule per method."""

from lit_rlhf.modules.base import LitRLHFModule, PolicyModule, StepModule, StepOutput
from lit_rlhf.modules.contrastive_rm import ContrastiveRM
from lit_rlhf.modules.dpo import DPO
from lit_rlhf.modules.grpo import GRPO
from lit_rlhf.modules.kto import KTO
from lit_rlhf.modules.meta_rm import MetaRM
from lit_rlhf.modules.online_dpo import OnlineDPO
from lit_rlhf.modules.outcome_rm import OutcomeRewardModel
from lit_rlhf.modules.ppo import PPO
from lit_rlhf.modules.preference import CPO, ORPO, SimPO
from lit_rlhf.modules.process_rm import ProcessRewardModel
from lit_rlhf.modules.rejection_sampling import RejectionSampling
from lit_rlhf.modules.reward_model import RewardModel
from lit_rlhf.modules.rl import OnlineRL
from lit_rlhf.modules.sft import SFT
from lit_rlhf.modules.weak_to_strong import WeakToStrong

__all__ = [
    "CPO", "DPO", "GRPO", "KTO", "ORPO", "PPO", "ContrastiveRM", "LitRLHFModule", "MetaRM", "OnlineDPO", "OnlineRL",
    "OutcomeRewardModel", "PolicyModule", "ProcessRewardModel", "RejectionSampling", "RewardModel", "SFT", "SimPO",
    "StepModule", "StepOutput", "WeakToStrong",
]
