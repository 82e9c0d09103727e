"""GLDFA-Net losses (paper §3.3, eqs. 6-12). Pure functions of explicit inputs, float32.

Which tensor feeds which loss (see gldfa_jax/model.py):
  ID loss (eq. 6, label smoothing)       <- output.logits (classifier on the BN-necked final feature)
  triplet, global branch (eqs. 7-8)      <- Euclidean distance (eq. 1) of output.global_feat (before the neck)
  triplet, local branch                  <- LSA distance (eq. 5) of output.local_feat when loss.use_lsa, else hard
                                            stripe alignment (window 1: sum of per-stripe distances)
  centre loss (eq. 9), both branches     <- output.global_feat and output.local_feat flattened to [B, k·d]
  total (eq. 12) = id + w_t·(triplet_global + triplet_local) + λ·(center_global + center_local),
  w_t = loss.triplet_weight (0.3, §4.1) and λ = loss.center_weight (0.05).

Table 2 rows are config switches: model.branches, loss.triplet ("soft" | "hard" | "none"), loss.use_lsa,
loss.center_weight (0 for the rows trained with ID + triplet only). Readings the paper leaves open (measured on
real crops, docs/results.md): loss.triplet_distance ("separate" = eq. 10, "sum" = one triplet on global + LSA as
Fig. 2 draws it), loss.local_triplet (the local branch's own triplet kind), lsa.normalize (AlignedReID's
stripe-distance normalisation) and loss.center_branches.
"""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from gldfa_jax.lsa import LSAOptions, default_window, lsa_distance, stripe_distances

TRIPLETS = ("soft", "hard", "none")
TRIPLET_DISTANCES = ("separate", "sum")
CENTER_BRANCHES = ("global", "local")


