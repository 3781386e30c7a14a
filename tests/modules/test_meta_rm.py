"""MetaRM (Secrets of RLHF II §3.2, Algorithm 1): meta step, first/second-order gradients, training, DDP."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import word_pairs
from torch.func import functional_call

from lit_rlhf.data import Collator, Encoder, PreferenceDataModule, PreferenceRow
from lit_rlhf.data.shifted import (
    MetaRMDataModule,
    ShiftedCollator,
    encode_shifted,
    shifted_row,
)
from lit_rlhf.losses.meta import meta_difference_loss
from lit_rlhf.models import ModelSpec
from lit_rlhf.modules import RewardModel
from lit_rlhf.modules.meta_rm import MetaRM

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [
    ("1:", "xx good yy", "xx bad yy"), ("2:", "qgood", "badq"), ("3:", "a good", "a bad"), ("4:", "good w", "bad w"),
]
GROUPS = [{"prompt": "5:", "responses": ["abc", "great", "awful", "ok ok"]},
          {"prompt": "6:", "responses": ["zz", "fine day", "poor", "c"]}]


def pref_batch(tok, pairs=PAIRS):
    enc = Encoder(tok, max_length=64)
    rows = [PreferenceRow(prompt=p, chosen=c, rejected=r) for p, c, r in pairs]
    return Collator(tok.pad_token_id, pair_keys=("chosen", "rejected"))([enc.preference(r) for r in rows])


def shifted_batch(tok, groups=GROUPS):
    enc = Encoder(tok, max_length=64)
    items = [encode_shifted(enc, shifted_row(g, f"mem:{i}")) for i, g in enumerate(groups)]
    return ShiftedCollator(tok.pad_token_id)(items)


def shifted_responses(path, n, seed, k=4, words=("good", "bad", ""), alphabet="abcde "):
    """K responses per prompt from a shifted region: other noise letters, the keyword present or not."""
    rng = random.Random(seed)
    noise = lambda m: "".join(rng.choice(alphabet) for _ in range(m))  # noqa: E731
    with open(path, "w") as f:
        for _ in range(n):
            responses = []
            for _ in range(k):
                word, a = rng.choice(words), rng.randint(0, 10)
                responses.append(noise(a) + word + noise(14 - a - len(word)))
            f.write(json.dumps({"prompt": f"{rng.randint(0, 99)}:", "responses": responses}) + "\n")
    return str(path)


def trainer(tmp_path, **kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kw)


def flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


# -- the meta step ------------------------------------------------------------------------------

def test_meta_step_is_gradient_ascent_on_J(tiny_spec):
    eta = 1e-3
    m = MetaRM(model=tiny_spec, meta_lr=eta)
    sb = shifted_batch(m.tokenizer)
    theta = m.meta_parameters()
    rewards = m(sb["input_ids"], sb["attention_mask"]).view(2, 4)
    j0 = meta_difference_loss(rewards).mean()
    grads = torch.autograd.grad(j0, list(theta.values()))
    j_before, fast = m.meta_step(sb)
    assert j_before.item() == pytest.approx(j0.item(), abs=1e-7)
    for (name, p), g in zip(theta.items(), grads):
        assert torch.allclose(fast[name], p + eta * g)  # θ' = θ + η ∇J
    j1 = m.shifted_objective(sb, fast)
    gain = (j1 - j0).item() / (eta * flat(grads).pow(2).sum().item())  # first-order Taylor: ΔJ ≈ η‖∇J‖²
    assert j1 > j0 and 0.8 < gain < 1.2, gain
    assert torch.equal(flat(theta.values()), flat(m.meta_parameters().values()))  # θ itself untouched


def test_first_order_gradient_is_the_bt_gradient_at_theta_prime(tiny_spec):
    eta = 0.5
    m = MetaRM(model=tiny_spec, meta_lr=eta)
    pb, sb = pref_batch(m.tokenizer), shifted_batch(m.tokenizer)
    out = m.meta_loss(pb, sb)
    loss = out.loss
    loss.backward()
    got = flat(p.grad for p in m.meta_parameters().values())

    # independently: θ' = θ + η ∇J(θ), then ∇_{θ'} of the mean BT loss at θ'
    theta = dict(m.model.named_parameters())
    j = meta_difference_loss(m.model(sb["input_ids"], sb["attention_mask"]).view(2, 4)).mean()
    g = torch.autograd.grad(j, list(theta.values()))
    prime = {n: (p + eta * gi).detach().requires_grad_() for (n, p), gi in zip(theta.items(), g)}

    def bt(params):
        r = functional_call(m.model, params, (pb["input_ids"], pb["attention_mask"]))
        c, rj = r.chunk(2)
        return F.softplus(-(c - rj)).mean()

    at_prime = bt(prime)
    expected = flat(torch.autograd.grad(at_prime, list(prime.values())))
    at_theta = flat(torch.autograd.grad(bt({n: p for n, p in theta.items()}), list(theta.values())))
    assert loss.item() == pytest.approx(at_prime.item(), abs=1e-6)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert (got - at_theta).norm() > 0.05 * at_theta.norm()  # the meta step changed the gradient
    assert out.metrics["meta_J_after"] > out.metrics["meta_J"]


def test_second_order_matches_finite_differences_and_differs_from_first_order():
    spec = ModelSpec(config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "num_key_value_heads": 2}, attn_implementation="eager")
    grads, losses = {}, {}
    for second in (False, True):
        torch.manual_seed(0)
        m = MetaRM(model=spec, meta_lr=0.2, second_order=second).double()
        pb, sb = pref_batch(m.tokenizer), shifted_batch(m.tokenizer)
        loss = m.meta_loss(pb, sb).loss
        loss.backward()
        grads[second], losses[second] = flat(p.grad for p in m.meta_parameters().values()), loss.item()
    assert losses[False] == losses[True]  # same forward value L(θ + η∇J(θ))
    diff = grads[True] - grads[False]
    assert diff.norm() > 0.1 * grads[False].norm()
    v = diff / diff.norm()

    def loss_at(eps):  # F(θ + εv) = L(θ + εv + η∇J(θ + εv)), for the last (second-order) module
        with torch.no_grad():
            params = list(m.meta_parameters().values())
            sizes = [p.numel() for p in params]
            for p, dv in zip(params, v.split(sizes)):
                p.add_(eps * dv.view_as(p))
        value = m.meta_loss(pb, sb).loss.item()
        with torch.no_grad():
            for p, dv in zip(params, v.split(sizes)):
                p.sub_(eps * dv.view_as(p))
        return value

    eps = 1e-4
    directional = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert directional == pytest.approx((grads[True] @ v).item(), rel=2e-3)
    assert abs(directional - (grads[False] @ v).item()) > 0.5 * diff.norm().item()


# -- training through Lightning -------------------------------------------------------------------

def test_meta_lr_zero_is_a_reward_model_step(tiny_spec, tmp_path):
    train = word_pairs(tmp_path / "train.jsonl", 32, 0)
    shifted = shifted_responses(tmp_path / "shifted.jsonl", 8, 1)
    kw = dict(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), warmup=2, schedule="linear")
    rm = RewardModel(**kw)
    meta = MetaRM(meta_lr=0.0, **kw)
    meta.load_state_dict(rm.state_dict())
    init = flat(p.detach().clone() for p in rm.parameters())
    trainer(tmp_path, max_steps=2).fit(rm, datamodule=PreferenceDataModule(train=train, batch_size=8, max_length=64))
    trainer(tmp_path, max_steps=2).fit(
        meta, datamodule=MetaRMDataModule(train=train, shifted=shifted, batch_size=8, max_length=64))
    after_rm, after_meta = flat(rm.parameters()).detach(), flat(meta.parameters()).detach()
    assert not torch.equal(after_rm, init)
    assert torch.equal(after_meta, after_rm)  # same optimizer, schedule (warm-up then decay) and batches


def test_training_logs_clips_and_steps_the_schedule(tiny_spec, tmp_path):
    train = word_pairs(tmp_path / "train.jsonl", 32, 0)
    shifted = shifted_responses(tmp_path / "shifted.jsonl", 8, 1)
    m = MetaRM(model=tiny_spec, meta_lr=0.05, optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
               gradient_clip_val=1e-3, schedule="cosine", warmup=1, min_lr_ratio=0.5)
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            metrics = trainer.callback_metrics
            seen.append({k: metrics[k].item() for k in ("train/meta_J", "train/meta_J_after", "train/loss")})

    before = flat(m.meta_parameters().values()).detach().clone()
    t = trainer(tmp_path, max_steps=3, callbacks=[Record()], log_every_n_steps=1)
    t.fit(m, datamodule=MetaRMDataModule(train=train, shifted=shifted, batch_size=8, max_length=64,
                                         shifted_batch_size=2))
    assert t.global_step == 3 and len(seen) == 3
    assert all(s["train/meta_J_after"] > s["train/meta_J"] for s in seen), seen
    assert {"train/accuracy", "train/margin", "train/mean_reward"} <= set(t.callback_metrics)
    # SGD with lr ≤ 1 and gradients clipped to norm 1e-3: three steps move θ by at most 3e-3
    moved = (flat(m.meta_parameters().values()).detach() - before).norm().item()
    assert 0 < moved <= 3e-3 * (1 + 1e-4)
    assert m.lr_schedulers().last_epoch == 3  # stepped once per optimizer step


def test_without_shifted_data_training_stops_with_a_clear_error(tiny_spec, tmp_path):
    train = word_pairs(tmp_path / "train.jsonl", 16, 0)
    with pytest.raises(ValueError, match="MetaRM needs shifted-distribution responses"):
        trainer(tmp_path, max_steps=1).fit(MetaRM(model=tiny_spec),
                                          datamodule=PreferenceDataModule(train=train, batch_size=8, max_length=64))


def test_sharded_strategies_are_refused(tiny_spec):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import ModelParallelStrategy

    m = MetaRM(model=tiny_spec)
    m._trainer = SimpleNamespace(strategy=ModelParallelStrategy())
    with pytest.raises(NotImplementedError, match="ModelParallelStrategy shards them"):
        m.on_fit_start()


def _train_and_measure(spec, tmp_path, meta_lr, seed, steps=48):
    """Train on word pairs (region A); return (J on held-out shifted groups, in-distribution val accuracy)."""
    train = word_pairs(tmp_path / "train.jsonl", 512, 0)
    val = word_pairs(tmp_path / "val.jsonl", 128, 1)
    shifted = shifted_responses(tmp_path / "shifted.jsonl", 128, 2)
    held_out = shifted_responses(tmp_path / "held_out.jsonl", 64, 3)
    L.seed_everything(seed, verbose=False)
    kw = dict(model=spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    if meta_lr is None:
        module = RewardModel(**kw)
        dm = PreferenceDataModule(train=train, val=val, batch_size=16, max_length=64, seed=seed)
    else:
        module = MetaRM(meta_lr=meta_lr, **kw)
        dm = MetaRMDataModule(train=train, val=val, shifted=shifted, batch_size=16, max_length=64, seed=seed)
    t = trainer(tmp_path, max_steps=steps)
    t.fit(module, datamodule=dm)
    t.validate(module, datamodule=dm, verbose=False)
    acc = t.callback_metrics["val/accuracy"].item()
    module.eval()
    with torch.no_grad():
        groups = [json.loads(line) for line in open(held_out)]
        sb = shifted_batch(module.tokenizer, groups)
        j = meta_difference_loss(module(sb["input_ids"], sb["attention_mask"]).view(len(groups), 4)).mean().item()
    return j, acc


def test_miniature_keeps_in_distribution_accuracy(tiny_spec, tmp_path):
    """MetaRM miniature (Secrets of RLHF II, Wang et al. 2024, §3.2), the part that holds reliably.

    Measured (6 seeds, 48 steps, η ∈ {0.03, 0.1, 0.3, 1}): in-distribution accuracy stays at 1.0 for
    η ≤ 0.3, but J on held-out shifted groups is higher than the vanilla RM's in only 1–4 of 6 seeds
    (first order lowers J on average for η ≥ 0.3). So the test asserts accuracy, not the J ordering.
    """
    j_rm, acc_rm = _train_and_measure(tiny_spec, tmp_path, None, seed=0)
    j_meta, acc_meta = _train_and_measure(tiny_spec, tmp_path, 0.1, seed=0)
    assert acc_rm >= 0.9 and acc_meta >= acc_rm - 0.05, (acc_rm, acc_meta)
    assert 0.375 <= j_meta < 0.75 and 0.375 <= j_rm < 0.75  # K = 4: J ∈ [(K−1)/(2K), (K−1)/K)


# -- DDP ------------------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent('''
    import os, sys
    import torch, lightning as L
    torch.set_num_threads(1)
    from lit_rlhf.models import ModelSpec
    from lit_rlhf.modules.meta_rm import MetaRM
    from lit_rlhf.data.shifted import MetaRMDataModule

    out, mode = sys.argv[1], sys.argv[2]
    TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "num_key_value_heads": 2}

    class Probe(MetaRM):
        """Records the rank-local batches. Modes: 'reducer' (first order; manual_backward runs the DDP
        reducer), 'second_order' (the same through the meta step), 'fallback' (plain backward, no reducer:
        MetaRM's own all-reduce)."""
        def training_step(self, batch, batch_idx):
            self.seen.append(batch["input_ids"][:1].clone())
            return super().training_step(batch, batch_idx)
        def next_shifted_batch(self):
            b = super().next_shifted_batch()
            self.seen_shifted.append(b["input_ids"][:1].clone())
            return b
        def manual_backward(self, loss, *args, **kwargs):
            if mode == "fallback":
                loss.backward()
            else:
                super().manual_backward(loss, *args, **kwargs)
        def _reducer_synced(self):
            return mode != "fallback" and super()._reducer_synced()

    L.seed_everything(0)
    m = Probe(model=ModelSpec(config=TINY, attn_implementation="eager"), second_order=mode == "second_order",
              meta_lr=0.5, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    m.seen, m.seen_shifted = [], []
    init = {k: v.detach().clone() for k, v in m.named_parameters()}
    dm = MetaRMDataModule(train=os.path.join(out, "train.jsonl"), shifted=os.path.join(out, "shifted.jsonl"),
                          batch_size=4, shifted_batch_size=2, max_length=64)
    t = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_steps=3, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    t.fit(m, datamodule=dm)
    torch.save({"params": {k: v.detach() for k, v in m.named_parameters()}, "init": init,
                "seen": m.seen, "seen_shifted": m.seen_shifted}, os.path.join(out, f"{mode}_rank{t.global_rank}.pt"))
''')


@pytest.mark.parametrize(
    "mode", [pytest.param(m, marks=pytest.mark.slow) for m in ("reducer", "fallback", "second_order")]
)
def test_ddp_ranks_stay_identical(tmp_path, mode):
    word_pairs(tmp_path / "train.jsonl", 64, 0)
    shifted_responses(tmp_path / "shifted.jsonl", 16, 1, k=3)
    script = tmp_path / "ddp_meta_rm.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"{mode}_rank{r}.pt") for r in (0, 1))
    # the ranks saw different preference and shifted batches, so unsynchronised gradients would diverge
    assert any(not torch.equal(a, b) for a, b in zip(r0["seen"], r1["seen"]))
    assert any(not torch.equal(a, b) for a, b in zip(r0["seen_shifted"], r1["seen_shifted"]))
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
    assert any(not torch.equal(p, r0["init"][n]) for n, p in r0["params"].items())
