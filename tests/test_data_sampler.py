"""P×K sampler: structure, epoch length, determinism, resume and device sharding."""

import numpy as np
import pytest

from data_pipelines.sampler import PKSampler
from gldfa_jax.parallel import shard_batch


def _naive_num_batches(counts, p, k):
    groups = [max(n, k) // k for n in counts]
    best = 0
    for b in range(1, sum(groups) // p + 1):  # b batches need p*b groups, at most b per identity
        if sum(min(g, b) for g in groups) >= p * b:
            best = b
    return best


def _pids(counts):
    pids = np.repeat(np.arange(len(counts)) * 3 + 5, counts)  # non-contiguous ids, shuffled order
    return np.random.default_rng(0).permutation(pids)


@pytest.mark.parametrize(
    "counts,p,k",
    [
        ([1, 2, 3, 4, 5, 8, 9, 13, 4, 4, 7, 2], 4, 4),
        ([30, 2, 2, 2, 3], 3, 2),  # one dominant identity is capped
        ([6] * 10, 8, 4),
    ],
)
def test_pk_structure_and_length(counts, p, k):
    pids = _pids(counts)
    s = PKSampler(pids, p, k, seed=3)
    assert s.num_batches == _naive_num_batches(counts, p, k)
    e = s.epoch(0)
    assert e.shape == (s.num_batches, p * k) and e.dtype == np.int64
    for row in e:
        ids = pids[row].reshape(p, k)
        assert (ids == ids[:, :1]).all()  # K images of one identity per group
        assert len(set(ids[:, 0])) == p  # P different identities per batch
    # an identity with n >= K images never repeats an image inside an epoch
    used = np.bincount(e.ravel(), minlength=len(pids))
    big = np.isin(pids, [pid for pid, n in zip(np.arange(len(counts)) * 3 + 5, counts) if n >= k])
    assert used[big].max() <= 1


def test_uncapped_identity_group_counts():
    counts = [1, 2, 3, 4, 5, 8, 9, 25, 4, 4, 7, 2, 6, 6, 10, 3]
    pids = _pids(counts)
    s = PKSampler(pids, 4, 4, seed=0)
    groups = [max(n, 4) // 4 for n in counts]
    # every group is used when the total is a multiple of P and no identity is capped
    assert sum(groups) % 4 == 0 and s.num_batches == sum(groups) // 4
    e = s.epoch(1)
    per_id = {pid: int((pids[e.ravel()] == pid).sum()) for pid in np.unique(pids)}
    assert [per_id[pid] for pid in np.arange(len(counts)) * 3 + 5] == [4 * g for g in groups]


def test_small_identities_with_replacement():
    pids = np.array([0, 1, 1, 2, 2, 2])
    e = PKSampler(pids, 3, 4, seed=0).epoch(0)
    assert e.shape == (1, 12)
    assert sorted(pids[e[0]].tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_deterministic_and_resumable():
    pids = _pids([5, 9, 4, 12, 7, 6, 8, 4])
    a, b = PKSampler(pids, 2, 4, seed=7), PKSampler(pids, 2, 4, seed=7)
    np.testing.assert_array_equal(a.epoch(3), b.epoch(3))
    assert not np.array_equal(a.epoch(3), a.epoch(4))
    assert not np.array_equal(a.epoch(3), PKSampler(pids, 2, 4, seed=8).epoch(3))
    # resume at (epoch 3, step 2): a fresh sampler continues with exactly the same batches
    np.testing.assert_array_equal(b.epoch(3)[2:], a.epoch(3)[2:])
    assert len(a.epoch(3)[2:]) == a.num_batches - 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_identities=5 exceeds the 2 identities"):
        PKSampler([0, 0, 1], 5, 2)
    with pytest.raises(ValueError, match="non-empty"):
        PKSampler([], 2, 2)


def test_shard_batch():
    batch = np.arange(32)
    s = shard_batch(batch, 2)
    assert s.shape == (2, 16) and (s.ravel() == batch).all()
    host1 = shard_batch(batch, 2, process_index=1, process_count=2)
    np.testing.assert_array_equal(host1, np.arange(16, 32).reshape(2, 8))
    with pytest.raises(ValueError, match="not divisible"):
        shard_batch(np.arange(30), 4)
    images = np.arange(8 * 3 * 2).reshape(8, 3, 2)  # [B, ...] batches keep their trailing axes
    np.testing.assert_array_equal(
        shard_batch(images, 2, process_index=1, process_count=2), images[4:].reshape(2, 2, 3, 2)
    )
    with pytest.raises(ValueError, match=r"\[B, \.\.\.\]"):
        shard_batch(np.float32(1.0), 1)
