"""Losses (§3.3) against hand-computed values and naive loops written from the definitions."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax.distances import euclidean_distance
from gldfa_jax.losses import (
    LossOptions,
    center_loss,
    cross_entropy_label_smooth,
    hard_triplet_loss,
    init_centers,
    soft_triplet_loss,
    total_loss,
    update_centers,
)
from gldfa_jax.lsa import LSAOptions, lsa_distance, stripe_distances
from gldfa_jax.model import GLDFAOutput

RNG = np.random.default_rng(0)


def naive_triplet(dist, labels, margin, soft):
    losses = []
    for a in range(len(labels)):
        pos = [p for p in range(len(labels)) if labels[p] == labels[a] and p != a]
        neg = [n for n in range(len(labels)) if labels[n] != labels[a]]
        if not pos or not neg:
            continue
        if soft:
            wp = np.exp([dist[a, p] for p in pos])
            wp /= wp.sum()
            wn = np.exp([-dist[a, n] for n in neg])
            wn /= wn.sum()
            dp = sum(w * dist[a, p] for w, p in zip(wp, pos))
            dn = sum(w * dist[a, n] for w, n in zip(wn, neg))
        else:
            dp, dn = max(dist[a, p] for p in pos), min(dist[a, n] for n in neg)
        losses.append(max(0.0, margin + dp - dn))
    return np.mean(losses)


def test_label_smoothed_cross_entropy():
    # Uniform logits: every target distribution gives log C.
    assert np.isclose(cross_entropy_label_smooth(jnp.zeros((3, 4)), jnp.array([0, 1, 3]), 0.1), np.log(4))
    # ε = 0 is plain cross-entropy: -log softmax([2, 0])[0] = log(1 + e^-2).
    assert np.isclose(cross_entropy_label_smooth(jnp.array([[2.0, 0.0]]), jnp.array([0]), 0.0), np.log1p(np.exp(-2.0)))
    logits, labels, eps = RNG.normal(size=(5, 7)), np.array([0, 6, 2, 2, 4]), 0.1
    expected = 0.0
    for row, y in zip(logits, labels):
        logp = row - np.log(np.sum(np.exp(row)))
        expected += -sum(((1 - eps) * (c == y) + eps / 7) * logp[c] for c in range(7)) / 5
    assert np.isclose(cross_entropy_label_smooth(jnp.asarray(logits), jnp.asarray(labels), eps), expected, rtol=1e-5)


def test_soft_triplet_hand_computed():
    # One positive per anchor at distance 1, two negatives at distance 2 (weights ½ each).
    dist = jnp.array([[0, 1, 2, 2], [1, 0, 2, 2], [2, 2, 0, 1], [2, 2, 1, 0]], jnp.float32)
    labels = jnp.array([0, 0, 1, 1])
    assert np.isclose(soft_triplet_loss(dist, labels, 0.3), 0.0)
    assert np.isclose(soft_triplet_loss(dist, labels, 1.5), 0.5)
    # Negatives at 1 and 3: w_n ∝ (e^-1, e^-3), so d_n = (e^-1 + 3e^-3) / (e^-1 + e^-3).
    dist = jnp.array([[0, 2, 1, 3], [2, 0, 3, 1], [1, 3, 0, 2], [3, 1, 2, 0]], jnp.float32)
    d_n = (np.exp(-1) + 3 * np.exp(-3)) / (np.exp(-1) + np.exp(-3))
    assert np.isclose(soft_triplet_loss(dist, labels, 0.3), 0.3 + 2 - d_n, rtol=1e-6)
    # Batch hard takes the closest negative instead: 0.3 + 2 - 1.
    assert np.isclose(hard_triplet_loss(dist, labels, 0.3), 1.3)


@pytest.mark.parametrize("soft", [True, False])
def test_triplets_match_naive_loop(soft):
    feats = RNG.normal(size=(12, 5)).astype(np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 4])  # identities 3 and 4 have no positive
    dist = np.sqrt(((feats[:, None] - feats[None]) ** 2).sum(-1))
    loss = (soft_triplet_loss if soft else hard_triplet_loss)(jnp.asarray(dist), jnp.asarray(labels), 1.0)
    assert np.isclose(loss, naive_triplet(dist, labels, 1.0, soft), rtol=1e-5)
    assert loss > 0


@pytest.mark.parametrize("loss_fn", [soft_triplet_loss, hard_triplet_loss])
def test_triplet_gradients_finite_with_duplicates_and_single_identity(loss_fn):
    feats = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32).at[1].set(0.0).at[0].set(0.0)
    labels = jnp.array([0, 0, 1, 1, 2, 2])
    grads = jax.grad(lambda f: loss_fn(stripe_distances(f[:, None], f[:, None])[:, :, 0, 0], labels, 0.3))(feats)
    assert np.all(np.isfinite(grads))
    # A batch of one identity has no negatives: no valid anchor, loss 0, no NaN.
    assert loss_fn(euclidean_distance(feats, feats), jnp.zeros(6, jnp.int32), 0.3) == 0.0


def test_center_loss_and_update_hand_computed():
    feats, labels = jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([0, 2])
    centers = jnp.array([[0.0, 0.0], [5.0, 5.0], [1.0, 1.0]])
    # ½·mean(|(1,2)|², |(2,3)|²) = ½·(5 + 13)/2
    assert np.isclose(center_loss(feats, labels, centers), 4.5)
    lam, lr = 0.05, 0.5
    grads = jax.grad(lambda c: lam * center_loss(feats, labels, c["global"]))({"global": centers})
    new = update_centers({"global": centers}, grads, lr, lam)["global"]
    # d/dc_y of λ·½·mean|f - c_y|² = -λ (f - c_y) / B; the update divides λ out: c + lr (f - c) / B.
    expected = np.array([[0.25, 0.5], [5.0, 5.0], [1.5, 1.75]])
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    assert update_centers({"global": centers}, grads, lr, 0.0)["global"] is centers


def fake_output(branches="global_local", batch=8, k=4, d=6, classes=4):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    g = jax.random.normal(keys[0], (batch, d)) if "global" in branches else None
    loc = jax.nn.relu(jax.random.normal(keys[1], (batch, k, d))) if "local" in branches else None
    final = jnp.concatenate([x.reshape(batch, -1) for x in (loc, g) if x is not None], axis=-1)
    return GLDFAOutput(
        global_feat=g, local_feat=loc, final_feat=final, logits=jax.random.normal(keys[2], (batch, classes))
    )


def test_total_loss_is_eq12_with_paper_weights():
    out, labels, cfg = fake_output(), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    centers = jax.tree_util.tree_map(lambda c: c + 0.5, init_centers(4, out))
    total, parts = jax.jit(lambda o, c: total_loss(o, labels, c, cfg, 4))(out, centers)
    window = 2  # lsa.window 0 (None) -> k // 2
    expected = {
        "id": cross_entropy_label_smooth(out.logits, labels, 0.1),
        "triplet_global": soft_triplet_loss(euclidean_distance(out.global_feat, out.global_feat), labels, 0.3),
        "triplet_local": soft_triplet_loss(lsa_distance(out.local_feat, out.local_feat, window), labels, 0.3),
        "center": (
            center_loss(out.global_feat, labels, centers["global"])
            + center_loss(out.local_feat.reshape(8, -1), labels, centers["local"])
        ),
    }
    for name, value in expected.items():
        assert np.isclose(parts[name], value, rtol=1e-5), name
    assert all(float(parts[name]) > 0 for name in expected)
    manual = expected["id"] + 0.3 * (expected["triplet_global"] + expected["triplet_local"]) + 0.05 * expected["center"]
    assert np.isclose(total, manual, rtol=1e-5) and np.isclose(parts["total"], total)


def test_hard_alignment_is_sum_of_stripe_distances():
    """use_lsa=False (Table 2 "w/o LSA") compares stripe i with stripe i only."""
    out, labels, cfg = fake_output(), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    cfg = dataclasses.replace(cfg, use_lsa=False)
    loc = np.asarray(out.local_feat)
    naive = np.array([[sum(np.linalg.norm(a[i] - b[i]) for i in range(4)) for b in loc] for a in loc])
    off_diagonal = ~np.eye(8, dtype=bool)  # self-distances are never used by the triplets (clamped sqrt)
    np.testing.assert_allclose(
        np.asarray(lsa_distance(out.local_feat, out.local_feat, 1))[off_diagonal], naive[off_diagonal], rtol=1e-5
    )
    _, parts = total_loss(out, labels, init_centers(4, out), cfg, 4)
    assert np.isclose(parts["triplet_local"], naive_triplet(naive, np.asarray(labels), 0.3, True), rtol=1e-5)


@pytest.mark.parametrize(
    "branches,triplet,use_lsa",
    itertools.product(["global", "local", "global_local"], ["soft", "hard", "none"], [True, False]),
)
def test_table2_switches(branches, triplet, use_lsa):
    out, labels, cfg = fake_output(branches), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    cfg = dataclasses.replace(cfg, triplet=triplet, use_lsa=use_lsa)
    centers = init_centers(4, out)
    assert set(centers) == {"global", "local"} & set(branches.split("_"))
    total, parts = total_loss(out, labels, centers, cfg, 4)
    assert set(parts) == {"id", "triplet_global", "triplet_local", "center", "total"}
    assert (parts["triplet_global"] > 0) == (triplet != "none" and "global" in branches)
    assert (parts["triplet_local"] > 0) == (triplet != "none" and "local" in branches)
    assert np.isfinite(total)


def test_total_loss_without_center_loss_and_bad_config():
    out, labels, cfg = fake_output(), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    cfg = dataclasses.replace(cfg, center_weight=0.0)
    total, parts = total_loss(out, labels, None, cfg, 4)
    assert parts["center"] == 0.0
    assert np.isclose(total, parts["id"] + 0.3 * (parts["triplet_global"] + parts["triplet_local"]))
    with pytest.raises(ValueError, match="loss.triplet='triplehard'"):
        dataclasses.replace(cfg, triplet="triplehard")
    with pytest.raises(ValueError, match="num_stripes=8"):
        total_loss(out, labels, None, cfg, 8)
    cfg = dataclasses.replace(cfg, center_weight=0.05)
    with pytest.raises(ValueError, match="centers has no 'local'"):
        total_loss(out, labels, {"global": jnp.zeros((4, 6))}, cfg, 4)


def test_init_centers_from_abstract_output():
    out = jax.eval_shape(lambda: fake_output(k=8, d=256, classes=751))
    centers = init_centers(751, out)
    assert centers["global"].shape == (751, 256) and centers["local"].shape == (751, 8 * 256)
    assert centers["global"].dtype == jnp.float32


def test_local_triplet_kind_and_center_branches_are_separate_switches():
    out, labels, cfg = fake_output(), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    centers = jax.tree_util.tree_map(lambda c: c + 0.5, init_centers(4, out))
    cfg = dataclasses.replace(cfg, local_triplet="hard", center_branches=("global",), lsa=LSAOptions(normalize=True))
    _, parts = total_loss(out, labels, centers, cfg, 4)
    g_dist = euclidean_distance(out.global_feat, out.global_feat)
    l_dist = lsa_distance(out.local_feat, out.local_feat, 2, normalize=True)
    assert np.isclose(parts["triplet_global"], soft_triplet_loss(g_dist, labels, 0.3), rtol=1e-5)
    assert np.isclose(parts["triplet_local"], hard_triplet_loss(l_dist, labels, 0.3), rtol=1e-5)
    assert np.isclose(parts["center"], center_loss(out.global_feat, labels, centers["global"]), rtol=1e-6)
    cfg = dataclasses.replace(cfg, triplet="hard", local_triplet="")  # "" follows loss.triplet
    _, parts = total_loss(out, labels, centers, cfg, 4)
    assert np.isclose(parts["triplet_local"], hard_triplet_loss(l_dist, labels, 0.3), rtol=1e-5)
    cfg = dataclasses.replace(cfg, local_triplet="none")
    assert total_loss(out, labels, centers, cfg, 4)[1]["triplet_local"] == 0.0
    with pytest.raises(ValueError, match="loss.local_triplet='batchhard'"):
        dataclasses.replace(cfg, local_triplet="batchhard")
    with pytest.raises(ValueError, match="'stripes'"):
        dataclasses.replace(cfg, local_triplet="", center_branches=("global", "stripes"))


def test_one_triplet_on_the_sum_of_global_and_lsa_distances():
    """loss.triplet_distance "sum" (Fig. 2): pairs are mined on global + LSA, one term, weighted w_t once."""
    out, labels, cfg = fake_output(), jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), LossOptions()
    cfg = dataclasses.replace(cfg, triplet_distance="sum")
    total, parts = total_loss(out, labels, init_centers(4, out), cfg, 4)
    summed = euclidean_distance(out.global_feat, out.global_feat) + lsa_distance(out.local_feat, out.local_feat, 2)
    assert np.isclose(parts["triplet_global"], soft_triplet_loss(summed, labels, 0.3), rtol=1e-5)
    assert parts["triplet_local"] == 0.0
    assert np.isclose(total, parts["id"] + 0.3 * parts["triplet_global"] + 0.05 * parts["center"], rtol=1e-6)
    with pytest.raises(ValueError, match="loss.triplet_distance='joint'"):
        dataclasses.replace(cfg, triplet_distance="joint")


def test_loss_options_default_to_the_config_and_read_its_lsa_section():
    from gldfa_jax.config import get_config

    c = get_config()
    assert LossOptions.from_config(c) == LossOptions()
    c.lsa.window, c.lsa.normalize = 3, True
    assert LossOptions.from_config(c).lsa == LSAOptions(window=3, normalize=True)
    with pytest.raises(ValueError, match="loss.label_smoothing=1.5"):
        LossOptions(label_smoothing=1.5)
