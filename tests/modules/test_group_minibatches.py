"""Group RL with several minibatches per pass: minibatches of whole groups, each prompt encoded once per minibatch,
the rollout pass in the first epoch's minibatches (first ratio exactly 1), the same update as padded rows."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, arithmetic_prompts
from conftest import online_trainer as trainer

from lit_rlhf.models.logprobs import SHARED_LAYOUTS
from lit_rlhf.modules import GRPO
from lit_rlhf.rollout import RolloutBuffer
from lit_rlhf.rollout.buffer import minibatch_rows

G = 4


def assert_whole_groups(parts: list[torch.Tensor], n: int, group_size: int) -> None:
    """Each part is whole groups (rows ``g·G … g·G + G − 1`` adjacent and in order); every row once."""
    for idx in parts:
        groups = idx.view(-1, group_size)
        assert torch.equal(groups, groups[:, :1] + torch.arange(group_size)) and (groups[:, 0] % group_size == 0).all()
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(n))


@pytest.mark.parametrize(("n_groups", "parts", "sizes"), [(6, 3, [2, 2, 2]), (6, 4, [2, 2, 1, 1]), (5, 2, [3, 2])])
def test_group_minibatches_hold_whole_groups_and_cover_every_row_once(n_groups, parts, sizes):
    n = n_groups * G
    buf = RolloutBuffer()
    buf.add(response=torch.arange(n * 3).view(n, 3), scores=torch.arange(n).float())
    seen: dict[int, list[torch.Tensor]] = {}
    gen = torch.Generator().manual_seed(0)
    for epoch, _i, mb in buf.minibatches(parts, epochs=3, generator=gen, uneven=True, group_size=G):
        assert torch.equal(mb["response"][:, 0] // 3, mb["scores"].long())  # rows stay aligned across fields
        seen.setdefault(epoch, []).append(mb["scores"].long())
    for epoch_parts in seen.values():
        assert [len(idx) // G for idx in epoch_parts] == sizes
        assert_whole_groups(epoch_parts, n, G)
    assert len({tuple(torch.cat(p).tolist()) for p in seen.values()}) > 1  # fresh group permutations


def test_rows_stay_todays_permutation_without_groups_or_with_too_few_groups():
    for n, group_size, parts in ((12, 1, 3), (8, 4, 3), (10, 4, 2)):  # G = 1; 2 groups < 3 parts; 10 rows not groups
        got = minibatch_rows(n, parts, group_size, torch.Generator().manual_seed(3))
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(3)).tensor_split(parts)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_the_first_epoch_drawn_before_the_rollout_is_used_once_and_saved():
    n = 3 * G
    buf = RolloutBuffer()
    buf.add(scores=torch.arange(n).float())
    first = minibatch_rows(n, 2, G, torch.Generator().manual_seed(1))
    buf.first_epoch = first
    got = [mb["scores"].long() for _e, _i, mb in buf.minibatches(2, epochs=2, uneven=True, group_size=G)]
    assert all(torch.equal(a, b) for a, b in zip(got[:2], first, strict=True))
    assert_whole_groups(got[2:], n, G)
    other = RolloutBuffer()
    other.load_state_dict(buf.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.first_epoch, first, strict=True))
    buf.first_epoch = [first[0]]  # not every row
    with pytest.raises(ValueError, match="each row once"):
        list(buf.minibatches(2, uneven=True, group_size=G))
    buf.first_epoch = None
    with pytest.raises(ValueError, match="groups of 4"):  # 12 rows split evenly, 3 groups do not
        list(buf.minibatches(2, group_size=G))
    buf.clear()
    assert buf.first_epoch is None


def hand_samples(tok, n_prompts: int = 4) -> dict:
    """``n_prompts`` prompts of 50-70 tokens, ``G`` completions each of 2-8 tokens (some end with EOS)."""
    g = torch.Generator().manual_seed(7)
    samples: dict = {"prompt_ids": [], "responses": [], "ended": [], "prompts": [], "completions": []}
    for p in range(n_prompts):
        text = "".join(chr(97 + int(c)) for c in torch.randint(0, 26, (50 + 7 * p,), generator=g))
        ids = tok(text)["input_ids"]
        for j in range(G):
            response = torch.randint(97, 123, (2 + (3 * p + j) % 7,), generator=g).tolist()
            ended = j % 2 == 0
            response += [tok.eos_token_id] if ended else []
            samples["prompt_ids"].append(ids)
            samples["responses"].append(response)
            samples["ended"].append(ended)
            samples["prompts"].append(text)
            samples["completions"].append(tok.decode(response, skip_special_tokens=True))
    samples["ended"] = torch.tensor(samples["ended"])
    return samples


def length_reward(prompts, completions):
    return torch.tensor([float(len(c) % 5) for c in completions])


class HandGRPO(GRPO):
    """GRPO on fixed samples (the batch's prompts are ignored); records each pass's layout and rows."""

    passes: list = []
    depth = 0

    def sample(self, batch):
        self.passes = []
        return hand_samples(self.tokenizer)

    def forward_pass(self, model, input_ids, attention_mask, response_width, **kwargs):
        self.depth += 1  # the layout's one-time exactness check runs passes inside a pass: not recorded
        try:
            out = super().forward_pass(model, input_ids, attention_mask, response_width, **kwargs)
        finally:
            self.depth -= 1
        if not self.depth:
            self.passes.append((torch.is_grad_enabled(), self.layout.last, input_ids))
        return out


class PlainGroupGRPO(HandGRPO):
    """``shared_prefix=False`` with the same minibatches of whole groups (the same draws of the training RNG)."""

    group_minibatches = True


def run(tmp_path, cls, shared: bool, beta: float):
    torch.manual_seed(0)
    module = cls(model={"config": TINY}, sampling={"temperature": 1.0, "max_new_tokens": 8}, group_size=G,
                 num_iterations=2, num_mini_batches=2, beta=beta, reward_fn=length_reward, shared_prefix=shared,
                 optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    trainer(tmp_path, 4).fit(module, arithmetic_prompts(4, 4))  # one iteration: 2 passes x 2 minibatches
    return module


@pytest.mark.parametrize("beta", [0.0, 0.05], ids=["no-reference", "reference"])
def test_minibatches_of_whole_groups_share_prompts_and_update_as_padded_rows(tmp_path, beta):
    shared = run(tmp_path / "shared", HandGRPO, True, beta)
    plain = run(tmp_path / "plain", PlainGroupGRPO, False, beta)
    assert shared.group_minibatches and not GRPO(model={"config": TINY}, shared_prefix=False).group_minibatches
    first = shared.buffer.first_epoch
    assert [len(idx) for idx in first] == [2 * G, 2 * G]
    assert_whole_groups(first, 4 * G, G)
    assert all(torch.equal(a, b) for a, b in zip(plain.buffer.first_epoch, first, strict=True))
    rollout = [p for p in shared.passes if not p[0]]
    update = [p for p in shared.passes if p[0]]
    assert len(rollout) == 2 * (1 + (beta > 0)) and len(update) == 4
    assert all(layout in SHARED_LAYOUTS for _, layout, _ in shared.passes)  # every pass encodes its prompts once
    assert all(layout == "padded" for _, layout, _ in plain.passes)
    ids = shared.buffer["input_ids"]
    chunks = [ids[idx] for idx in first]  # the rollout pass ran in the rows of the update's first minibatches
    assert all(torch.equal(p[2], c) for p, c in zip(rollout[::1 + (beta > 0)], chunks, strict=True))
    assert all(torch.equal(p[2], c) for p, c in zip(update[:2], chunks, strict=True))
    stats = shared.update_stats
    assert [(s["epoch"], s["minibatch"]) for s in stats] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert stats[0]["ratio"] == 1.0 and stats[0]["clipfrac"] == 0.0 and stats[0]["clip_region"] == 0.0
    assert any(s["ratio"] != 1.0 for s in stats[1:])  # the policy moved within the update
    response = shared.buffer["response_mask"].bool()  # past a response's end the layouts read different slots
    for key in ("logprobs", "advantages") + (("ref_logprobs",) if beta else ()):
        assert torch.allclose(shared.buffer[key][response], plain.buffer[key][response], rtol=0, atol=1e-5), key
    torch.manual_seed(0)
    initial = GRPO(model={"config": TINY}).model.parameters()  # the runs' initial policy (the same seed)
    moved = 0.0
    for (name, a), b, init in zip(shared.model.named_parameters(), plain.model.parameters(), initial, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
        moved = max(moved, (a - init).abs().max().item())
    assert moved > 1e-3  # the update changed the parameters (a comparison of something)
