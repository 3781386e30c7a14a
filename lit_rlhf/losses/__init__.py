"""Pure loss functions: tensors in, per-example tensors out. No models, no Lightning."""

from lit_rlhf.losses.sft import sft_loss

__all__ = ["sft_loss"]
