"""LengthGroupedBatchSampler: coverage, length homogeneity, determinism, epochs and replicas."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lit_rlhf.data import LengthGroupedBatchSampler


def lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(1, 500) for _ in range(n)]


def flat(batches):
    return [i for batch in batches for i in batch]


def mean_range(batches, lens):
    return sum(max(lens[i] for i in b) - min(lens[i] for i in b) for b in batches) / len(batches)


def test_every_index_once_per_epoch():
    lens = lengths(1003)
    sampler = LengthGroupedBatchSampler(lens, batch_size=8, seed=1, group_factor=10)
    batches = list(sampler)
    assert sorted(flat(batches)) == list(range(1003))
    assert len(batches) == len(sampler) == 126  # ceil(1003 / 8)
    sizes = Counter(len(b) for b in batches)
    assert sizes == Counter({8: 125, 3: 1})


def test_drop_last_drops_only_the_partial_batch():
    lens = lengths(1003)
    batches = list(LengthGroupedBatchSampler(lens, batch_size=8, drop_last=True, group_factor=10))
    assert len(batches) == 125
    assert all(len(b) == 8 for b in batches)
    assert len(set(flat(batches))) == 1000


def test_batches_are_length_homogeneous_compared_with_random():
    lens = lengths(2000)
    batches = list(LengthGroupedBatchSampler(lens, batch_size=16, seed=0, group_factor=50))
    rng = random.Random(0)
    order = list(range(2000))
    rng.shuffle(order)
    baseline = [order[i:i + 16] for i in range(0, 2000, 16)]
    grouped, rand = mean_range(batches, lens), mean_range(baseline, lens)
    assert rand > 300  # uniform lengths in [1, 500]: a random batch of 16 spans most of the range
    assert grouped < rand / 20
    # and each batch is sorted longest first within its mega-batch
    assert all([lens[i] for i in b] == sorted((lens[i] for i in b), reverse=True) for b in batches)


def test_batches_are_shuffled_not_sorted_globally():
    lens = lengths(800)
    batches = list(LengthGroupedBatchSampler(lens, batch_size=8, group_factor=10))
    firsts = [lens[b[0]] for b in batches]
    assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)


def test_deterministic_for_a_seed_and_different_across_epochs_and_seeds():
    lens = lengths(500)
    a = LengthGroupedBatchSampler(lens, batch_size=4, seed=3, group_factor=5)
    b = LengthGroupedBatchSampler(lens, batch_size=4, seed=3, group_factor=5)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    epoch0 = list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != epoch0
    assert sorted(flat(epoch1)) == list(range(500))
    b.set_epoch(1)
    assert list(b) == epoch1
    other_seed = list(LengthGroupedBatchSampler(lens, batch_size=4, seed=4, group_factor=5))
    assert other_seed != epoch0


def test_no_shuffle_sorts_each_mega_batch_in_order():
    lens = [1, 5, 3, 2, 9, 7, 4, 8]
    batches = list(LengthGroupedBatchSampler(lens, batch_size=2, shuffle=False, group_factor=2))
    # mega-batches of 4: indices 0-3 sorted by -length -> [1, 2, 3, 0]; indices 4-7 -> [4, 7, 5, 6]
    assert batches == [[1, 2], [3, 0], [4, 7], [5, 6]]


@pytest.mark.parametrize("n, batch_size", [(1003, 8), (64, 8), (72, 8), (5, 2)])
def test_two_replicas_equal_counts_and_disjoint_indices(n, batch_size):
    lens = lengths(n)
    ranks = [LengthGroupedBatchSampler(lens, batch_size=batch_size, seed=7, group_factor=4, num_replicas=2, rank=r)
             for r in (0, 1)]
    out = [list(s) for s in ranks]
    total = -(-n // batch_size)
    assert len(out[0]) == len(out[1]) == len(ranks[0]) == len(ranks[1]) == -(-total // 2)
    all_batches = list(LengthGroupedBatchSampler(lens, batch_size=batch_size, seed=7, group_factor=4))
    wrapped = len(out[0]) * 2 - total  # 0 or 1 batch repeated from the front to even out the ranks
    assert wrapped in (0, 1)
    seen = Counter(flat(out[0]) + flat(out[1]))
    assert set(seen) == set(range(n))  # every index reaches some rank
    repeated = {i for i, c in seen.items() if c > 1}
    assert repeated == (set(all_batches[0]) if wrapped else set())
    if not wrapped:
        assert not set(flat(out[0])) & set(flat(out[1]))


def test_two_replicas_drop_last_are_disjoint():
    lens = lengths(1003)
    out = [list(LengthGroupedBatchSampler(lens, batch_size=8, drop_last=True, num_replicas=2, rank=r, group_factor=4))
           for r in (0, 1)]
    assert len(out[0]) == len(out[1]) == 62  # 125 full batches // 2
    assert not set(flat(out[0])) & set(flat(out[1]))
    assert all(len(b) == 8 for b in out[0] + out[1])


# -- resuming mid-epoch -------------------------------------------------------------------------------

def resumable(lens, epoch=0, **kwargs):
    from lit_rlhf.data.sampling import ResumableLoader

    sampler = LengthGroupedBatchSampler(lens, batch_size=4, seed=5, group_factor=3, **kwargs)
    sampler.set_epoch(epoch)
    return ResumableLoader(list(range(len(lens))), batch_sampler=sampler, collate_fn=list)


def test_loader_state_resumes_the_remaining_batches_in_order():
    lens = lengths(50)  # 13 batches
    full = list(resumable(lens, epoch=2))
    loader = resumable(lens, epoch=2)
    it = iter(loader)
    seen = [next(it) for _ in range(5)]
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 5} and seen == full[:5]
    fresh = resumable(lens)  # a new process: epoch not yet set
    fresh.load_state_dict(state)
    fresh.load_state_dict(state)  # absolute: loading twice (data module and Lightning) skips once
    assert fresh.state_dict() == state  # pending, not yet started
    rest = list(fresh)
    assert rest == full[5:]
    assert fresh.state_dict() == {"epoch": 3, "batches": 0}  # pass over: the next one is a new epoch
    fresh.batch_sampler.set_epoch(3)
    assert list(fresh) == list(resumable(lens, epoch=3))  # the skip was one-shot
    # a resumed-in-the-middle state saved again mid-pass counts from the epoch start
    again = resumable(lens)
    again.load_state_dict(state)
    it = iter(again)
    next(it), next(it)
    assert again.state_dict() == {"epoch": 2, "batches": 7}


def test_resume_position_applies_to_its_epoch_only():
    lens = lengths(50)
    loader = resumable(lens)
    loader.load_state_dict({"epoch": 1, "batches": 4})
    loader.batch_sampler.set_epoch(2)  # a stale position of an earlier epoch is ignored
    assert list(loader) == list(resumable(lens, epoch=2))


def test_resume_with_replicas_skips_per_rank_batches():
    lens = lengths(80)
    ranks = [resumable(lens, num_replicas=2, rank=r) for r in (0, 1)]
    full = [list(r) for r in ranks]
    for r, loader in enumerate(ranks):
        loader.load_state_dict({"epoch": 0, "batches": 3})
        assert list(loader) == full[r][3:]


def test_lightning_sets_the_epoch_through_batch_sampler_sampler():
    # Lightning calls set_epoch on dataloader.sampler and dataloader.batch_sampler.sampler only
    from lightning.fabric.utilities.data import _set_sampler_epoch

    loader = resumable(lengths(20))
    _set_sampler_epoch(loader, 4)
    assert loader.batch_sampler.epoch == 4