@dataclasses.dataclass(frozen=True)
class LossOptions:
    """Eq. 12's settings (config.loss; the paper's values are gldfa_jax.config's), with config.lsa for the local
    triplet's LSA distance. Checked on construction, each error naming the config field."""

    label_smoothing: float = 0.1
    triplet: str = "soft"
    triplet_margin: float = 0.3
    triplet_weight: float = 0.3
    triplet_distance: str = "separate"
    local_triplet: str = ""  # "" = triplet
    use_lsa: bool = True
    center_weight: float = 0.05
    center_branches: tuple = CENTER_BRANCHES
    center_lr: float = 0.5
    lsa: LSAOptions = LSAOptions()

    def __post_init__(self):
        if self.triplet not in TRIPLETS:
            raise ValueError(f"loss.triplet={self.triplet!r} is not supported; set it to one of {list(TRIPLETS)}.")
        if self.local_triplet and self.local_triplet not in TRIPLETS:
            raise ValueError(
                f"loss.local_triplet={self.local_triplet!r} is not supported; set it to one of "
                f"{list(TRIPLETS)} or '' (same as loss.triplet)."
            )
        unknown = sorted(set(self.center_branches) - set(CENTER_BRANCHES))
        if unknown:
            raise ValueError(
                f"loss.center_branches={tuple(self.center_branches)} names {unknown}; use a subset of "
                f"{CENTER_BRANCHES}."
            )
        object.__setattr__(self, "center_branches", tuple(self.center_branches))
        if self.triplet_distance not in TRIPLET_DISTANCES:
            raise ValueError(
                f"loss.triplet_distance={self.triplet_distance!r} is not supported; set it to one of "
                f"{list(TRIPLET_DISTANCES)}."
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={self.label_smoothing} must lie in [0, 1) (the paper's: 0.1).")
        for name in ("triplet_margin", "triplet_weight", "center_weight", "center_lr"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name}={getattr(self, name)} must be >= 0.")

    @classmethod
    def from_config(cls, config) -> "LossOptions":
        """config.loss and config.lsa -> LossOptions."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"lsa"}
        return cls(**{k: config.loss[k] for k in fields}, lsa=LSAOptions.from_config(config.lsa))


def cross_entropy_label_smooth(logits: jax.Array, labels: jax.Array, epsilon: float) -> jax.Array:
    """Eq. 6 with label smoothing [57]: targets (1-ε)·onehot + ε/C. logits [B, C], labels [B] -> mean over B."""
    chex.assert_rank([logits, labels], [2, 1])
    chex.assert_equal_shape_prefix([logits, labels], 1)
    num_classes = logits.shape[1]
    targets = (1.0 - epsilon) * jax.nn.one_hot(labels, num_classes) + epsilon / num_classes
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=1))


def _pair_masks(labels: jax.Array):
    """Positives: same identity, anchor itself excluded. Negatives: other identities. Both [B, B]."""
    same = labels[:, None] == labels[None, :]
    return same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


def _mean_over_anchors(per_anchor: jax.Array, valid: jax.Array) -> jax.Array:
    # Anchors with no positive or no negative in the batch have no triplet; they are left out of the mean.
    return jnp.sum(jnp.where(valid, per_anchor, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def _masked_softmax(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Row-wise softmax of x over the entries where mask holds; zero elsewhere (and on empty rows)."""
    x = jnp.where(mask, x, -jnp.inf)
    row_max = jax.lax.stop_gradient(jnp.max(x, axis=1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    e = jnp.where(mask, jnp.exp(x - row_max), 0.0)
    return e / jnp.maximum(jnp.sum(e, axis=1, keepdims=True), 1e-30)


def _check_pairs(dist: jax.Array, labels: jax.Array) -> None:
    chex.assert_rank([dist, labels], [2, 1])
    chex.assert_shape(dist, (labels.shape[0], labels.shape[0]))


def soft_triplet_loss(dist: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
    """Soft-weighted hard-mining triplet of Ristani & Tomasi [6], as the paper's eqs. 7-8.

    Per anchor a: [m + Σ_p w_p d(a,p) − Σ_n w_n d(a,n)]_+ with w_p = softmax of d over the positives and
    w_n = softmax of −d over the negatives; mean over anchors. We follow eq. 7's hinge with margin m (the
    original weighted triplet uses softplus without a margin). Eq. 8 as printed has exp(d) in the
    negatives' denominator: a sign typo — the weights only sum to 1 (a softmax) with exp(−d) there.
    The weights are not detached (gradient flows through them, as in [6]). dist [B, B], labels [B].
    """
    _check_pairs(dist, labels)
    dist = dist.astype(jnp.float32)
    pos, neg = _pair_masks(labels)
    d_pos = jnp.sum(_masked_softmax(dist, pos) * dist, axis=1)
    d_neg = jnp.sum(_masked_softmax(-dist, neg) * dist, axis=1)
    return _mean_over_anchors(jax.nn.relu(margin + d_pos - d_neg), pos.any(1) & neg.any(1))


def hard_triplet_loss(dist: jax.Array, labels: jax.Array, margin: float) -> jax.Array:
    """Batch-hard triplet (Hermans et al.): [m + max_p d(a,p) − min_n d(a,n)]_+, mean over anchors."""
    _check_pairs(dist, labels)
    dist = dist.astype(jnp.float32)
    pos, neg = _pair_masks(labels)
    valid = pos.any(1) & neg.any(1)
    d_pos = jnp.where(valid, jnp.max(jnp.where(pos, dist, -jnp.inf), axis=1), 0.0)
    d_neg = jnp.where(valid, jnp.min(jnp.where(neg, dist, jnp.inf), axis=1), 0.0)
    return _mean_over_anchors(jax.nn.relu(margin + d_pos - d_neg), valid)


TRIPLET_LOSSES = {"soft": soft_triplet_loss, "hard": hard_triplet_loss}


def center_loss(feats: jax.Array, labels: jax.Array, centers: jax.Array) -> jax.Array:
    """Eq. 9: ½·||f_i − c_{y_i}||², averaged over the batch (strong-baseline convention; eq. 9 sums, which
    would tie λ to the batch size). feats [B, D], labels [B], centers [C, D]."""
    chex.assert_rank([feats, labels, centers], [2, 1, 2])
    chex.assert_equal_shape_prefix([feats, labels], 1)
    chex.assert_equal_shape_suffix([feats, centers], 1)
    diff = feats.astype(jnp.float32) - centers[labels]
    return 0.5 * jnp.mean(jnp.sum(diff * diff, axis=1))


def _center_features(output) -> dict:
    """Features constrained by the centre loss, by branch: global [B, d], local flattened [B, k·d]."""
    feats = {}
    if output.global_feat is not None:
        feats["global"] = output.global_feat
    if output.local_feat is not None:
        feats["local"] = output.local_feat.reshape(output.local_feat.shape[0], -1)
    return feats


def init_centers(num_classes: int, output) -> dict:
    """Class centres {"global": [C, d], "local": [C, k·d]} (present branches only), zeros, float32.

    `output` is a GLDFAOutput of arrays or of shapes (jax.eval_shape); only feature shapes are read.
    """
    dims = {"global": output.global_feat, "local": output.local_feat}
    return {
        name: jnp.zeros((num_classes, math.prod(feat.shape[1:])), jnp.float32)
        for name, feat in dims.items()
        if feat is not None
    }


def update_centers(centers: dict, grads: dict, center_lr: float, center_weight: float) -> dict:
    """One SGD step on the centres (strong-baseline recipe): c − lr·g/λ.

    `grads` is the gradient of `total_loss` w.r.t. the centres, which carries the factor λ; dividing it
    out makes the centre update independent of λ. λ = 0 means no centre loss: centres stay unchanged.
    """
    if center_weight == 0:
        return centers
    return jax.tree_util.tree_map(lambda c, g: c - center_lr * g / center_weight, centers, grads)


def total_loss(output, labels: jax.Array, centers: dict | None, options: LossOptions, num_stripes: int):
    """Eq. 12 -> (total, parts). parts: "id", "triplet_global", "triplet_local", "center", "total".

    parts hold the unweighted losses (a missing branch gives 0); total = id + w_t·(triplet_global +
    triplet_local) + λ·center. With loss.triplet_distance "sum" (both branches present) the single triplet on
    global + LSA distance is reported as triplet_global and triplet_local is 0.
    `centers` from init_centers (may be None when loss.center_weight is 0).
    """
    c = options
    if output.local_feat is not None and output.local_feat.shape[1] != num_stripes:
        raise ValueError(
            f"num_stripes={num_stripes} but local_feat has {output.local_feat.shape[1]} stripes; "
            "pass config.model.num_stripes."
        )
    zero = jnp.zeros((), jnp.float32)
    parts = {
        "id": cross_entropy_label_smooth(output.logits, labels, c.label_smoothing),
        "triplet_global": zero,
        "triplet_local": zero,
        "center": zero,
    }
    local_kind = c.local_triplet or c.triplet
    g_dist = l_dist = None
    if output.global_feat is not None and c.triplet != "none":
        # Eq. 1 as the one-stripe case of the stripe distance: differentiable and clamped at coincident points;
        # gallery-scale distances (distances.euclidean_distance) are tiled and centred instead. Two slices, not one
        # reused: that fixes the gradient's summation order, and with it every reported run (bit for bit).
        g_dist = stripe_distances(output.global_feat[:, None], output.global_feat[:, None])[:, :, 0, 0]
    if output.local_feat is not None and local_kind != "none":
        # Window 1 compares stripe i with stripe i only: the hard alignment of Table 2's "w/o LSA".
        window = (c.lsa.window or default_window(num_stripes)) if c.use_lsa else 1
        l_dist = lsa_distance(output.local_feat, output.local_feat, window, normalize=c.lsa.normalize)
    if c.triplet_distance == "sum" and g_dist is not None and l_dist is not None:
        # Fig. 2 / §1: one triplet on the global + LSA distance, so the pairs are mined on the sum.
        parts["triplet_global"] = TRIPLET_LOSSES[c.triplet](g_dist + l_dist, labels, c.triplet_margin)
    else:
        if g_dist is not None:
            parts["triplet_global"] = TRIPLET_LOSSES[c.triplet](g_dist, labels, c.triplet_margin)
        if l_dist is not None:
            parts["triplet_local"] = TRIPLET_LOSSES[local_kind](l_dist, labels, c.triplet_margin)
    if c.center_weight:
        if centers is None:
            raise ValueError("centers=None but loss.center_weight > 0; pass init_centers(num_classes, output).")
        for name, feats in _center_features(output).items():
            if name not in c.center_branches:
                continue
            if name not in centers:
                raise ValueError(
                    f"centers has no {name!r} entry (keys {sorted(centers)}); "
                    "build them with init_centers(num_classes, output) for this model."
                )
            parts["center"] = parts["center"] + center_loss(feats, labels, centers[name])
    parts["total"] = (
        parts["id"]
        + c.triplet_weight * (parts["triplet_global"] + parts["triplet_local"])
        + c.center_weight * parts["center"]
    )
    return parts["total"], parts
