"""Test-time feature extraction and evaluation (paper §3.2 inference, §4.1 re-ranking; issue 3 item 7).

Results are {mode: {"mAP", "rank1", "rank5", "rank10"}} in percent, for each distance mode of `config.eval.modes`
that the model's features support, and the same modes with "+rerank" when `config.eval.rerank`.
`evaluate` computes each mode's [Q, G] distances once and takes from them all it needs (scores, re-ranking,
what the reports draw) before the next mode's, so one such matrix (3.6 GiB at MSMT17 scale) exists at a time.
"""
import dataclasses
import functools
from typing import Optional, Sequence

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


def _percent(metrics: dict) -> dict:
    """evaluation.rank_metrics fractions -> {"mAP", "rank1", "rank5", "rank10"} in percent."""
    cmc = np.asarray(metrics["cmc"])
    out = {"mAP": 100.0 * float(metrics["mAP"])}
    for r in RANKS:
        out[f"rank{r}"] = 100.0 * float(cmc[min(r, len(cmc)) - 1])
    return out


def supported_modes(modes, features: dict, name: str = "eval.modes") -> list:
    unknown = [m for m in modes if m not in MODE_KEYS]
    if unknown:
        raise ValueError(f"{name} contains {unknown}; choose from {list(MODE_KEYS)}.")
    return [m for m in modes if all(k in features for k in MODE_KEYS[m])]


@dataclasses.dataclass
class Evaluation:
    """What one evaluation computed: its results and what the reports draw (reports.write_eval_reports)."""
    results: dict  # {mode: {"mAP", "rank1", "rank5", "rank10"}} in percent; the "+rerank" modes after the others
    cmc: dict      # {mode: CMC [max_rank] fractions}, plain modes
    separation: dict = dataclasses.field(default_factory=dict)  # {mode: evaluation.separation} (report_queries)
    rows: dict = dataclasses.field(default_factory=dict)  # {query index: distances [G]} in rows_mode (report_queries)
    rows_mode: Optional[str] = None  # eval.best_mode when among the evaluated modes, else the first one


def evaluate(q_feats: dict, g_feats: dict, query, gallery, config, modes=None, with_rerank: Optional[bool] = None,
             report_queries: Optional[Sequence[int]] = None) -> Evaluation:
    """Features of query and gallery (+ their .pids/.camids arrays) -> Evaluation, for `modes` (default
    eval.modes) with re-ranking (of eval.rerank_modes) when `with_rerank` (default eval.rerank).

    Every mode's [Q, G] distances come from one pass over query blocks ("global+lsa" reusing the "global" and
    "lsa" blocks) and are ranked as the blocks come (on the device where eval.rank_on says). A [Q, G] matrix is
    assembled on the host only for re-ranking. `report_queries` (query indices, e.g. reports.sample_queries)
    keeps those queries' distance rows and every mode's evaluation.Separation, both taken from the blocks.
    """
    e = config.eval
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    rank_kw = dict(max_rank=min(e.max_rank, len(gallery.pids)), on_device=evaluation.ranks_on_device(e.rank_on))
    modes = supported_modes(e.modes if modes is None else modes, q_feats)
    rerank_on = e.rerank if with_rerank is None else with_rerank
    rerank_modes = supported_modes(e.rerank_modes, q_feats, "eval.rerank_modes") if e.rerank_modes else modes
    report = report_queries is not None
    out = Evaluation({}, {})
    if report and modes:
        out.rows_mode = e.best_mode if e.best_mode in modes else modes[0]
    rankers = {mode: evaluation.Ranker(*labels, **rank_kw) for mode in modes}
    separations = {mode: evaluation.Separation(*labels) for mode in modes} if report else {}
    rerank_list = [mode for mode in modes if rerank_on and mode in rerank_modes]
    # The re-ranked modes' [Q, G] matrices are kept from this pass; past eval.rerank_dense_max (the lean path,
    # for memory) only the first one's, and each other one is recomputed when its turn comes.
    dense = len(query.pids) + len(gallery.pids) <= e.rerank_dense_max
    shape = (len(query.pids), len(gallery.pids))
    dists = {mode: np.empty(shape, np.float32) for mode in (rerank_list if dense else rerank_list[:1])}
    blocks = distances.iter_mode_blocks(q_feats, g_feats, modes, block_size=e.block_size, progress=True,
                                        to_host=not rank_kw["on_device"], **lsa_options(config)) if modes else ()
    for rows, by_mode in blocks:
        for mode, block in by_mode.items():
            rankers[mode].add(rows, block)
            if mode not in dists and not report:
                continue
            host = jax.device_get(block)
            if mode in dists:
                dists[mode][rows] = host
            if report:
                separations[mode].add(rows, host)
                if mode == out.rows_mode:
                    out.rows.update({int(q): host[q - rows.start].copy() for q in report_queries
                                     if rows.start <= q < rows.stop})
    for mode in modes:
        metrics = rankers[mode].result()
        out.results[mode], out.cmc[mode] = _percent(metrics), metrics["cmc"]
        if report:
            out.separation[mode] = separations[mode].result()
    for mode in rerank_list:
        dist = dists.pop(mode, None)
        if dist is None:
            dist = distances.pairwise_distance(q_feats, g_feats, mode, block_size=e.block_size, progress=True,
                                               **lsa_options(config))
        out.results[mode + "+rerank"] = _reranked(dist, q_feats, g_feats, mode, labels, rank_kw, config, dense)
        del dist  # before the next mode's matrix exists
    return out


def _reranked(dist: np.ndarray, q_feats: dict, g_feats: dict, mode: str, labels: tuple, rank_kw: dict,
              config, dense: bool) -> dict:
    """Scores of mode's re-ranking, from its q×g distances dist [Q, G]: the dense algorithm, or past
    eval.rerank_dense_max (`dense` False) the lean one."""
    e = config.eval
    params = dict(k1=e.k1, k2=e.k2, lambda_value=e.lambda_value)
    ranker = evaluation.Ranker(*labels, **rank_kw)
    if dense:
        kw = dict(lsa_options(config), block_size=e.block_size)
        qq = distances.pairwise_distance(q_feats, q_feats, mode, **kw)
        gg = distances.pairwise_distance(g_feats, g_feats, mode, **kw)
        ranker.add(slice(0, dist.shape[0]), rerank.re_ranking(dist, qq, gg, **params))
    else:  # never a dense [N, N] matrix nor a re-ranked [Q, G] one; the dense result up to float rounding
        # (tests/test_rerank.py)
        for rows, block in rerank.re_ranking_blocks(q_feats, g_feats, mode, dist, progress=True,
                                                    **lsa_options(config), **params):
            ranker.add(rows, block)
    return _percent(ranker.result())


def evaluate_features(q_feats: dict, g_feats: dict, query, gallery, config, modes=None,
                      with_rerank: Optional[bool] = None) -> dict:
    """The results dict in percent of `evaluate` (same arguments)."""
    return evaluate(q_feats, g_feats, query, gallery, config, modes, with_rerank).results


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
