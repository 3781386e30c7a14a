"""Dropout per method, the same for every way a model is loaded.

Every loader (:func:`~lit_rlhf.models.load_model`: a model built from a config, a Hugging Face folder or
hub id, a packaged asset; and the ``.ckpt`` rebuild on top of it) returns its network in train mode, so
the config's dropout probabilities are what a method trains with unless it turns them off. Methods then
choose one of two policies (the class attribute ``dropout`` of every lit_rlhf module):

* ``"model"`` — the model's own config (SFT, reward models, classifiers);
* ``"off"`` — every dropout probability set to 0 (DPO and the RL methods, as TRL does: log-probs of the
  policy, its reference and its rollouts must be computed by the same deterministic function).

``"off"`` zeroes probabilities rather than switching to eval mode: Hugging Face models turn gradient
checkpointing off in eval mode, and Lightning warns about modules left in eval mode.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

DropoutPolicy = Literal["model", "off"]

# config fields that hold a dropout probability in common Hugging Face architectures
CONFIG_KEYS = (
    "attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop",
    "summary_first_dropout", "summary_last_dropout", "classifier_dropout", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "activation_dropout",
)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability in ``model`` to 0 and return it.

    Covers ``nn.Dropout`` modules, float attributes named ``*dropout*`` that attention layers pass to a
    functional dropout (e.g. Llama's ``attention_dropout``), and the config fields in :data:`CONFIG_KEYS`
    (so a saved or copied config says the same).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for key, value in vars(module).items():
            if "dropout" in key and isinstance(value, float):
                setattr(module, key, 0.0)
        config = getattr(module, "config", None)
        for key in CONFIG_KEYS:
            if config is not None and isinstance(getattr(config, key, None), float):
                setattr(config, key, 0.0)
    return model


def dropout_probabilities(model: nn.Module) -> list[float]:
    """Every dropout probability that is in effect in train mode (``nn.Dropout`` modules and ``*dropout*`` floats)."""
    found = []
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            found.append(float(module.p))
        found += [float(v) for k, v in vars(module).items() if "dropout" in k and isinstance(v, float)]
    return found


def apply_dropout_policy(model: nn.Module, policy: DropoutPolicy) -> nn.Module:
    """``model`` with the method's dropout ``policy`` applied (see the module docstring)."""
    if policy not in ("model", "off"):
        raise ValueError(f"dropout policy must be 'model' or 'off', got {policy!r}")
    return disable_dropout(model) if policy == "off" else model
