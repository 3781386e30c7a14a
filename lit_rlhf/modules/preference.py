"""Reference-free preference methods as named ``DPO`` configurations: SimPO, ORPO, CPO.

Each declares its own defaults in its signature (so that ``lit-rlhf fit --model=SimPO`` uses them: the CLI
reads defaults from the signature of the class it builds) and keeps no reference model in memory.
"""

from __future__ import annotations

from typing import Any

from lit_rlhf.losses.dpo import DPOLossType
from lit_rlhf.modules.dpo import DPO, Reference


class SimPO(DPO):
    """SimPO (Meng et al. 2024, Eq. 6): ``−log σ(β log π(y_c)/|y_c| − β log π(y_r)/|y_r| − γ)``, no reference.

    Args:
        beta: β (the paper uses 2.0–2.5).
        simpo_gamma: the target reward margin γ (the paper's γ/β ≈ 0.5).
        loss_type: ``simpo``, optionally with others (e.g. ``[simpo, sft]``).
        reference: ``none``.
        **kwargs: the other :class:`~lit_rlhf.modules.DPO` arguments.
    """

    def __init__(self, beta: float = 2.0, simpo_gamma: float = 1.0,
                 loss_type: DPOLossType | list[DPOLossType] = "simpo", reference: Reference = "none",
                 **kwargs: Any) -> None:
        super().__init__(beta=beta, simpo_gamma=simpo_gamma, loss_type=loss_type, reference=reference, **kwargs)


class ORPO(DPO):
    """ORPO (Hong et al. 2024, Eq. 6): ``NLL(y_c) + λ·(−log σ(log odds(y_c) − log odds(y_r)))``, no reference;
    ``odds(y) = P/(1 − P)`` with ``P`` the mean-token probability of ``y``.

    Args:
        beta: λ, the weight of the odds-ratio term (the paper: 0.1).
        loss_type: ``[orpo, sft]`` (odds-ratio term and the chosen NLL).
        reference: ``none``.
        **kwargs: the other :class:`~lit_rlhf.modules.DPO` arguments.
    """

    def __init__(self, beta: float = 0.1, loss_type: DPOLossType | list[DPOLossType] = ("orpo", "sft"),
                 reference: Reference = "none", **kwargs: Any) -> None:
        super().__init__(beta=beta, loss_type=list(loss_type) if not isinstance(loss_type, str) else loss_type,
                         reference=reference, **kwargs)


class CPO(DPO):
    """CPO (Xu et al. 2024, Eq. 6): ``−log σ(β log π(y_c) − β log π(y_r)) + NLL(y_c)``, no reference.

    Args:
        beta: β.
        loss_type: ``[sigmoid, sft]`` (with ``reference: none`` the sigmoid term reads log π alone).
        loss_weights: ``[1, α]``, α the weight of the NLL term (the paper: 1).
        reference: ``none``.
        **kwargs: the other :class:`~lit_rlhf.modules.DPO` arguments.
    """

    def __init__(self, beta: float = 0.1, loss_type: DPOLossType | list[DPOLossType] = ("sigmoid", "sft"),
                 loss_weights: list[float] | None = None, reference: Reference = "none", **kwargs: Any) -> None:
        super().__init__(beta=beta, loss_type=list(loss_type) if not isinstance(loss_type, str) else loss_type,
                         loss_weights=loss_weights, reference=reference, **kwargs)
