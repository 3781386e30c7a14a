"""PPO for language models (Ziegler et al. 2019; InstructGPT; "The N+ implementation details of RLHF with PPO").

One training step = one PPO iteration over a batch of prompts:

1. **rollout** (no grad): sample responses with the KV cache (stops when every sequence has ended),
   then one forward pass per model gives old log-probs, values and reference log-probs; the reward
   source scores the decoded completions;
2. **rewards**: ``r_t = −β kl_t`` per token plus the (EOS-penalised, optionally normalised and clipped)
   score on the last real response token; GAE advantages (whitened) and returns;
3. **update**: ``ppo_epochs`` passes over shuffled minibatches of the rollout buffer, one optimizer
   step per minibatch with the clipped policy loss + ``vf_coef`` × clipped value loss;
4. the KL controller is updated with the batch's mean KL.

``Trainer.max_steps`` counts optimizer steps: ``iterations × ppo_epochs × num_mini_batches``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_rlhf.losses import gae, kl_penalty, masked_mean, ppo_policy_loss, ppo_value_loss, whiten
from lit_rlhf.losses.ppo import KLKind
from lit_rlhf.models import HeadModel, ModelLike, ModelSpec, hidden_size, load_model, selected_logits, token_logps
from lit_rlhf.models.checkpoint import portable_spec
from lit_rlhf.modules.base import PolicyModule
from lit_rlhf.rollout import RolloutBuffer, RunningMoments, SamplingConfig, generate, kl_controller, response_mask
from lit_rlhf.rollout.rewards import RewardFn, load_reward_head, reward_source, score_completions


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 (rollout and training log-probs must agree exactly)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if config is not None and isinstance(getattr(config, key, None), float):
            setattr(config, key, 0.0)


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token (left padding), as ``generate`` uses them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PPO(PolicyModule):
    """PPO with a rollout buffer, a value model, a frozen reference and any reward source.

    Args:
        model: policy name or spec (full fine-tuning, or LoRA through ``lora``).
        sampling: rollout decoding (``temperature`` > 0; log-probs use logits / temperature).
        reward_model: a ``RewardModel`` checkpoint or exported folder used as the reward source.
        reward_fn: any callable ``(prompts, completions) -> Tensor (B,)`` (e.g. a task's gold reward).
            With neither, the data module's task's gold reward is used.
        value_model: critic backbone name or spec (default: the policy's spec); ignored with ``value_head``.
        value_head: put the value head on the policy's last hidden state instead of a separate critic.
        value_init: initialise the critic from a reward model (``.ckpt`` or folder, as ``reward_model``).
        value_lr: learning rate of the critic's parameters (value model or value head) as their own param
            group; ``None`` = the optimizer's learning rate. A critic that is not initialised from a reward
            model starts from a random head and usually needs a higher rate than the policy (OpenRLHF's
            ``critic_learning_rate``), else its values stay near the mean return and carry no credit.
        ppo_epochs: passes over the rollout buffer per iteration.
        num_mini_batches: minibatches per pass (the prompt batch size must be divisible by it).
        kl_coef: β (initial β with ``kl_target``).
        kl_target: target KL (nats per sequence) of the adaptive controller; ``None`` = fixed β.
        kl_horizon: horizon of the adaptive controller in episodes (prompts; each iteration passes its batch
            size): β changes by at most a factor ``1 ± 0.2 · batch / kl_horizon`` per iteration. The default is
            Ziegler et al.'s 10,000 (0.13% per iteration at 64 prompts); short runs need a few iterations'
            worth, e.g. 320 at 64 prompts (4%).
        kl_estimator: per-token KL in the reward: ``k1`` | ``k2`` | ``k3``.
        gamma: GAE γ.
        lam: GAE λ.
        clip_range: policy ratio clip ε.
        clip_range_value: value clip ε (``None`` = unclipped).
        vf_coef: weight of the value loss.
        entropy_coef: weight of an entropy bonus (0 = only logged).
        missing_eos_penalty: subtracted from the score of responses that did not end (``None`` = off).
        reward_norm: normalise scores with running mean/std (Secrets of RLHF I, PPO-max).
        reward_clip: clip (normalised) scores to ``±reward_clip``.
        whiten_advantages: whiten advantages over the batch's valid tokens.
        gradient_clip_val: global gradient-norm clip (set here: Lightning refuses it under manual optimisation).
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    path_hparams = ("reward_model", "value_init")

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        reward_model: str | None = None,
        reward_fn: Callable[[list[str], list[str]], torch.Tensor] | None = None,
        value_model: ModelLike | None = None,
        value_head: bool = False,
        value_init: str | None = None,
        value_lr: float | None = None,
        ppo_epochs: int = 4,
        num_mini_batches: int = 1,
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        kl_estimator: KLKind = "k1",
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_range: float = 0.2,
        clip_range_value: float | None = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        missing_eos_penalty: float | None = None,
        reward_norm: bool = False,
        reward_clip: float | None = None,
        whiten_advantages: bool = True,
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        sampling = SamplingConfig.of(sampling if sampling is not None else {"temperature": 0.7, "max_new_tokens": 53})
        if sampling.temperature <= 0:
            raise ValueError("PPO samples its rollouts: sampling.temperature must be > 0")
        if value_lr is not None and value_lr <= 0:
            raise ValueError(f"value_lr must be > 0, got {value_lr}")
        if ppo_epochs < 1 or num_mini_batches < 1:
            raise ValueError(f"need ppo_epochs >= 1 and num_mini_batches >= 1, got {ppo_epochs}, {num_mini_batches}")
        super().__init__(model=model, sampling=sampling, **kwargs)
        self.record_hparams(ignore=("reward_fn",))
        self.automatic_optimization = False
        disable_dropout(self.model)
        self.use_lora_reference = self.spec.lora is not None
        self.ref_model = None if self.use_lora_reference else copy.deepcopy(self.model).requires_grad_(False)
        if value_head:
            self.value_model: nn.Module | None = None
            self.value_head = nn.Linear(hidden_size(self.model), 1, bias=False)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size(self.model) + 1) ** 0.5)
        else:
            self.value_head = None
            self.value_model = self._critic(ModelSpec.of(value_model or self.spec), value_init)
            disable_dropout(self.value_model)
        self.reward_source: RewardFn | None = reward_source(reward_model, reward_fn)
        self.value_lr = value_lr
        self.ppo_epochs, self.num_mini_batches = ppo_epochs, num_mini_batches
        self.kl_ctl = kl_controller(kl_coef, kl_target, kl_horizon)
        self.kl_estimator, self.gamma, self.lam = kl_estimator, gamma, lam
        self.clip_range, self.clip_range_value = clip_range, clip_range_value
        self.vf_coef, self.entropy_coef = vf_coef, entropy_coef
        self.missing_eos_penalty, self.reward_norm, self.reward_clip = missing_eos_penalty, reward_norm, reward_clip
        self.whiten_advantages, self.gradient_clip_val = whiten_advantages, gradient_clip_val
        self.reward_stats = RunningMoments()
        self.buffer = RolloutBuffer()
        self.update_stats: list[dict[str, float]] = []  # per minibatch of the last update (ratio, clipfrac, ...)
        self._rng: dict[str, torch.Tensor | None] | None = None  # PPO's own random stream (sampling, shuffling)

    def _critic(self, spec: ModelSpec, init: str | None) -> HeadModel:
        if init is None:
            return HeadModel(load_model(spec, "backbone", self.tokenizer), 1, "none", squeeze=True, bias=False)
        reward_head, _ = load_reward_head(init)  # value model initialised from the reward model (N+ details)
        critic = HeadModel(reward_head.backbone, 1, "none", squeeze=True, bias=False)
        critic.head.weight.data.copy_(reward_head.head.weight.data)
        return critic

    def param_groups(self) -> list[Any]:
        """The trainable parameters; with ``value_lr``, the critic's in a second group with that learning rate."""
        params = self.trainable_parameters()
        if self.value_lr is None:
            return params
        critic_model = self.value_head if self.value_head is not None else self.value_model
        critic = {id(p) for p in critic_model.parameters()}
        return [{"params": [p for p in params if id(p) not in critic]},
                {"params": [p for p in params if id(p) in critic], "lr": self.value_lr}]

    # ------------------------------------------------------------------ forward passes
    def reference(self) -> AbstractContextManager:
        """Context in which :attr:`ref_policy` is the reference (LoRA adapter disabled, or the frozen copy)."""
        return self.model.disable_adapter() if self.use_lora_reference else nullcontext()

    @property
    def ref_policy(self) -> nn.Module:
        return self.model if self.use_lora_reference else self.ref_model

    def forward_pass(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_width: int,
        with_values: bool = False, with_entropy: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Log-probs of the response tokens (logits / temperature), values and entropy, all ``(B, R)``.

        The one code path for rollout and training log-probs (so the first PPO ratio is exactly 1).
        """
        position_ids = position_ids_of(attention_mask)
        R = response_width
        select = torch.zeros_like(input_ids, dtype=torch.bool)
        select[:, -R - 1:-1] = True  # the positions that predict the response tokens: the LM head runs on those only
        logits, out = selected_logits(model, select, input_ids=input_ids, attention_mask=attention_mask,
                                      position_ids=position_ids,
                                      output_hidden_states=with_values and self.value_head is not None)
        logits = logits.view(len(input_ids), R, -1).float() / (self.sampling.temperature + 1e-7)
        result = {"logprobs": token_logps(logits, input_ids[:, -R:])}
        if with_entropy:  # with gradient only when it is a bonus in the loss
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.entropy_coef != 0):
                result["entropy"] = torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)
        if with_values:
            if self.value_head is not None:
                hidden = out.hidden_states[-1][:, -R - 1:-1]
                result["values"] = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
            else:
                values = self.value_model(input_ids, attention_mask, position_ids=position_ids)
                result["values"] = values[:, -R - 1:-1].float()
        return result

    @property
    def task(self) -> Any:
        """The data module's task (gold reward), if any."""
        return getattr(self.trainer.datamodule, "task", None) if self._trainer is not None else None

    def score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Scores ``(B,)`` from the reward source (default: the data module's task)."""
        return score_completions(self.reward_source, self.task, prompts, completions).to(self.device)

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Sample, score and fill :attr:`buffer`; returns rollout metrics."""
        tok = self.tokenizer
        t0 = time.perf_counter()
        texts, sequences, width = generate(self.model, tok, batch["prompt_ids"], self.sampling)
        t1 = time.perf_counter()
        response = sequences[:, width:]
        rmask, ended = response_mask(response, tok.eos_token_id, tok.pad_token_id)
        lengths = torch.tensor([len(p) for p in batch["prompt_ids"]], device=sequences.device)
        qmask = (torch.arange(width, device=sequences.device) >= width - lengths.unsqueeze(-1)).long()
        attention_mask = torch.cat([qmask, rmask], dim=1)
        R, n = response.shape[1], len(texts)
        size = n // self.num_mini_batches if n % self.num_mini_batches == 0 else n
        parts: dict[str, list[torch.Tensor]] = {"logprobs": [], "values": [], "ref_logprobs": []}
        for start in range(0, n, size):  # chunks of the minibatch shape: same numerics as the update
            ids, mask = sequences[start:start + size], attention_mask[start:start + size]
            out = self.forward_pass(self.model, ids, mask, R, with_values=True)
            with self.reference():
                ref = self.forward_pass(self.ref_policy, ids, mask, R)
            parts["logprobs"].append(out["logprobs"])
            parts["values"].append(out["values"])
            parts["ref_logprobs"].append(ref["logprobs"])
        logprobs, values, ref_logprobs = (torch.cat(parts[k]) for k in ("logprobs", "values", "ref_logprobs"))
        t2 = time.perf_counter()
        raw_scores = self.score(batch["prompt_text"], texts)
        scores = raw_scores.clone()
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~ended).float()
        if self.reward_norm:
            self.reward_stats.update(scores)
            scores = self.reward_stats.normalize(scores, clip=self.reward_clip)
        elif self.reward_clip is not None:
            scores = scores.clamp(-self.reward_clip, self.reward_clip)
        kl = kl_penalty(logprobs, ref_logprobs, self.kl_estimator) * rmask
        beta = self.kl_ctl.value
        rewards = -beta * kl
        last = rmask.sum(-1) - 1  # the score sits on the last real response token, never on padding
        rewards[torch.arange(n, device=rewards.device), last] += scores
        advantages, returns = gae(rewards, values, rmask, self.gamma, self.lam)
        if self.whiten_advantages:
            advantages = whiten(advantages, rmask)
        self.buffer.clear()
        self.buffer.add(
            input_ids=sequences, attention_mask=attention_mask, response_mask=rmask, logprobs=logprobs,
            ref_logprobs=ref_logprobs, values=values, rewards=rewards, advantages=advantages, returns=returns,
            scores=scores, prompts=list(batch["prompt_text"]), completions=texts,
        )
        t3 = time.perf_counter()
        seq_kl = (kl_penalty(logprobs, ref_logprobs, "k1") * rmask).sum(-1)
        metrics = {
            "objective/kl": seq_kl.mean(),
            "objective/kl_coef": torch.tensor(beta),
            "objective/scores": raw_scores.mean(),
            "objective/non_score_reward": (-beta * seq_kl).mean(),
            "objective/rlhf_reward": (raw_scores - beta * seq_kl).mean(),
            "response_length/mean": rmask.sum(-1).float().mean(),
            "eos/fraction": ended.float().mean(),
            "time/generation": torch.tensor(t1 - t0),
            "time/rollout_forward": torch.tensor(t2 - t1),
            "time/rewards": torch.tensor(t3 - t2),
        }
        task = self.task
        if task is not None and self.reward_source is not None and self.reward_source != task.reward:
            metrics["objective/gold_scores"] = task.reward(list(batch["prompt_text"]), texts).float().mean()
        return metrics

    # ------------------------------------------------------------------ update
    def update(self) -> dict[str, torch.Tensor]:
        """``ppo_epochs`` passes of minibatch steps over the buffer; returns the mean statistics."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        width = self.buffer["logprobs"].shape[1]
        self.update_stats = []
        for epoch, index, mb in self.buffer.minibatches(self.num_mini_batches, self.ppo_epochs):
            mask = mb["response_mask"]
            out = self.forward_pass(self.model, mb["input_ids"], mb["attention_mask"], width, with_values=True,
                                    with_entropy=True)
            pg, pg_stats = ppo_policy_loss(out["logprobs"], mb["logprobs"], mb["advantages"], mask, self.clip_range)
            vf, vf_stats = ppo_value_loss(out["values"], mb["values"], mb["returns"], mask, self.clip_range_value)
            entropy = masked_mean(out["entropy"], mask)
            loss = pg.mean() + self.vf_coef * vf.mean() - self.entropy_coef * entropy
            self.manual_step(loss, optimizer, self.gradient_clip_val)
            if scheduler is not None:
                scheduler.step()
            self.update_stats.append({
                "epoch": epoch, "minibatch": index, "ratio": pg_stats["ratio"].item(),
                "clipfrac": pg_stats["clipfrac"].item(), "approxkl": pg_stats["approxkl"].item(),
                "loss/policy": pg.mean().item(), "loss/value": vf.mean().item(), "vf_clipfrac": vf_stats["clipfrac"].item(),
                "entropy": entropy.item(),
            })
        mean = lambda key: torch.tensor(sum(s[key] for s in self.update_stats) / len(self.update_stats))  # noqa: E731
        return {
            "policy/approxkl_avg": mean("approxkl"), "policy/clipfrac_avg": mean("clipfrac"),
            "loss/policy_avg": mean("loss/policy"), "loss/value_avg": mean("loss/value"),
            "val/clipfrac_avg": mean("vf_clipfrac"), "val/ratio": mean("ratio"), "policy/entropy_avg": mean("entropy"),
        }

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run sampling and shuffling on PPO's own RNG state (checkpointed), so that other draws from the
        global generator (e.g. a DataLoader's base seed at each epoch) do not change a resumed run."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            if self._rng is not None:
                torch.set_rng_state(self._rng["cpu"])
                if cuda and self._rng.get("cuda") is not None:
                    torch.cuda.set_rng_state(self._rng["cuda"], self.device)
            yield
            self._rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        with self.own_rng():
            metrics = self.rollout(batch)
            t0 = time.perf_counter()
            metrics.update(self.update())
            metrics["time/update"] = torch.tensor(time.perf_counter() - t0)
        self.kl_ctl.update(float(metrics["objective/kl"]), n_steps=len(batch["prompt_ids"]))
        self.last_metrics = {k: float(v) for k, v in metrics.items()}  # of the last iteration, for callbacks
        self.log_train(metrics, len(batch["prompt_ids"]), prog_bar=("objective/scores", "objective/kl"))

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters", {})
        if self.value_model is not None and hparams.get("value_init") is None:  # not the ``model`` it may now name
            hparams["value_model"] = portable_spec(hparams.get("value_model") or self.spec).to_dict()
        checkpoint["ppo_state"] = {
            "kl_ctl": self.kl_ctl.state_dict(), "reward_stats": self.reward_stats.state_dict(),
            "rng": self._rng, "buffer": self.buffer.state_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("ppo_state")
        if state is None:
            return
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.reward_stats.load_state_dict(state["reward_stats"])
        self.buffer.load_state_dict(state["buffer"])
        self._rng = state["rng"]

    def export(self, folder: str | Path, merge_lora: bool = True) -> Path:
        """The policy as a Hugging Face folder, and the critic under ``<folder>/value_model``."""
        folder = super().export(folder, merge_lora)
        if self.value_model is not None:
            self.value_model.save_pretrained(folder / "value_model")
        else:
            torch.save(self.value_head.state_dict(), folder / "value_head.pt")
        return folder
