"""Padding-free (packed) completion log-probs equal the padded ones, values and gradients."""

import pytest
import torch

from lit_rlhf.data.collate import pad
from lit_rlhf.models import load_model, pack_rows, packed_sequence_logps, packing_width, sequence_logps


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 3, 4, 2, 6], capacity=8) == [[4, 3], [0, 1], [2]]
    assert sorted(i for row in pack_rows([1] * 7, 3) for i in row) == list(range(7))
    with pytest.raises(ValueError, match="more than the row capacity"):
        pack_rows([9], capacity=8)


def test_packing_width_takes_the_fewest_token_slots():
    # slots (rows x width): 10: [6,4] [5,5] [3] = 30; 11: 33; 12: [6,5] [5,4,3] = 24; 13: 26; 14: 28
    assert len(pack_rows([6, 5, 5, 4, 3], 12)) == 2
    assert packing_width([6, 5, 5, 4, 3], 10, 14, candidates=4) == 12  # candidates 10, 11, 12, 13, 14
    assert packing_width([6, 5, 5, 4, 3], 10, 10) == 10
    assert packing_width([5, 5], 10, 20) == 10  # already one full row: the narrowest of the ties


def _batch(tok):
    rng = torch.Generator().manual_seed(0)
    seqs, masks = [], []
    for n_prompt, n_completion in [(3, 14), (5, 2), (2, 1), (4, 9), (6, 5), (3, 3)]:
        ids = torch.randint(3, len(tok), (n_prompt + n_completion,), generator=rng).tolist()
        seqs.append(ids)
        masks.append([0] * n_prompt + [1] * n_completion)
    return pad(seqs, tok.pad_token_id), pad([[1] * len(s) for s in seqs], 0), pad(masks, 0)


@pytest.mark.parametrize("max_width", [1.0, 2.0])
def test_packed_equals_padded_values_and_gradients(tiny_spec, tok, max_width):
    model = load_model(tiny_spec, "causal_lm", tok)
    ids, attention, completion = _batch(tok)
    padded, lengths = sequence_logps(model, ids, attention, completion)
    (padded * torch.arange(1.0, 7.0)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    packed, packed_lengths = packed_sequence_logps(model, ids, attention, completion, max_width=max_width)
    (packed * torch.arange(1.0, 7.0)).sum().backward()
    assert torch.equal(lengths, packed_lengths) and lengths.tolist() == [14, 2, 1, 9, 5, 3]
    assert torch.allclose(padded, packed, atol=1e-4)
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, model.parameters()))


def test_dpo_falls_back_when_the_model_mixes_packed_sequences(tiny_spec, tok):
    from lit_rlhf.modules import DPO

    class NoPositions(torch.nn.Module):  # drops position_ids: packed sequences would attend to each other
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, position_ids=None, **kwargs):
            return self.net(input_ids=input_ids, **kwargs)

    module = DPO(model=tiny_spec, reference="none")
    with torch.no_grad():  # a sharper random model, whose outputs depend on the context
        for p in module.model.parameters():
            p.mul_(3.0)
    ids, attention, completion = _batch(tok)
    with pytest.warns(UserWarning, match="falls back to padded"):
        logps, _ = module.sequence_logps(NoPositions(module.model), ids, attention, completion)
    assert not module.padding_free
    assert torch.allclose(logps, sequence_logps(module.model, ids, attention, completion)[0])
