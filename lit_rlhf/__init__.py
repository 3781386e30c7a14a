"""lit_rlhf: PyTorch Lightning alignment trainers (SFT, reward models, PRM, DPO, PPO, weak-to-strong)."""

__version__ = "0.1.0"
