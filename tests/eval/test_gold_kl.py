"""gold/kl: generated-token extraction, padding-free sequence log-ratios, GoldEval with each reference source."""

import lightning as L
import pytest
import torch

from lit_rlhf.data import PreferenceDataModule, SFTDataModule
from lit_rlhf.eval import GoldEval, sequence_log_ratios
from lit_rlhf.eval.gold import GoldResult, completion_token_ids
from lit_rlhf.models import load_model, sequence_logps
from lit_rlhf.modules import DPO, SFT
from lit_rlhf.tasks import Arithmetic


def test_completion_token_ids_stop_at_eos_or_trailing_padding():
    seqs = torch.tensor([[0, 5, 7, 8, 2, 0, 0], [5, 5, 7, 9, 9, 0, 0], [0, 0, 7, 8, 9, 10, 11]])
    assert completion_token_ids(seqs, 2, eos_id=2, pad_id=0) == [[7, 8, 2], [7, 9, 9], [7, 8, 9, 10, 11]]


def test_gold_result_mean():
    assert GoldResult(["a", "b"], ["x", "y"], torch.tensor([1.0, 0.0])).mean == 0.5
    assert GoldResult([], [], torch.zeros(0)).mean != GoldResult([], [], torch.zeros(0)).mean  # NaN when empty


def test_sequence_log_ratios_match_unpadded_log_probs(tiny_spec, tok):
    torch.manual_seed(0)
    policy = load_model(tiny_spec, "causal_lm", tok).eval()
    torch.manual_seed(1)
    reference = load_model(tiny_spec, "causal_lm", tok).eval()
    prompts = [tok("12+3=")["input_ids"], tok("7*8-1=")["input_ids"], tok("1=")["input_ids"]]
    completions = [tok("15", add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
                   tok("7*8=56\n56-1=55", add_special_tokens=False)["input_ids"], [tok.eos_token_id]]
    fn = lambda net: lambda *a: sequence_logps(net, *a)[0]  # noqa: E731
    ratios = sequence_log_ratios(fn(policy), fn(reference), prompts, completions, tok.pad_token_id, batch_size=2)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids = torch.tensor([p + c])
        mask = torch.tensor([[0] * len(p) + [1] * len(c)])
        with torch.no_grad():
            expected = sequence_logps(policy, ids, torch.ones_like(ids), mask)[0] - \
                sequence_logps(reference, ids, torch.ones_like(ids), mask)[0]
        assert ratios[i].item() == pytest.approx(expected.item(), abs=1e-4)
    assert ratios.abs().min() > 1e-3  # two different models
    assert sequence_log_ratios(fn(policy), lambda *a: None, prompts, completions, tok.pad_token_id) is None


def _fit(module, dm, gold, tmp_path, steps=4):
    L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[gold], limit_val_batches=0, default_root_dir=tmp_path
              ).fit(module, datamodule=dm)


def _sft(tiny_spec):
    return SFT(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), gold_eval_batches=0)


def _arith(**kwargs):
    return SFTDataModule(task=Arithmetic(min_steps=1, max_steps=2), task_sizes={"train": 64, "val": 8, "test": 8},
                         batch_size=16, max_length=64, **kwargs)


@pytest.mark.parametrize("reference", ["snapshot", "auto"])
def test_gold_eval_kl_for_sft(tiny_spec, tmp_path, reference):
    gold = GoldEval(num_prompts=8, sampling={"max_new_tokens": 12, "temperature": 1.0}, reference=reference)
    _fit(_sft(tiny_spec), _arith(), gold, tmp_path)
    if reference == "auto":  # SFT has no reference of its own
        assert all("gold/kl" not in h for h in gold.history)
        return
    assert gold.history[0]["gold/kl"] == pytest.approx(0.0, abs=1e-5)  # the snapshot is the policy at start
    assert abs(gold.history[-1]["gold/kl"]) > 1e-3


def test_gold_eval_kl_uses_the_dpo_reference(tiny_spec, tmp_path):
    torch.manual_seed(0)
    module = DPO(model=tiny_spec, beta=0.5, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    dm = PreferenceDataModule(task=Arithmetic(min_steps=1, max_steps=2), task_sizes={"train": 64, "val": 8, "test": 8},
                              batch_size=16, max_length=64)
    gold = GoldEval(num_prompts=8, sampling={"max_new_tokens": 8, "temperature": 1.0})
    _fit(module, dm, gold, tmp_path)
    assert gold.history[0]["gold/kl"] == pytest.approx(0.0, abs=1e-5)
    assert abs(gold.history[-1]["gold/kl"]) > 1e-3


def test_bad_reference_option():
    with pytest.raises(ValueError, match="reference must be"):
        GoldEval(reference="copy")



def test_gold_eval_is_off_with_a_warning_when_the_data_has_no_task(tiny_spec, tmp_path):
    """A shipped config (with GoldEval) run on the user's own file: training runs, GoldEval says why it logs nothing."""
    from conftest import write_jsonl

    rows = [{"prompt": f"{i}+1=", "completion": f"{i + 1}"} for i in range(20)]
    dm = SFTDataModule(train=write_jsonl(tmp_path / "mine.jsonl", rows), batch_size=4, max_length=32, val_from="none")
    gold = GoldEval(num_prompts=8, every_n_steps=1)
    module = _sft(tiny_spec)
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.warns(UserWarning, match="GoldEval is off for this run: the data has no `task`"):
        _fit(module, dm, gold, tmp_path, steps=3)
    assert not gold.history and not gold.active
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    with pytest.raises(ValueError, match="needs a data module with a `task`"):  # asked for directly: an error
        gold.evaluate(L.Trainer(accelerator="cpu", logger=False), module)


def test_gold_eval_refuses_prompts_its_task_cannot_grade_before_sampling(tiny_spec, tmp_path):
    """Your own rows next to a config's task that cannot read them: a located error naming the row and the fix."""
    from conftest import write_jsonl

    from lit_rlhf.data import DataError

    rows = [{"prompt": f"review number {i}:", "completion": " great"} for i in range(20)]
    dm = SFTDataModule(train=write_jsonl(tmp_path / "mine.jsonl", rows), task=Arithmetic(), batch_size=4,
                       max_length=32, val_from="train", val_split=0.1)
    gold = GoldEval(num_prompts=8)
    with pytest.raises(DataError, match=r"mine.jsonl:\d+: field 'prompt': the task Arithmetic cannot grade this "
                                        r"prompt \(not an arithmetic prompt.*set it to the task your prompts"):
        _fit(_sft(tiny_spec), dm, gold, tmp_path)
    assert not gold.history
