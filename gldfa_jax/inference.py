"""Test-time feature extraction and evaluation (paper §3.2 inference, §4.1 re-ranking; issue 3 item 7).

Results are {mode: {"mAP", "rank1", "rank5", "rank10"}} in percent, for each distance mode of `config.eval.modes`
that the model's features support, and the same modes with "+rerank" when `config.eval.rerank`.
"""
import functools
from typing import Optional

import jax
import numpy as np
from tqdm import tqdm

from data_pipelines.augment import normalize
from gldfa_jax import distances, evaluation, rerank
from gldfa_jax.model import test_features

# Which Features keys each distance mode reads.
MODE_KEYS = {"global": ("global",), "lsa": ("local",), "global+lsa": ("global", "local"), "final": ("final",)}
RANKS = (1, 5, 10)


@functools.partial(jax.jit, static_argnames=("model", "flip", "mean", "std"))
def _features(variables, images, model, flip: bool, mean: tuple, std: tuple) -> dict:
    """uint8 images [B, H, W, 3] -> Features dict of [B, ...] float32 (compiled once per model and shape)."""
    x = normalize(images, mean, std)
    feats = test_features(model.apply(variables, x, train=False))
    if flip:
        flipped = test_features(model.apply(variables, x[:, :, ::-1], train=False))
        feats = {k: (v + flipped[k]) / 2.0 for k, v in feats.items()}
    return feats


def extract_features(model, variables, images: np.ndarray, data_config, batch_size: int = 128,
                     flip: Optional[bool] = None, desc: str = "features") -> dict:
    """uint8 images [N, H, W, 3] -> Features {"global": [N, d], "local": [N, k, d], "final": [N, D]} (numpy).

    `flip` (default `data_config.test_flip`) averages each feature with that of the mirrored image. Every batch
    is padded to `batch_size` so the network compiles once per image size.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] uint8, got shape {images.shape}.")
    flip = bool(data_config.test_flip if flip is None else flip)
    variables = jax.device_put(variables)  # once, not with every batch (a no-op when already on the device)
    statics = dict(model=model, flip=flip, mean=tuple(data_config.mean), std=tuple(data_config.std))
    n = images.shape[0]
    chunks = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch = images[start:start + batch_size]
        real = batch.shape[0]
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real,) + batch.shape[1:], batch.dtype)])
        feats = jax.device_get(_features(variables, jax.device_put(batch), **statics))
        chunks.append({k: v[:real] for k, v in feats.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def lsa_window(config) -> Optional[int]:
    """The LSA window of a config for lsa_distance: 0 in the config means None, the paper's k // 2 (§3.2)."""
    return config.loss.window or None


def lsa_options(config) -> dict:
    """The LSA keyword arguments of the distances module from a config: the window, the stripe-distance
    normalisation and the weight of LSA in "global+lsa"."""
    return {"window": lsa_window(config), "normalize": bool(config.loss.normalize_stripes),
            "lsa_weight": float(config.eval.lsa_weight)}


def _scores(distmat: np.ndarray, query, gallery, max_rank: int) -> dict:
    cmc, mean_ap = evaluation.evaluate_rank(distmat, query.pids, gallery.pids, query.camids, gallery.camids,
                                            max_rank=max_rank)
    cmc = np.asarray(cmc)
    out = {"mAP": 100.0 * float(mean_ap)}
    for r in RANKS:
        out[f"rank{r}"] = 100.0 * float(cmc[min(r, len(cmc)) - 1])
    return out


def supported_modes(modes, features: dict) -> list:
    unknown = [m for m in modes if m not in MODE_KEYS]
    if unknown:
        raise ValueError(f"eval.modes contains {unknown}; choose from {list(MODE_KEYS)}.")
    return [m for m in modes if all(k in features for k in MODE_KEYS[m])]


def evaluate_features(q_feats: dict, g_feats: dict, query, gallery, config, modes=None,
                      with_rerank: Optional[bool] = None) -> dict:
    """Features of query and gallery (+ their .pids/.camids arrays) -> results dict in percent, for `modes`
    (default eval.modes) with re-ranking when `with_rerank` (default eval.rerank)."""
    e = config.eval
    max_rank = min(e.max_rank, len(gallery.pids))
    kwargs = dict(lsa_options(config), block_size=e.block_size)
    results, reranked = {}, {}
    for mode in supported_modes(e.modes if modes is None else modes, q_feats):
        qg = distances.pairwise_distance(q_feats, g_feats, mode, **kwargs)
        results[mode] = _scores(qg, query, gallery, max_rank)
        if e.rerank if with_rerank is None else with_rerank:
            params = dict(k1=e.k1, k2=e.k2, lambda_value=e.lambda_value)
            if len(query.pids) + len(gallery.pids) <= e.rerank_dense_max:
                qq = distances.pairwise_distance(q_feats, q_feats, mode, **kwargs)
                gg = distances.pairwise_distance(g_feats, g_feats, mode, **kwargs)
                rr = rerank.re_ranking(qg, qq, gg, **params)
            else:  # never holds a dense [N, N] matrix; same result (tests/test_rerank.py)
                rr = rerank.re_ranking_features(q_feats, g_feats, mode, progress=True, **lsa_options(config),
                                                **params)
            reranked[mode + "+rerank"] = _scores(np.asarray(rr), query, gallery, max_rank)
    return {**results, **reranked}


def split_features(model, variables, query, gallery, config) -> tuple:
    """Features of the query and gallery splits (objects with .images uint8 [N, H, W, 3]) -> (q_feats, g_feats)."""
    kw = dict(batch_size=config.eval.batch_size, flip=config.data.test_flip)
    q_feats = extract_features(model, variables, query.images, config.data, desc="query features", **kw)
    g_feats = extract_features(model, variables, gallery.images, config.data, desc="gallery features", **kw)
    return q_feats, g_feats


def format_table(results: dict) -> str:
    """Readable table of a results dict."""
    width = max([len("mode")] + [len(m) for m in results])
    lines = [f"{'mode':<{width}}  {'mAP':>6}  {'R-1':>6}  {'R-5':>6}  {'R-10':>6}"]
    for mode, r in results.items():
        lines.append(f"{mode:<{width}}  {r['mAP']:6.2f}  {r['rank1']:6.2f}  {r['rank5']:6.2f}  {r['rank10']:6.2f}")
    return "\n".join(lines)
