"""Ranking evaluation against a per-query loop written from the protocol's definition."""

import itertools

import chex
import jax
import numpy as np
import pytest

from benchmarks.references import reference_market_loop
from gldfa_jax import ranking


def random_problem(rng, num_q, num_g, num_ids, num_cams=3, ties=False):
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    g_camids = rng.integers(0, num_cams, num_g)
    dist = rng.random((num_q, num_g)).astype(np.float32)
    if ties:
        dist = np.round(dist * 4).astype(np.float32) / 4
    return dist, q_pids, g_pids, q_camids, g_camids


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_loop(ties, dtype):
    rng = np.random.default_rng(0)
    dist, *labels = random_problem(rng, 60, 300, 25, ties=ties)
    dist = dist.astype(dtype)
    ref_cmc, ref_map, ref_inp = reference_market_loop(dist, *labels, max_rank=50)
    result = ranking.rank_metrics(dist, *labels, max_rank=50, block_size=7)
    chex.assert_shape(result["cmc"], (50,))
    np.testing.assert_allclose(result["cmc"], ref_cmc, atol=1e-6)
    np.testing.assert_allclose(result["mAP"], ref_map, atol=1e-6)
    np.testing.assert_allclose(result["mINP"], ref_inp, atol=1e-6)


def test_hand_computed_example():
    # Query pid 1 cam 0. Gallery by distance: [pid 1 cam 0 (removed), pid 2, pid 1 cam 1, pid 3, pid 1 cam 2].
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    g_pids, g_camids = np.array([1, 2, 1, 3, 1]), np.array([0, 0, 1, 1, 2])
    result = ranking.rank_metrics(dist, [1], g_pids, [0], g_camids, max_rank=4)
    # Kept ranking: wrong, hit, wrong, hit -> first hit at rank 2, AP = (1/2 + 2/4) / 2, INP = 2/4.
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1])
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mINP"] == pytest.approx(0.5)


def test_distractors_are_wrong_matches_and_unmatched_queries_skipped():
    dist = np.array([[0.1, 0.2], [0.3, 0.1]], np.float32)
    g_pids, g_camids = np.array([0, 5]), np.array([1, 1])
    # Query 0 (pid 5): distractor pid 0 ranks first -> rank 2. Query 1 (pid 7): no match, skipped.
    result = ranking.rank_metrics(dist, [5, 7], g_pids, [0, 0], g_camids, max_rank=2)
    assert result["num_valid_queries"] == 1
    np.testing.assert_allclose(result["cmc"], [0, 1])


def test_one_gallery_item_and_long_max_rank():
    result = ranking.rank_metrics(np.array([[1.0]], np.float32), [3], [3], [0], [1], max_rank=5)
    np.testing.assert_allclose(result["cmc"], np.ones(5))
    assert result["mAP"] == 1.0 and result["mINP"] == 1.0


def test_all_ties_rank_by_gallery_index():
    dist = np.zeros((1, 4), np.float32)
    result = ranking.rank_metrics(dist, [1], [2, 1, 2, 1], [0], [1, 1, 1, 1], max_rank=4)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1])
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="no query"):
        ranking.rank_metrics(np.ones((1, 2), np.float32), [1], [1, 1], [0], [0, 0])


@pytest.mark.parametrize(
    "bad, name",
    [
        (dict(q_pids=np.zeros(3, int)), "q_pids"),
        (dict(g_camids=np.zeros(9, int)), "g_camids"),
        (dict(distmat=np.ones((2, 5, 1), np.float32)), "distmat"),
        (dict(max_rank=0), "max_rank"),
        (dict(distmat=np.full((2, 5), np.nan, np.float32)), "distmat"),
        (dict(distmat=np.ones((2, 0), np.float32), g_pids=np.zeros(0, int), g_camids=np.zeros(0, int)), "distmat"),
    ],
)
def test_bad_input_raises(bad, name):
    args = dict(
        distmat=np.ones((2, 5), np.float32),
        q_pids=np.zeros(2, int),
        g_pids=np.zeros(5, int),
        q_camids=np.zeros(2, int),
        g_camids=np.ones(5, int),
    )
    args.update(bad)
    with pytest.raises(ValueError, match=name):
        ranking.rank_metrics(**args)


def expected_single_shot_cmc(dist_row, q_pid, q_cam, g_pids, g_camids, max_rank):
    """Exact expectation over all draws of one gallery image per identity (enumeration)."""
    keep = ~((g_pids == q_pid) & (g_camids == q_cam))
    items = np.flatnonzero(keep)
    groups = [items[g_pids[items] == p] for p in np.unique(g_pids[items])]
    cmc = np.zeros(max_rank)
    draws = list(itertools.product(*groups))
    for draw in draws:
        draw = np.array(draw)
        order = draw[np.argsort(dist_row[draw], kind="stable")]
        first = np.flatnonzero(g_pids[order] == q_pid)[0]
        cmc[first:] += 1
    return cmc / len(draws)


