"""SFT module: trains the completion tokens only, parameters move, metrics go the right way."""

import lightning as L
import pytest
import torch
from conftest import quiet_trainer, write_jsonl

from lit_rlhf.data import SFTDataModule
from lit_rlhf.eval import GoldEval
from lit_rlhf.modules import SFT
from lit_rlhf.tasks import Arithmetic


def _setup(tiny_spec, tmp_path, n_train=256):
    module = SFT(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), gold_eval_batches=1,
                 sampling={"max_new_tokens": 24})
    dm = SFTDataModule(task=Arithmetic(min_steps=1, max_steps=2), task_sizes={"train": n_train, "val": 32, "test": 32},
                       batch_size=16, max_length=64)
    trainer = L.Trainer(accelerator="cpu", max_steps=40, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, limit_val_batches=2)
    return module, dm, trainer


def test_sft_trains_and_reports_metrics(tiny_spec, tmp_path):
    module, dm, trainer = _setup(tiny_spec, tmp_path)
    before = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    trainer.validate(module, datamodule=dm, verbose=False)
    loss_before = trainer.callback_metrics["val/loss"].item()
    assert "val/perplexity" in trainer.callback_metrics and "val/gold_reward" in trainer.callback_metrics
    assert torch.isclose(trainer.callback_metrics["val/perplexity"], torch.exp(torch.tensor(loss_before)))
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    loss_after = trainer.callback_metrics["val/loss"].item()
    changed = [k for k, v in module.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)


def test_prompt_tokens_carry_no_gradient(tiny_spec):
    module = SFT(model=tiny_spec)
    ids = torch.tensor([[1, 10, 11, 12, 13, 2]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask}
    nll, n = module.loss(batch)
    assert n.item() == 3
    # changing a prompt-only target position (the logits predicting prompt tokens) must not matter:
    # recompute with the prompt tokens' loss explicitly masked out by hand
    logits = module(ids, torch.ones_like(ids)).float()
    logp = logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert torch.allclose(nll, -(logp[2:]).sum(), atol=1e-5)


def test_gold_eval_callback_before_after(tiny_spec, tmp_path):
    module, dm, _ = _setup(tiny_spec, tmp_path, n_train=128)
    gold = GoldEval(num_prompts=16, sampling={"max_new_tokens": 24}, every_n_steps=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[gold],
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert [h["step"] for h in gold.history] == [0, 2, 4, 5]
    # the last figure is the task's gold reward of the trained model's greedy completions
    items = dm.dataset("val").items[:16]
    completions = module.generate([x["prompt_ids"] for x in items], gold.sampling)
    expected = dm.task.reward([x["prompt_text"] for x in items], completions).mean().item()
    assert gold.history[-1]["gold/reward"] == pytest.approx(expected)


def test_nonfinite_loss_stops_with_message(tiny_spec):
    module = SFT(model=tiny_spec)
    module.check_finite(torch.tensor(1.5))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        module.check_finite(torch.tensor(float("nan")))


def test_training_metrics_are_means_over_the_logging_interval(tiny_spec, tmp_path):
    module, dm, _ = _setup(tiny_spec, tmp_path, n_train=128)
    losses, logged = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].item())
            logged.append(trainer.callback_metrics.get("train/loss"))

    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=3, callbacks=[Record()], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert logged[0] is None and logged[1] is None  # nothing handed to Lightning before the first log step
    assert logged[2].item() == pytest.approx(sum(losses[:3]) / 3, rel=1e-5)
    assert logged[5].item() == pytest.approx(sum(losses[3:6]) / 3, rel=1e-5)


def test_evaluation_loss_is_the_token_mean_of_the_whole_split(tiny_spec, tmp_path):
    rows = [{"prompt": f"{i}+{i}=", "completion": "x" * (1 + 3 * i)} for i in range(6)]  # 2..17 completion tokens
    module = SFT(model=tiny_spec)
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", rows), test=write_jsonl(tmp_path / "t.jsonl", rows),
                       batch_size=4, max_length=64)
    logged = quiet_trainer(tmp_path).test(module, datamodule=dm, verbose=False)[0]
    assert set(logged) == {"test/loss", "test/perplexity"}  # no task: no gold reward
    module.eval()
    with torch.no_grad():
        nll, tokens = module.loss(dm.collator()(dm.dataset("test").items))  # the whole split in one batch
    assert logged["test/loss"] == pytest.approx((nll / tokens).item(), rel=1e-5)
    assert logged["test/perplexity"] == pytest.approx(torch.exp(nll / tokens).item(), rel=1e-5)
