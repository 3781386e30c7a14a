"""bitsandbytes on CPU: QLoRA (4-bit base + LoRA) for policy and reward models, 8-bit optimizers from YAML,
and clear refusals where a combination cannot work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer, word_pairs

pytest.importorskip("bitsandbytes", reason="bnb extra not installed (pip install 'lit-rlhf[bnb]')")
pytest.importorskip("peft", reason="peft extra not installed")

from lightning.pytorch.strategies import ModelParallelStrategy  # noqa: E402

from lit_rlhf.data import PreferenceDataModule  # noqa: E402
from lit_rlhf.models import ModelSpec, load_model, load_tokenizer  # noqa: E402
from lit_rlhf.modules import DPO, SFT, RewardModel  # noqa: E402

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
EXAMPLE_SFT = Path(__file__).resolve().parents[2] / "examples" / "data" / "sft_chat.jsonl"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face folder (quantized loading reads saved weights; bitsandbytes'
    CPU 4-bit kernels quantize in blocks of 64 inputs, so the layers are 64 wide)."""
    folder = tmp_path_factory.mktemp("tiny")
    spec = ModelSpec(config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                             "num_attention_heads": 4, "num_key_value_heads": 2})
    tok = load_tokenizer(spec)
    load_model(spec, "causal_lm", tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _linear4bit_count(net: torch.nn.Module) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in net.modules())


def _base_output(module, ids):
    """The quantized base model's output (adapter off) — what training must leave unchanged."""
    net = getattr(module.model, "backbone", module.model)  # a reward model's adapter sits on its backbone
    with torch.no_grad(), net.disable_adapter():
        out = net(input_ids=ids, attention_mask=torch.ones_like(ids))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).clone()


def _fit(module, tmp_path, data, steps=3):
    ids = torch.randint(3, 200, (2, 12))
    base = _base_output(module, ids)  # (bitsandbytes repacks 4-bit weights for its CPU kernel on first use)
    frozen = {n: p.detach().clone() for n, p in module.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    quiet_trainer(tmp_path, max_steps=steps).fit(module, datamodule=data)
    after = dict(module.named_parameters())
    changed = [n for n, v in frozen.items() if not torch.equal(after[n], v)]
    assert not changed, f"frozen weights changed: {changed}"
    assert torch.equal(_base_output(module, ids), base)
    assert any(not torch.equal(after[n], v) for n, v in trained.items()), "no adapter weight changed"
    assert all(torch.isfinite(after[n]).all() for n in trained)


@pytest.mark.parametrize("method", [DPO, RewardModel])
def test_qlora_trains_only_adapters(method, tiny_folder, tmp_path):
    torch.set_num_threads(1)
    spec = {"name": tiny_folder, "quantization": "4bit", "lora": LORA}
    kwargs = {"reference": "lora_disabled"} if method is DPO else {}
    module = method(model=spec, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), **kwargs)
    assert _linear4bit_count(module.model) > 0
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("model.head") for n in trainable), trainable
    data = PreferenceDataModule(train=word_pairs(tmp_path / "p.jsonl", 32, seed=0), batch_size=8, max_length=48)
    _fit(module, tmp_path, data)


def test_8bit_optimizer_from_yaml_trains(tiny_folder, tmp_path):
    """The optimizer block of a config names bitsandbytes' AdamW8bit; LightningCLI builds it over the trainable
    weights."""
    import bitsandbytes as bnb

    from lit_rlhf.cli import LitRLHFCLI

    pairs = word_pairs(tmp_path / "p.jsonl", 32, seed=0)
    cli = LitRLHFCLI(args=[
        "--model=lit_rlhf.modules.RewardModel", f"--model.model={tiny_folder}",
        "--model.optimizer=bitsandbytes.optim.AdamW8bit", "--model.optimizer.lr=0.01",
        "--data=lit_rlhf.data.PreferenceDataModule", f"--data.train={pairs}", "--data.batch_size=8",
        "--data.max_length=48", "--trainer.accelerator=cpu", "--trainer.max_steps=3", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ], run=False)
    before = {n: p.detach().clone() for n, p in cli.model.named_parameters()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert isinstance(cli.trainer.optimizers[0], bnb.optim.AdamW8bit)
    moved = [n for n, p in cli.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)


class _Fake:
    """Stands in for a Trainer to reach the strategy checks without launching processes."""

    def __init__(self, strategy):
        self.strategy = strategy


def test_8bit_optimizer_with_sharding_is_refused(tiny_folder, tmp_path):
    """As LightningCLI builds it from YAML (a partial around the class), under FSDP2."""
    from lit_rlhf.cli import LitRLHFCLI

    cli = LitRLHFCLI(args=[
        "--model=lit_rlhf.modules.SFT", f"--model.model={tiny_folder}",
        "--model.optimizer=bitsandbytes.optim.AdamW8bit",
        "--data=lit_rlhf.data.SFTDataModule", f"--data.train={EXAMPLE_SFT}",
        "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
    ], run=False)
    cli.model._trainer = _Fake(ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))
    with pytest.raises(ValueError, match="AdamW8bit does not work with ModelParallelStrategy.*strategy: ddp"):
        cli.model.configure_optimizers()


def test_quantized_weights_with_sharding_are_refused(tiny_folder):
    module = SFT(model={"name": tiny_folder, "quantization": "4bit", "lora": LORA})
    with pytest.raises(ValueError, match="4bit .* cannot be sharded by FSDP.*strategy: ddp"):
        module._refuse_quantized("FSDP")


def test_quantized_weights_without_adapter_are_refused(tiny_folder):
    module = SFT(model={"name": tiny_folder, "quantization": "4bit"})
    module._trainer = _Fake(None)
    with pytest.raises(ValueError, match="4bit weights cannot be trained.*add a LoRA adapter"):
        module.configure_optimizers()


def test_quantizing_a_code_built_model_is_refused(tiny_spec):
    with pytest.raises(ValueError, match="built from code: save it first"):
        load_model(dataclasses.replace(tiny_spec, quantization="4bit"))


def test_qlora_gradients_match_a_dequantized_twin(tiny_folder):
    """Adapter gradients flow through the 4-bit base layers as through their dequantized fp32 copies
    (bitsandbytes warns that its CPU gemv kernel has no autograd kernel: this checks the gradients anyway)."""
    import copy

    import bitsandbytes as bnb

    torch.set_num_threads(1)
    quantized = load_model({"name": tiny_folder, "quantization": "4bit", "lora": LORA})
    for name, p in quantized.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # non-zero, so every adapter's gradient depends on later layers
    twin = copy.deepcopy(quantized)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).float()
                plain = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).requires_grad_(False)
                plain.weight.data.copy_(weight)
                setattr(module, child_name, plain)
    ids = torch.randint(3, 200, (2, 12))
    for net in (quantized, twin):
        net(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
    grads = {n: p.grad for n, p in twin.named_parameters() if p.grad is not None}
    assert len(grads) == sum(p.grad is not None for p in quantized.parameters()) > 0
    for name, p in quantized.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name], rtol=0.05, atol=0.05 * grads[name].abs().max().item())