def test_cuhk03_single_shot_matches_exact_expectation():
    rng = np.random.default_rng(1)
    g_pids = np.array([1, 1, 1, 2, 2, 3, 3, 3, 4])
    g_camids = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0])
    dist = rng.random((2, 9)).astype(np.float32)
    q_pids, q_camids = np.array([1, 3]), np.array([0, 1])
    expected = np.mean(
        [expected_single_shot_cmc(dist[i], q_pids[i], q_camids[i], g_pids, g_camids, 4) for i in range(2)], axis=0
    )
    result = ranking.rank_metrics(
        dist, q_pids, g_pids, q_camids, g_camids, max_rank=4, cuhk03_single_shot=True, repeats=4000, seed=0
    )
    np.testing.assert_allclose(result["cmc"], expected, atol=0.02)
    full = ranking.rank_metrics(dist, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    assert result["mAP"] == pytest.approx(full["mAP"])  # AP uses the whole gallery in both protocols


def test_cuhk03_single_shot_with_one_image_per_identity_equals_market():
    rng = np.random.default_rng(2)
    dist = rng.random((5, 6)).astype(np.float32)
    labels = (np.arange(5), np.arange(6), np.zeros(5, int), np.ones(6, int))
    a = ranking.rank_metrics(dist, *labels, max_rank=6, cuhk03_single_shot=True, repeats=3)
    b = ranking.rank_metrics(dist, *labels, max_rank=6)
    np.testing.assert_allclose(a["cmc"], b["cmc"])


def test_separation_hand_computed_under_the_protocol_filter():
    dist = np.array([[1.0, 2.0, 4.0, 9.0], [3.0, 5.0, 1.0, 7.0]])
    q_pids, g_pids = np.array([1, 2]), np.array([1, 1, 2, 3])
    q_cams, g_cams = np.array([0, 0]), np.array([0, 1, 1, 1])  # gallery 0 is query 0's own camera: removed
    got = ranking.separation(dist, q_pids, g_pids, q_cams, g_cams)
    assert got["pos"] == pytest.approx((2.0 + 1.0) / 2)
    negatives = np.array([4.0, 9.0, 3.0, 5.0, 7.0])
    assert got["neg"] == pytest.approx(negatives.mean()) and got["neg_std"] == pytest.approx(negatives.std())
    assert got["ratio"] == pytest.approx(1.5 / negatives.mean())
    with pytest.raises(ValueError, match="true match"):
        ranking.separation(dist[:, 2:], q_pids, g_pids[2:] + 10, q_cams, g_cams[2:])
    blocks = ranking.Separation(q_pids, g_pids, q_cams, g_cams)  # fed one query at a time, in reverse
    for q in (1, 0):
        blocks.add(slice(q, q + 1), dist[q : q + 1])
    assert blocks.result() == pytest.approx(got)


@pytest.mark.parametrize("ties", [False, True])
def test_device_ranking_equals_host(ties):
    """The jitted device path: ties by gallery index, -0.0 as 0.0, same-id same-camera removals, distractors and
    queries without a true match; blocks sorted in padded sub-blocks (of at most 7, 16 and 4 rows), inputs on the
    device and, gathered into calls of 10 rows, on the host."""
    rng = np.random.default_rng(4)
    dist, q_pids, g_pids, q_camids, g_camids = random_problem(rng, 60, 300, 25, ties=ties)
    g_pids[:30] = 0  # distractors
    q_pids[:3] = 99  # identities absent from the gallery: skipped
    g_pids[-2:], g_camids[-2:] = 98, q_camids[3]
    q_pids[3] = 98  # only same-camera images of its identity: skipped
    dist[5, :40] = np.where(rng.random(40) < 0.5, -0.0, 0.0)
    labels = (q_pids, g_pids, q_camids, g_camids)
    host = ranking.rank_metrics(dist, *labels, max_rank=50)
    with jax.transfer_guard("disallow"):
        device = ranking.rank_metrics(jax.device_put(dist), *labels, max_rank=50, block_size=7, on_device=True)
        rankers = [ranking.Ranker(*labels, max_rank=50, on_device=on, block_rows=16) for on in (True, False)]
        # numpy blocks on the device path: gathered and ranked 10 rows a call, across block boundaries.
        rankers.append(ranking.Ranker(*labels, max_rank=50, on_device=True, block_rows=4, call_rows=10))
        for start in range(0, 60, 25):  # blocks not multiples of the sub-block
            rows, block = slice(start, min(start + 25, 60)), dist[start : start + 25]
            rankers[0].add(rows, jax.device_put(block))
            rankers[1].add(rows, block)
            rankers[2].add(rows, block)
    results = [device] + [r.result() for r in rankers]
    assert host["num_valid_queries"] == 56 and all(r["num_valid_queries"] == 56 for r in results)
    for got in results:
        np.testing.assert_allclose(got["cmc"], host["cmc"], atol=1e-6)
        assert got["mAP"] == pytest.approx(host["mAP"], abs=1e-6)
        assert got["mINP"] == pytest.approx(host["mINP"], abs=1e-6)
    ref_cmc, ref_map, ref_inp = reference_market_loop(dist, *labels, max_rank=50)
    assert device["mAP"] == pytest.approx(ref_map, abs=1e-6) and device["mINP"] == pytest.approx(ref_inp, abs=1e-6)


def test_rank_on_setting():
    rng = np.random.default_rng(5)
    _, *labels = random_problem(rng, 13, 40, 5)
    assert ranking.ranks_on_device("device") and not ranking.ranks_on_device("host")
    assert ranking.ranks_on_device("auto") == (jax.default_backend() != "cpu")
    with pytest.raises(ValueError, match="eval.rank_on"):
        ranking.ranks_on_device(True)
    with pytest.raises(ValueError, match="cuhk03_single_shot"):
        ranking.Ranker(*labels, on_device=True, cuhk03_single_shot=True)
