"""Identity-balanced P×K batches (paper §4.1: P = 8 identities × K = 4 images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PKSampler:
    """Epochs of batches of P distinct identities × K images each.

    Epoch length follows the strong-baseline RandomIdentitySampler: an identity with n images contributes
    floor(max(n, K) / K) groups of K per epoch (fewer than K images: drawn with replacement). Groups are then
    dealt into batches of P distinct identities; ``num_batches`` is the largest B with
    sum_i min(groups_i, B) >= P * B, so it is fixed for the dataset and every epoch has exactly that many.
    ``epoch(e)`` depends only on (seed, e): resume at step s with ``epoch(e)[s:]``.
    """

    def __init__(self, pids: Sequence[int], num_identities: int, num_instances: int, seed: int = 0):
        pids = np.asarray(pids)
        if pids.ndim != 1 or pids.size == 0:
            raise ValueError(f"pids must be a non-empty 1-D sequence of train identities, got shape {pids.shape}")
        if num_identities < 1 or num_instances < 1:
            raise ValueError(f"num_identities={num_identities}, num_instances={num_instances}: both must be >= 1")
        self.num_identities = int(num_identities)
        self.num_instances = int(num_instances)
        self.seed = int(seed)
        self.identities, inverse = np.unique(pids, return_inverse=True)
        if len(self.identities) < self.num_identities:
            raise ValueError(
                f"num_identities={num_identities} exceeds the {len(self.identities)} identities in "
                f"the training set; lower data.num_identities"
            )
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse))
        self._members = np.split(order, bounds[:-1])  # per identity: its indices into the train list
        self._groups = np.array([max(len(m), self.num_instances) // self.num_instances for m in self._members])
        self.num_batches = self._max_batches(self._groups, self.num_identities)

    @staticmethod
    def _max_batches(groups: np.ndarray, p: int) -> int:
        b = int(groups.sum()) // p
        while b > 0 and np.minimum(groups, b).sum() < p * b:  # an identity can appear once per batch
            b -= 1
        return b

    @property
    def batch_size(self) -> int:
        return self.num_identities * self.num_instances

    def epoch(self, epoch: int) -> np.ndarray:
        """int64 [num_batches, P*K] indices into the train list; rows hold P runs of K same-identity images."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        p, k, b = self.num_identities, self.num_instances, self.num_batches
        groups = []  # per identity: [g_i, K] index groups for this epoch
        for members in self._members:
            idx = rng.permutation(members) if len(members) >= k else rng.choice(members, size=k, replace=True)
            g = len(idx) // k
            groups.append(idx[: g * k].reshape(g, k))
        # Use at most b groups of an identity (once per batch) and exactly p*b groups in total.
        caps = np.minimum(self._groups, b)
        excess = int(caps.sum()) - p * b
        if excess:
            caps = caps - np.bincount(_sample_drops(rng, caps, excess), minlength=len(caps))
        ident_order = rng.permutation(len(groups))
        seq = np.concatenate(
            [groups[i][rng.permutation(len(groups[i]))[: caps[i]]] for i in ident_order if caps[i] > 0]
        )  # [p*b, K], each identity's groups contiguous
        # Dealing position j to batch j % b puts an identity's (<= b) contiguous groups in distinct batches.
        batches = seq.reshape(p, b, k).transpose(1, 0, 2)  # [b, p, K]
        batches = batches[rng.permutation(b)]
        batches = np.take_along_axis(batches, np.argsort(rng.random((b, p)), axis=1)[..., None], axis=1)
        return batches.reshape(b, p * k).astype(np.int64)


def _sample_drops(rng: np.random.Generator, caps: np.ndarray, excess: int) -> np.ndarray:
    """Identity index of each of ``excess`` groups removed uniformly at random from the pool of groups."""
    pool = np.repeat(np.arange(len(caps)), caps)
    return pool[rng.choice(len(pool), size=excess, replace=False)]
