"""The online RL core that PPO and GRPO share: one training step is one iteration of

``sample`` (G completions per prompt, groups kept together) → ``score`` (the reward source) → ``select``
(e.g. dynamic sampling) → ``forward_rollout`` (old, reference log-probs and values in one pass per model) →
``shape_rewards`` → ``advantages`` → ``update`` (``ppo_epochs`` passes of minibatch steps with :meth:`loss`).

Every arrow is a method a subclass may override. Under DDP each rank samples its own prompt batch and repeats
each prompt ``G`` times locally, so a group never spans ranks. Sampling and minibatch shuffling draw from the
training RNG stream of :class:`~lit_rlhf.modules.rng.TrainingRNG` (checkpointed), so a resumed run draws what
the uninterrupted one drew.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from lit_rlhf.losses import entropy_from_logits
from lit_rlhf.models import (
    ForwardLayout,
    ModelLike,
    SharedPrefixPlan,
    disable_dropout,
    selected_logits,
    token_logps,
)
from lit_rlhf.models.logprobs import SHARED_LAYOUTS, PrefixPlan, plan_layout, prefix_plan_logits, shared_prefix_inputs
from lit_rlhf.modules.base import PolicyModule
from lit_rlhf.rollout import RolloutBuffer, SamplingConfig
from lit_rlhf.rollout.buffer import minibatch_rows
from lit_rlhf.rollout.experience import Samples, pack, sample_groups
from lit_rlhf.rollout.rewards import (
    RewardFn,
    RewardSpec,
    absolute_paths,
    dense_step_rewards,
    evaluate_rewards,
    reward_source,
    score_completions,
)


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding), as ``generate`` uses them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class OnlineRL(PolicyModule):
    """Base class of the online RL methods (manual optimisation, one iteration per training batch).

    Args:
        model: policy name or spec (full fine-tuning, or LoRA through ``lora``).
        sampling: rollout decoding (``temperature`` > 0; log-probs use logits / temperature).
        reward_model: a ``RewardModel`` checkpoint or exported folder used as the reward source.
        reward_fn: any callable ``(prompts, completions) -> (B,)`` scores; none of the three = the task's gold reward.
        rewards: a weighted combination of reward sources, ``[{source: gold | reward_model | orm | prm | ensemble |
            callable | format | length, weight: w, ...}, ...]`` (:class:`~lit_rlhf.rollout.rewards.Rewards`); each
            source's mean is logged as ``rewards/<name>``. A ``prm`` source gives dense per-token rewards to the
            estimators that take them (:attr:`dense_rewards`), else the aggregate of its step scores.
        group_size: completions sampled per prompt (``G``).
        reference: keep a reference policy (frozen copy, or the LoRA-disabled base with ``lora``).
        ppo_epochs: passes over the rollout buffer per iteration (μ).
        num_mini_batches: optimizer steps per pass (minibatches of near-equal size; of whole groups where
            :attr:`group_minibatches`).
        entropy_coef: weight of an entropy bonus (0 = only logged).
        gradient_clip_val: global gradient-norm clip (set here: Lightning refuses it under manual optimisation).
        shared_prefix: encode each prompt once for its group's completions in the log-prob passes, where that is
            cheaper and exact (:meth:`shared_plan`); with several minibatches per pass they hold whole groups.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    state_key = "rl_state"  # the checkpoint entry of this method's own state
    dropout = "off"  # rollout, old and reference log-probs must be the training pass's (lit_rlhf.models.dropout)

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        reward_model: str | None = None,
        reward_fn: RewardFn | None = None,
        rewards: list[RewardSpec] | None = None,
        group_size: int = 1,
        reference: bool = True,
        ppo_epochs: int = 1,
        num_mini_batches: int = 1,
        entropy_coef: float = 0.0,
        gradient_clip_val: float | None = 1.0,
        shared_prefix: bool = True,
        **kwargs: Any,
    ) -> None:
        sampling = SamplingConfig.of(sampling)
        if sampling.temperature <= 0:
            raise ValueError(f"{type(self).__name__} samples its rollouts: sampling.temperature must be > 0")
        if ppo_epochs < 1 or num_mini_batches < 1 or group_size < 1:
            raise ValueError(f"need ppo_epochs, num_mini_batches and group_size >= 1, got {ppo_epochs}, "
                             f"{num_mini_batches}, {group_size}")
        super().__init__(model=model, sampling=sampling, **kwargs)
        self.automatic_optimization = False
        disable_dropout(self.model)
        self.set_reference(self.reference_policy.cheapest(self.model) if reference else "none")
        self.reward_source: RewardFn | None = reward_source(reward_model, reward_fn, rewards)
        self.group_size, self.ppo_epochs, self.num_mini_batches = group_size, ppo_epochs, num_mini_batches
        self.entropy_coef, self.gradient_clip_val = entropy_coef, gradient_clip_val
        self.buffer = RolloutBuffer()
        self.shared_prefix = shared_prefix
        self.layout = ForwardLayout(padding_free=False, shared_prefix=shared_prefix)
        # the latest batches' layouts, one per minibatch (see shared_plan): the rollout pass and the update's first
        # epoch of an iteration share them
        self._layout_cache: list[tuple[Any, ...]] = []
        self.update_stats: list[dict[str, float]] = []  # per minibatch of the last update (ratio, clipfrac, ...)
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ models
    @property
    def has_critic(self) -> bool:
        """Whether :meth:`forward_pass` also computes values (PPO)."""
        return False

    @property
    def has_reference(self) -> bool:
        return bool(self.reference_policy)

    def reference(self) -> AbstractContextManager:
        """Context in which :attr:`ref_policy` is the reference (LoRA adapter disabled, or the frozen copy)."""
        return self.reference_policy.active(self.model)

    @property
    def ref_policy(self) -> nn.Module | None:
        return self.reference_policy.network(self.model)

    def critic_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                      policy_out: Any, response_width: int) -> torch.Tensor:
        """Values ``(B, R)`` of the response positions (methods with a critic override this)."""
        raise NotImplementedError(f"{type(self).__name__} has no critic")

    @property
    def needs_rollout_logprobs(self) -> bool:
        """Whether the rollout pass must compute the policy's (old) log-probs.

        Not when the update is one minibatch step on fresh samples (``ppo_epochs`` = ``num_mini_batches`` = 1,
        no critic): the old log-probs then equal the training pass's own, detached (ratio exactly 1), and
        :meth:`update` takes them from there, saving one forward pass per iteration (TRL's ``GRPOTrainer`` does
        the same). Subclasses that read the old log-probs before the update (e.g. a KL in the reward) say so.
        """
        return self.ppo_epochs > 1 or self.num_mini_batches > 1 or self.has_critic

    @property
    def group_minibatches(self) -> bool:
        """Whether an update's minibatches hold whole groups (:func:`~lit_rlhf.rollout.buffer.minibatch_rows`):
        with ``shared_prefix``, ``group_size`` ≥ 2 and several minibatches per pass, so each minibatch can encode
        its prompts once. The rollout pass then runs in the first epoch's minibatches, drawn before it."""
        return self.shared_prefix and self.group_size >= 2 and self.num_mini_batches > 1

    @property
    def values_from_hidden(self) -> bool:
        """Whether :meth:`critic_values` reads the policy's hidden states (a value head on the policy)."""
        return False

    def forward_pass(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int,
        with_values: bool = False, with_entropy: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Log-probs of the response tokens (logits / temperature), values and entropy, all ``(B, R)``.

        The one code path for rollout and training log-probs (so the first ratio of an update is exactly 1).
        """
        position_ids = position_ids_of(attention_mask)
        R = response_width
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        select[:, -R - 1:-1] = True  # the positions that predict the response tokens: the LM head runs on those only
        hidden = with_values and self.values_from_hidden
        plan = None if with_values else self.shared_plan(model, input_ids, attention_mask, R)
        if plan is not None:  # each prompt once; positions past a response's end read any slot (masked later)
            index = plan.slot[:, -R - 1:-1].clamp(min=0).reshape(-1)
            logits, out = prefix_plan_logits(model, plan, index, self._shared_inputs(model, plan)), None
        else:
            logits, out = selected_logits(model, select, input_ids=input_ids, attention_mask=attention_mask,
                                          position_ids=position_ids, output_hidden_states=hidden)
        logits = logits.view(len(input_ids), R, -1).float() / (self.sampling.temperature + 1e-7)
        result = {"logprobs": token_logps(logits, input_ids[:, -R:])}
        if with_entropy:  # with gradient only when it is a bonus in the loss
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.entropy_coef != 0):
                result["entropy"] = entropy_from_logits(logits)
        if with_values:
            result["values"] = self.critic_values(input_ids, attention_mask, position_ids, out, R)
        return result

    def shared_plan(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int
    ) -> PrefixPlan | None:
        """The prompt-once layout of a ``[left-padded prompt | response]`` batch (rows with the same prompt encode
        it once) where :class:`~lit_rlhf.models.ForwardLayout` finds it cheaper and exact; ``None``: the padded rows.

        With one minibatch per pass, or minibatches of whole groups (:attr:`group_minibatches`): the rollout pass runs
        in the rows of the update's first minibatches, so both lay out the same rows identically (the plan is a
        function of the rows) and the first ratio of an update stays exactly 1. The layouts of the latest
        ``num_mini_batches`` batches are kept, so the update's first epoch reuses the rollout pass's.
        """
        self.layout.last = "padded"
        same_rows = self.num_mini_batches == 1 or self.group_minibatches  # the rollout's passes are the update's rows
        if not self.layout.sharing or self.group_size < 2 or not same_rows:
            return None
        key = (self._model_kind(model), response_width)
        for cache in self._layout_cache:
            if (cache[0] == key and torch.equal(cache[1], input_ids)
                    and torch.equal(cache[2], attention_mask)):  # rows seen by an earlier pass: the same layout
                self.layout.last = "padded" if cache[3] is None else plan_layout(cache[3])
                return cache[3]
        plan = self._choose_shared_plan(model, input_ids, attention_mask, response_width)
        self._layout_cache = [*self._layout_cache, (key, input_ids, attention_mask, plan, {})][-self.num_mini_batches:]
        return plan

    @staticmethod
    def _model_kind(model: nn.Module) -> tuple[Any, ...]:
        """What a shared-prefix layout and its inputs depend on: the model class, attention and parameter dtype
        (the policy and a frozen or LoRA-disabled reference share them)."""
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        config = getattr(model, "config", None)
        return type(model), getattr(config, "_attn_implementation", None), dtype

    def _shared_inputs(self, model: nn.Module, plan: PrefixPlan) -> dict[str, Any] | None:
        """:func:`~lit_rlhf.models.logprobs.shared_prefix_inputs` of a 4-D-mask ``plan``, built once per plan and model
        kind (its 4-D mask costs about 1% of a GRPO update with 256-token prompts); ``None`` for a cache plan."""
        if not isinstance(plan, SharedPrefixPlan):
            return None
        cache = next((entry for entry in self._layout_cache if entry[3] is plan), None)
        if cache is None:
            return shared_prefix_inputs(model, plan)
        kind = self._model_kind(model)
        if kind not in cache[4]:
            cache[4][kind] = shared_prefix_inputs(model, plan)
        return cache[4][kind]

    def _choose_shared_plan(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int
    ) -> PrefixPlan | None:
        """:meth:`shared_plan` without the cache."""
        prompts = torch.where(attention_mask.bool(), input_ids, -1)[:, :-response_width]
        groups = torch.unique(prompts, dim=0, return_inverse=True)[1]
        layout, plan = self.layout.choose(model, input_ids, attention_mask, groups)
        if layout not in SHARED_LAYOUTS:
            return None
        response = attention_mask[:, -response_width:].bool()

        def padded(**_: Any) -> torch.Tensor:
            with self.layout.unshared():
                return self.forward_pass(model, input_ids, attention_mask, response_width)["logprobs"][response]

        def shared() -> torch.Tensor:
            saved = self._layout_cache
            self._layout_cache = [((self._model_kind(model), response_width), input_ids, attention_mask, plan, {})]
            try:
                return self.forward_pass(model, input_ids, attention_mask, response_width)["logprobs"][response]
            finally:
                self._layout_cache = saved

        if self.layout.check(model, layout, padded, shared, attention_mask):
            self.layout.last = layout
            return plan
        return self._choose_shared_plan(model, input_ids, attention_mask, response_width)

    # ------------------------------------------------------------------ the steps of one iteration
    @property
    def task(self) -> Any:
        """The data module's task (gold reward), if any."""
        return getattr(self.trainer.datamodule, "task", None) if self._trainer is not None else None

    @torch.no_grad()
    def sample(self, batch: dict[str, Any]) -> Samples:
        """``group_size`` completions per prompt of the (per-rank) batch, groups kept together."""
        return sample_groups(self.model, self.tokenizer, batch["prompt_ids"], list(batch["prompt_text"]),
                             self.group_size, self.sampling)

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Scores ``(B,)`` from the reward source (default: the data module's task)."""
        return score_completions(self.reward_source, self.task, prompts, completions).to(self.device)

    @property
    def dense_rewards(self) -> bool:
        """Whether the estimator takes per-token rewards, so step sources (a PRM) give dense step rewards."""
        return False

    def score_samples(self, samples: Samples, metrics: dict[str, torch.Tensor]) -> None:
        """Put ``scores (B,)`` into ``samples``, and with dense step rewards ``outcome_scores (B,)`` (the sources
        without steps) and ``step_rewards`` (per row ``[char_end, reward]`` of each step); log each source's mean
        as ``rewards/<name>``."""
        result = evaluate_rewards(self.reward_source, self.task, samples["prompts"], samples["completions"],
                                  self.dense_rewards)
        samples["scores"] = result.total.cpu()
        if result.steps is not None:
            samples["outcome_scores"], samples["step_rewards"] = result.outcome.cpu(), result.steps
        metrics.update({f"rewards/{name}": value.float().mean() for name, value in result.components.items()})

    def step_token_rewards(self, samples: Samples, response_mask: torch.Tensor) -> torch.Tensor | None:
        """Dense per-token step rewards ``(B, R)`` on the tokens that close the steps; ``None`` without any."""
        if "step_rewards" not in samples:
            return None
        return dense_step_rewards(self.tokenizer, samples["responses"], samples["step_rewards"], response_mask)

    def select(self, samples: Samples, metrics: dict[str, torch.Tensor]) -> Samples | None:
        """The scored samples to learn from now; ``None`` = no update at this step (e.g. a batch still filling)."""
        return samples

    @torch.no_grad()
    def forward_rollout(self, samples: Samples, chunks: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Packed tensors plus old log-probs (when :attr:`needs_rollout_logprobs`), reference log-probs and
        values ``(B, R)`` of the samples.

        The passes run in ``chunks`` (row indices; the update's first minibatches, so the same rows give the same
        numerics), by default in consecutive chunks of the update's minibatch sizes (the same shapes give the same
        numerics for rows laid out alone).
        """
        exp = pack(samples, self.tokenizer.pad_token_id, self.device)
        R, n = exp["response_mask"].shape[1], len(exp["input_ids"])
        if chunks is None:
            chunks = list(torch.arange(n).tensor_split(min(self.num_mini_batches, n)))
        parts: dict[str, list[torch.Tensor]] = {}
        for rows in chunks:
            ids, mask = exp["input_ids"][rows], exp["attention_mask"][rows]
            out = (self.forward_pass(self.model, ids, mask, R, with_values=self.has_critic)
                   if self.needs_rollout_logprobs else {})
            if self.has_reference:
                with self.reference():
                    out["ref_logprobs"] = self.forward_pass(self.ref_policy, ids, mask, R)["logprobs"]
            for key, value in out.items():
                parts.setdefault(key, []).append(value)
        back = torch.cat(chunks).argsort().to(self.device)  # the chunks' rows back in the samples' order
        exp.update({key: torch.cat(values)[back] for key, values in parts.items()})
        return exp

    def shape_rewards(self, exp: dict[str, torch.Tensor], samples: Samples) -> dict[str, torch.Tensor]:
        """Put the rewards the estimator needs into ``exp``; returns metrics."""
        exp["rewards"] = samples["scores"].to(self.device)
        return {}

    def advantages(self, exp: dict[str, torch.Tensor]) -> None:
        """Put ``advantages`` (``(B,)`` or ``(B, R)``), and ``returns`` with a critic, into ``exp``."""
        raise NotImplementedError

    def loss(self, out: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one minibatch and its statistics (floats), from the current pass ``out``."""
        raise NotImplementedError

    def summarize_update(self) -> dict[str, torch.Tensor]:
        """Logged metrics of the last update from :attr:`update_stats`."""
        return {}

    def after_update(self, metrics: dict[str, torch.Tensor], n_prompts: int) -> None:
        """Called after each update (e.g. PPO's KL controller)."""

    # ------------------------------------------------------------------ driver
    @torch.no_grad()
    def collect(self, batch: dict[str, Any], metrics: dict[str, torch.Tensor]) -> Samples | None:
        """``sample`` → ``score`` → ``select``."""
        t0 = time.perf_counter()
        samples = self.sample(batch)
        t1 = time.perf_counter()
        self.score_samples(samples, metrics)
        metrics["time/generation"] = torch.tensor(t1 - t0)
        metrics["time/score"] = torch.tensor(time.perf_counter() - t1)
        return self.select(samples, metrics)

    @torch.no_grad()
    def experience(self, samples: Samples, metrics: dict[str, torch.Tensor]) -> None:
        """``forward_rollout`` → ``shape_rewards`` → ``advantages``; fills :attr:`buffer`."""
        t0 = time.perf_counter()
        first = (minibatch_rows(len(samples["completions"]), self.num_mini_batches, self.group_size)
                 if self.group_minibatches else None)  # the update's first epoch, drawn before the rollout pass
        exp = self.forward_rollout(samples, first)
        t1 = time.perf_counter()
        metrics.update(self.shape_rewards(exp, samples))
        self.advantages(exp)
        self.buffer.clear()
        self.buffer.add(**exp, scores=samples["scores"].to(self.device), prompts=samples["prompts"],
                        completions=samples["completions"])
        self.buffer.first_epoch = first
        metrics["time/rollout_forward"] = torch.tensor(t1 - t0)
        metrics["time/rewards"] = torch.tensor(time.perf_counter() - t1)

    def rollout(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sample, score and fill :attr:`buffer` (without the ``select`` step); returns rollout metrics."""
        metrics: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        samples = self.sample(batch)
        metrics["time/generation"] = torch.tensor(time.perf_counter() - t0)
        self.score_samples(samples, metrics)
        self.experience(samples, metrics)
        return metrics

    def update(self) -> dict[str, torch.Tensor]:
        """``ppo_epochs`` passes of minibatch steps over the buffer; returns :meth:`summarize_update`."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        width = self.buffer["response_mask"].shape[1]
        self.update_stats = []
        group_size = self.group_size if self.group_minibatches else 1
        for epoch, index, mb in self.buffer.minibatches(self.num_mini_batches, self.ppo_epochs, uneven=True,
                                                        group_size=group_size):
            out = self.forward_pass(self.model, mb["input_ids"], mb["attention_mask"], width,
                                    with_values=self.has_critic, with_entropy=True)
            if "logprobs" not in mb:  # on-policy single step: the old log-probs are this pass's (ratio exactly 1)
                mb = {**mb, "logprobs": out["logprobs"].detach()}
            loss, stats = self.loss(out, mb)
            self.manual_step(loss, optimizer, self.gradient_clip_val)
            if scheduler is not None:  # manual optimisation: Lightning does not step it
                scheduler.step()
            self.update_stats.append({"epoch": epoch, "minibatch": index, **stats})
        return self.summarize_update()

    def mean_stat(self, key: str) -> torch.Tensor:
        """Mean of one statistic over the minibatches of the last update."""
        return torch.tensor(sum(s[key] for s in self.update_stats) / len(self.update_stats))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        metrics: dict[str, torch.Tensor] = {}
        samples = self.collect(batch, metrics)
        if samples is None:
            return
        self.experience(samples, metrics)
        t0 = time.perf_counter()
        metrics.update(self.update())
        metrics["time/update"] = torch.tensor(time.perf_counter() - t0)
        self.after_update(metrics, len(batch["prompt_ids"]))
        self.last_metrics = {k: float(v) for k, v in metrics.items()}  # of the last iteration, for callbacks
        self.log_train(metrics, len(batch["prompt_ids"]), prog_bar=self.prog_bar)

    prog_bar: tuple[str, ...] = ()

    # ------------------------------------------------------------------ state
    def rl_state(self) -> dict[str, Any]:
        """This method's own state for checkpoints (subclasses add theirs)."""
        return {"buffer": self.buffer.state_dict()}

    def load_rl_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters", {})
        if hparams.get("rewards"):  # the reward models' files as absolute paths (resume from any folder)
            hparams["rewards"] = absolute_paths(hparams["rewards"])
        checkpoint[self.state_key] = self.rl_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(self.state_key)
        if state is not None:
            self.load_rl_state(state)
