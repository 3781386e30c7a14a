"""Direct Preference Optimization and its offline relatives: every TRL 1.16 loss type by name, weighted
combinations, the reference-free SimPO, ORPO and CPO, and an optional RPO NLL term."""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from lightning.pytorch.utilities import rank_zero_info

from lit_rlhf.losses import completion_nll, dpo_loss
from lit_rlhf.losses.dpo import REFERENCE_FREE, DPOLossType
from lit_rlhf.models import ModelLike, ModelSpec
from lit_rlhf.models.assets import cache_dir
from lit_rlhf.models.checkpoint import resolve_init_from
from lit_rlhf.models.logprobs import ForwardLayout
from lit_rlhf.models.reference import ReferenceCache, batched_logps, items_fingerprint, weights_fingerprint
from lit_rlhf.modules.base import PolicyModule, StepModule, StepOutput, StepSplit
from lit_rlhf.rollout.generation import SamplingConfig

Reference = Literal["copy", "lora_disabled", "precomputed", "none"]
REF_KEYS = ("ref_chosen_logps", "ref_rejected_logps")
PAIR_FIELDS = ("chosen_input_ids", "chosen_completion_mask", "rejected_input_ids", "rejected_completion_mask")


def implicit_reward_stats(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``rewards/chosen|rejected|margins|accuracies`` and ``logps/chosen|rejected``: batch means of the implicit
    rewards (``chosen``, ``rejected``) and the policy log-probs (``logps_chosen``, ``logps_rejected``) of pairs."""
    margins = out["chosen"] - out["rejected"]
    return {
        "rewards/chosen": out["chosen"].mean(), "rewards/rejected": out["rejected"].mean(),
        "rewards/margins": margins.mean(), "rewards/accuracies": (margins > 0).float().mean(),
        "logps/chosen": out["logps_chosen"].mean(), "logps/rejected": out["logps_rejected"].mean(),
    }


class DPO(StepModule, PolicyModule):
    """Preference optimisation of a policy against a frozen reference (the starting policy).

    One forward over the ``[chosen; rejected]`` batch of :class:`~lit_rlhf.data.PreferenceDataModule`;
    sequence log-probs are sums over completion tokens; the loss is :func:`~lit_rlhf.losses.dpo_loss`.
    Logs ``train/loss``, ``rewards/chosen|rejected|margins|accuracies``, ``logps/chosen|rejected`` (and
    the same under ``val/``). Dropout is off (``dropout = "off"``, as in TRL): the policy's log-probs at
    step 0 equal the reference's, whatever the model's config says.

    Args:
        model: policy name or spec (with ``lora`` for ``reference: lora_disabled``).
        sampling: decoding settings for gold evaluation.
        init_from: start from the policy of a lit_rlhf checkpoint (e.g. SFT), a ``.ckpt`` file or a run folder
            (its newest ``.ckpt``); the reference is that policy. An exported HF folder is ``model: <folder>``.
        beta: β of the implicit KL constraint.
        loss_type: a name of :data:`~lit_rlhf.losses.dpo.DPO_LOSS_TYPES` — ``sigmoid`` (DPO; cDPO with
            ``label_smoothing``), ``hinge``, ``ipo``, ``robust``, every other TRL 1.16 name (``exo_pair``,
            ``nca_pair``, ``bco_pair``, ``sppo_hard``, ``aot``, ``aot_unpaired``, ``apo_zero``, ``apo_down``,
            ``discopop``, ``sft``, ``sigmoid_norm``), ``simpo`` or ``orpo`` — or a list of names whose losses are
            summed with ``loss_weights`` (formulas: :func:`~lit_rlhf.losses.dpo_loss`).
        loss_weights: one weight per loss type (default 1 each).
        label_smoothing: ε for cDPO / robust / EXO / AOT.
        discopop_tau: DiscoPOP's τ.
        simpo_gamma: SimPO's target margin γ.
        rpo_alpha: weight of the NLL of the chosen completions (RPO; token mean over the batch, as TRL).
        reference: ``copy`` (a frozen copy of the starting policy), ``lora_disabled`` (the LoRA policy
            with its adapter switched off: no second model), or ``precomputed`` (one no-grad pass of the
            starting policy over the train and val pairs before training, cached on disk under
            ``reference_cache`` keyed by data and weights fingerprints; no reference model is kept), or
            ``none`` (reference-free: log π_ref = 0).
        reference_cache: folder of the precomputed cache (default ``$LIT_RLHF_CACHE/dpo_reference``).
        reference_batch_size: pairs per batch of the precomputing pass.
        padding_free: allow packing the right-padded ``[chosen; rejected]`` rows into fewer (up to twice as wide)
            rows (little compute on padding; :func:`~lit_rlhf.models.logprobs.packed_sequence_logps`).
        shared_prefix: allow encoding each pair's prompt once (:func:`~lit_rlhf.models.logprobs.shared_sequence_logps`;
            exact): the prompt forwarded first, chosen and rejected on its keys and values (``cached``), or
            ``[prompt, chosen, rejected]`` in one row with a block-causal mask (``shared``, where the model refuses the
            cache). Per batch the cheapest of padded, packed and prompt-once rows is used
            (:class:`~lit_rlhf.models.logprobs.ForwardLayout`); a masked layout is checked once against the padded
            forward and switched off with a warning if the model does not keep it exact. Either way the LM head
            runs only where a completion token is predicted.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    path_hparams = ("reference_cache",)
    dropout = "off"
    paired_batches = True  # batches are [chosen; rejected]: row i and row i + B share a prompt

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        init_from: str | None = None,
        beta: float = 0.1,
        loss_type: DPOLossType | list[DPOLossType] = "sigmoid",
        loss_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        simpo_gamma: float = 0.5,
        rpo_alpha: float = 0.0,
        reference: Reference = "copy",
        reference_cache: str | None = None,
        reference_batch_size: int = 32,
        padding_free: bool = True,
        shared_prefix: bool = True,
        **kwargs: Any,
    ) -> None:
        types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
        zero = torch.zeros(1)
        # validates names, weights, β and ε once, before any model is built
        dpo_loss(zero, zero, zero, zero, beta, types, label_smoothing, zero + 1, zero + 1, loss_weights)
        if rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {rpo_alpha}")
        if reference not in get_args(Reference):
            raise ValueError(f"reference must be one of {list(get_args(Reference))}, got {reference!r}")
        if set(types) <= REFERENCE_FREE and reference != "none":
            raise ValueError(f"loss types {types} read no reference model; set reference: none (got {reference!r})")
        init_from = resolve_init_from(init_from, ModelSpec.of(model).name) if init_from else None  # the file it is
        super().__init__(model=model, sampling=sampling, init_from=init_from, **kwargs)
        self.record_hparams()
        self.beta, self.loss_type, self.loss_weights, self.rpo_alpha = beta, types, loss_weights, rpo_alpha
        self.label_smoothing, self.discopop_tau, self.simpo_gamma = label_smoothing, discopop_tau, simpo_gamma
        self.reference = reference
        self.reference_batch_size = reference_batch_size
        self.layout = ForwardLayout(padding_free=padding_free, shared_prefix=shared_prefix)
        self.reference_cache = ReferenceCache(reference_cache or cache_dir() / "dpo_reference")
        self.reference_fingerprint: str | None = None  # weights of the starting policy (precomputed mode)
        self.reference_status: dict[str, str] = {}  # split -> "computed" | "loaded" (precomputed mode)
        self.set_reference(reference if reference in ("copy", "lora_disabled") else "none")

    # -- log-probs ----------------------------------------------------------------------------
    @property
    def padding_free(self) -> bool:
        """Whether packed (padding-free) batches may be used (off after a failed check)."""
        return self.layout.enabled["packed"]

    def sequence_logps(
        self, net: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        completion_mask: torch.Tensor, paired: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and lengths ``(B,)`` of ``net`` in the layout :class:`ForwardLayout` picks for
        the batch; ``paired``: a ``[chosen; rejected]`` batch, whose pairs share their prompt (exact for any batch:
        rows share only the tokens they start with)."""
        paired = paired and self.paired_batches and len(input_ids) % 2 == 0
        groups = torch.arange(len(input_ids)) % (len(input_ids) // 2) if paired else None
        return self.layout.sequence_logps(net, input_ids, attention_mask, completion_mask, groups)

    # -- reference ----------------------------------------------------------------------------
    def batch_reference_logps(self, batch: dict[str, Any]) -> torch.Tensor:
        """Reference log-probs ``(2B,)`` of a ``[chosen; rejected]`` batch."""
        if self.reference == "none":
            return torch.zeros(len(batch["input_ids"]), device=self.device)
        if self.reference != "precomputed":
            return self.reference_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        if REF_KEYS[0] not in batch:
            raise ValueError("reference='precomputed' but the batch has no reference log-probs; they are computed "
                             "for the data module's train/val/test splits when fit/validate/test starts")
        return torch.cat([batch[REF_KEYS[0]], batch[REF_KEYS[1]]]).to(self.device)

    def precompute_reference(self, splits: tuple[str, ...]) -> None:
        """Attach reference log-probs to the encoded items of ``splits`` (from the cache, else one no-grad pass).

        The reference is the starting policy; its fingerprint is kept in checkpoints, so a resumed run
        finds its cache entry and a trained policy is never mistaken for the reference.
        """
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "dataset"):
            raise ValueError("reference='precomputed' needs a lit_rlhf PreferenceDataModule")
        current = None
        for split in splits:
            if not dm.has_split(split):
                continue
            items = dm.dataset(split).items
            if all(REF_KEYS[0] in x for x in items):
                continue
            if current is None:
                current = weights_fingerprint(self.model)
                self.reference_fingerprint = self.reference_fingerprint or current
            data_fp = items_fingerprint(items, PAIR_FIELDS)
            values = self.reference_cache.load(data_fp, self.reference_fingerprint)
            if values is not None:
                self.reference_status[split] = "loaded"
            elif current != self.reference_fingerprint:
                raise FileNotFoundError(
                    f"no cached reference log-probs for the '{split}' data of this run in {self.reference_cache.folder}"
                    " and the policy is no longer the starting one; precompute them from the starting policy")
            else:
                values = self._reference_pass(items, dm.collator(), split)
                if self.trainer.is_global_zero:
                    self.reference_cache.save(data_fp, self.reference_fingerprint, values)
                self.reference_status[split] = "computed"
            for item, (chosen, rejected) in zip(items, values.tolist()):
                item[REF_KEYS[0]], item[REF_KEYS[1]] = chosen, rejected
            cache_path = self.reference_cache.path(data_fp, self.reference_fingerprint)
            rank_zero_info(f"[lit_rlhf] DPO reference log-probs of {len(items)} '{split}' pairs "
                           f"{self.reference_status[split]} ({cache_path})")

    def _reference_pass(self, items: list[dict[str, Any]], collate: Any, split: str = "train") -> torch.Tensor:
        """``(N, 2)`` log-probs (chosen, rejected) of the starting policy, eval mode, no grad; the pass says what it
        covers against what the run will use, estimates its time after the first batch and reports every 10%."""
        rank_zero_info(self._reference_pass_plan(len(items), split))
        reported = [0]

        def progress(done: int, total: int, seconds: float) -> None:
            if done == total or done * 10 // total > reported[0] or done == min(total, self.reference_batch_size):
                reported[0] = done * 10 // total
                rest = seconds / done * (total - done)
                rank_zero_info(f"[lit_rlhf] DPO reference log-probs: {done}/{total} '{split}' pairs in {seconds:.0f} s"
                               + (f", about {rest:.0f} s left" if done < total else ""))

        def logps(batch: dict[str, Any]) -> torch.Tensor:
            values = self.sequence_logps(
                self.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], paired=True
            )[0]
            return torch.stack(values.chunk(2), dim=1)  # a batch is [chosen; rejected]

        was_training = self.model.training
        self.model.eval()
        try:
            return batched_logps(logps, items, collate, self.reference_batch_size, self.device, progress)
        finally:
            self.model.train(was_training)

    def _reference_pass_plan(self, pairs: int, split: str) -> str:
        """What the reference pass covers, and how many training pairs this run can use at most (``max_steps``)."""
        line = (f"[lit_rlhf] DPO reference log-probs: one pass of the starting policy over all {pairs} '{split}' pairs "
                f"(cached on disk for later runs)")
        trainer = self._trainer
        if split == "train" and trainer is not None and trainer.max_steps > 0:
            dm = trainer.datamodule
            batches = trainer.max_steps * trainer.accumulate_grad_batches * trainer.world_size
            used = batches * getattr(dm, "batch_size", 1)
            if used < pairs:
                line += (f"; this run's max_steps={trainer.max_steps} uses at most {used} of them — a shorter train "
                         f"file (or data.task_sizes) makes the pass shorter")
        return line

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.reference == "precomputed":
            self.precompute_reference(("train", "val"))

    def on_validation_start(self) -> None:
        if self.reference == "precomputed":
            self.precompute_reference(("val",))

    def on_test_start(self) -> None:
        if self.reference == "precomputed":
            self.precompute_reference(("test",))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the frozen copy (ref_model.*) stays: loading never reads init_from
        checkpoint["dpo_reference_fingerprint"] = self.reference_fingerprint

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # a checkpoint without the copy gets the one rebuilt from init_from
        self.reference_fingerprint = checkpoint.get("dpo_reference_fingerprint")

    # -- training -----------------------------------------------------------------------------
    def pair_losses(
        self, pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, lc: torch.Tensor, lr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair losses and detached implicit rewards from policy (``p*``) and reference (``r*``) sequence
        log-probs and completion lengths (``l*``), chosen (``*c``) and rejected (``*r``), each ``(B,)``.
        Override this to make a new preference method (see the README's SimPO)."""
        return dpo_loss(pc, pr, rc, rr, self.beta, self.loss_type, self.label_smoothing, lc, lr, self.loss_weights,
                        self.discopop_tau, self.simpo_gamma)

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Loss and :meth:`stats` of a ``[chosen; rejected]`` batch (one policy forward); the loss is the mean of
        :meth:`pair_losses` plus ``rpo_alpha`` × the token-mean NLL of the chosen completions."""
        policy, lengths = self.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        reference = self.batch_reference_logps(batch)
        (pc, pr), (rc, rr), (lc, lr) = policy.chunk(2), reference.chunk(2), lengths.chunk(2)
        losses, chosen, rejected = self.pair_losses(pc, pr, rc, rr, lc, lr)
        loss = losses.mean()
        if self.rpo_alpha:
            loss = loss + self.rpo_alpha * completion_nll(pc, lc, "token_mean")
        out = {"chosen": chosen, "rejected": rejected, "logps_chosen": pc.detach(), "logps_rejected": pr.detach()}
        return StepOutput(loss, {"loss": loss.detach(), **self.stats(out)}, len(chosen))

    def stats(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``rewards/*`` and ``logps/*`` batch means (:func:`implicit_reward_stats`)."""
        return implicit_reward_stats(out)

    def metric_name(self, split: StepSplit, key: str) -> str:
        """TRL's names: ``train/loss`` but unprefixed ``rewards/*`` and ``logps/*`` in training; ``val/<key>`` etc."""
        return key if split == "train" and key != "loss" else super().metric_name(split, key)
