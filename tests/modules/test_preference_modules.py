"""SimPO / ORPO / CPO modules and DPO loss types: CLI defaults from the subclass, learning, no reference in memory."""

import pytest
import torch
from conftest import TINY, quiet_trainer, word_pairs

from lit_rlhf.cli import make_cli
from lit_rlhf.data import PreferenceDataModule
from lit_rlhf.modules import CPO, DPO, ORPO, SimPO


def _data(tmp_path, n=128):
    return PreferenceDataModule(train=word_pairs(tmp_path / "train.jsonl", n, 0),
                                val=word_pairs(tmp_path / "val.jsonl", 32, 99), batch_size=16, max_length=48)


def _cli(tmp_path, *args):
    train, val = word_pairs(tmp_path / "train.jsonl", 16, 0), word_pairs(tmp_path / "val.jsonl", 8, 1)
    config = f"{{name: lit-rlhf:tiny-llama, config: {{{', '.join(f'{k}: {v}' for k, v in TINY.items())}}}}}"
    return make_cli([*args, f"--model.model={config}", "--data=PreferenceDataModule", f"--data.train={train}",
                     f"--data.val={val}", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"],
                    run=False, save_config=False)


@pytest.mark.parametrize("cls,expected", [
    (SimPO, {"beta": 2.0, "simpo_gamma": 1.0, "loss_type": ["simpo"], "reference": "none"}),
    (ORPO, {"beta": 0.1, "loss_type": ["orpo", "sft"], "reference": "none"}),
    (CPO, {"beta": 0.1, "loss_type": ["sigmoid", "sft"], "reference": "none"}),
])
def test_subclass_defaults_reach_the_cli(tmp_path, cls, expected):
    module = _cli(tmp_path, f"--model={cls.__name__}").model
    assert type(module) is cls
    for key, value in expected.items():
        assert getattr(module, key) == value, key
    assert module.ref_model is None
    # a value given on the command line still wins
    assert _cli(tmp_path, f"--model={cls.__name__}", "--model.beta=0.7").model.beta == 0.7


def test_dpo_takes_a_list_of_loss_types_from_the_cli(tmp_path):
    module = _cli(tmp_path, "--model=DPO", "--model.loss_type=[sigmoid, bco_pair]", "--model.loss_weights=[0.5, 1]")
    assert module.model.loss_type == ["sigmoid", "bco_pair"] and module.model.loss_weights == [0.5, 1.0]


def test_reference_free_loss_with_a_reference_is_refused(tiny_spec):
    with pytest.raises(ValueError, match="reference: none"):
        DPO(model=tiny_spec, loss_type="simpo")
    with pytest.raises(ValueError, match="unknown"):
        DPO(model=tiny_spec, loss_type="sigmoidd")


@pytest.mark.parametrize("cls,kwargs", [(SimPO, {}), (ORPO, {}), (CPO, {}),
                                        (DPO, {"loss_type": ["apo_zero", "nca_pair"], "beta": 0.5})])
def test_learns_the_preference(tiny_spec, tmp_path, cls, kwargs):
    torch.manual_seed(0)
    module = cls(model=tiny_spec, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), **kwargs)
    dm = _data(tmp_path)
    before = {k: v.detach().clone() for k, v in module.model.named_parameters()}
    trainer = quiet_trainer(tmp_path, max_steps=24)
    trainer.validate(module, datamodule=dm, verbose=False)
    start = {k: v.item() for k, v in trainer.callback_metrics.items()}
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    end = {k: v.item() for k, v in trainer.callback_metrics.items()}
    assert end["val/loss"] < start["val/loss"]
    assert end["val/rewards/accuracies"] > 0.8 and end["val/rewards/margins"] > start["val/rewards/margins"], end
    assert all(not torch.equal(v, before[k]) for k, v in module.model.named_parameters())


def test_checkpoint_round_trip_keeps_subclass_settings(tiny_spec, tmp_path):
    module = SimPO(model=tiny_spec, simpo_gamma=0.3)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=_data(tmp_path, n=16))
    path = tmp_path / "simpo.ckpt"
    trainer.save_checkpoint(path)
    loaded = SimPO.load_from_checkpoint(path, weights_only=True)
    assert loaded.simpo_gamma == 0.3 and loaded.reference == "none" and loaded.loss_type == ["simpo"]


def test_readme_subclass_example_gets_its_defaults_through_the_cli(tmp_path, monkeypatch):
    """The README's extension example, run as written: its signature defaults reach the CLI."""
    import re
    import sys
    import types
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "class MarginSimPO" in block)
    package = types.ModuleType("readme_example")
    exec(compile(code, "README.md", "exec"), package.__dict__)
    monkeypatch.setitem(sys.modules, "readme_example", package)
    module = _cli(tmp_path, "--model=readme_example.MarginSimPO").model
    settings = (module.beta, module.gamma, module.delta, module.reference, module.ref_model)
    assert settings == (2.0, 1.0, 0.01, "none", None)
    trainer = quiet_trainer(tmp_path, max_steps=2)
    trainer.fit(module, datamodule=_data(tmp_path, n=32))
    assert trainer.global_step == 2
