"""Test-time feature extraction and evaluation (paper §3.2 inference, §4.1 re-ranking).

Results are {mode: {"mAP", "rank1", "rank5", "rank10"}} in percent (+ "mINP" when in `config.eval.metrics`), for each
distance mode of `config.eval.modes` that the model's features support, and the same modes with "+rerank" when
`config.eval.rerank`, under the ranking protocol `config.eval.protocol` (`rank_options`).
`evaluate` computes each mode's [Q, G] distances once and takes from them all it needs (scores, re-ranking,
what the reports draw) before the next mode's, so one such matrix (3.6 GiB at MSMT17 scale) exists at a time.
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from data_pipelines.augment import normalize
from gldfa_jax import distances, evaluation, rerank
from gldfa_jax.checks import check_int
from gldfa_jax.model import test_features

RANKS = (1, 5, 10)
# eval.metrics choices: "cmc" gives the rank{RANKS} scores. It and "mAP" are always reported (runs pick their best
# checkpoint by mAP, and the reports and ablation tables read rank-1), so "mINP" is the one to add or leave out.
METRICS = ("cmc", "mAP", "mINP")
_REQUIRED_METRICS = ("cmc", "mAP")
# The table's first line under a protocol other than Market-1501.
_PROTOCOL_TITLES = {
    "cuhk03_single_shot": "CUHK03 single-shot protocol: R-k averaged over draws of one gallery image "
    "per identity; mAP/mINP on the full gallery"
}


def image_features(variables, images, model, flip: bool, mean: tuple, std: tuple) -> dict:
    """uint8 images [B, H, W, 3] -> Features dict of [B, ...] float32: what evaluation compares (and what
    gldfa_jax.export traces)."""
    x = normalize(images, mean, std)
    feats = test_features(model.apply(variables, x, train=False))
    if flip:
        flipped = test_features(model.apply(variables, x[:, :, ::-1], train=False))
        feats = {k: (v + flipped[k]) / 2.0 for k, v in feats.items()}
    return feats


# Compiled once per model and shape.
_features = jax.jit(image_features, static_argnames=("model", "flip", "mean", "std"))


def extract_features(
    model,
    variables,
    images: np.ndarray,
    data_config,
    batch_size: int = 128,
    flip: bool | None = None,
    desc: str = "features",
) -> dict:
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
        batch = images[start : start + batch_size]
        real = batch.shape[0]
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real,) + batch.shape[1:], batch.dtype)])
        feats = jax.device_get(_features(variables, jax.device_put(batch), **statics))
        chunks.append({k: v[:real] for k, v in feats.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def lsa_window(config) -> int | None:
    """The LSA window of a config for lsa_distance: 0 in the config means None, the paper's k // 2 (§3.2)."""
    return config.loss.window or None


def lsa_options(config) -> dict:
    """The LSA keyword arguments of the distances module from a config: the window, the stripe-distance
    normalisation and the weight of LSA in "global+lsa"."""
    return {
        "window": lsa_window(config),
        "normalize": bool(config.loss.normalize_stripes),
        "lsa_weight": float(config.eval.lsa_weight),
    }


def _check_protocol(protocol) -> None:
    if protocol not in evaluation.PROTOCOLS:
        raise ValueError(f"eval.protocol must be one of {list(evaluation.PROTOCOLS)}, got {protocol!r}.")


def rank_options(eval_config) -> dict:
    """The evaluation.Ranker keyword arguments (on_device, cuhk03_single_shot, repeats, seed) of config.eval,
    after checking eval.metrics, eval.protocol, eval.single_shot_* and eval.rank_on; a ValueError names the field.

    "cuhk03_single_shot" ranks on the host (its seeded draws are numpy): eval.rank_on "auto" goes there, while an
    explicit "device" is a contradiction and an error.
    """
    e = eval_config
    metrics = e.metrics
    if (
        not isinstance(metrics, (tuple, list))
        or any(m not in METRICS for m in metrics)
        or len(set(metrics)) != len(metrics)
    ):
        raise ValueError(f"eval.metrics must be a tuple of distinct names from {METRICS}, got {metrics!r}.")
    missing = [m for m in _REQUIRED_METRICS if m not in metrics]
    if missing:
        raise ValueError(
            f"eval.metrics={tuple(metrics)!r} lacks {missing}: CMC and mAP are always reported (the best "
            f"checkpoint is picked by mAP, reports read rank-1); use e.g. {METRICS}."
        )
    _check_protocol(e.protocol)
    check_int("eval.single_shot_repeats", e.single_shot_repeats, 1)
    check_int("eval.single_shot_seed", e.single_shot_seed, 0)
    single_shot = e.protocol == "cuhk03_single_shot"
    on_device = evaluation.ranks_on_device(e.rank_on)
    if single_shot and e.rank_on == "device":
        raise ValueError(
            "eval.rank_on='device' cannot rank eval.protocol='cuhk03_single_shot': its seeded gallery "
            "draws run on the host. Set eval.rank_on to 'auto' or 'host'."
        )
    return {
        "on_device": on_device and not single_shot,
        "cuhk03_single_shot": single_shot,
        "repeats": int(e.single_shot_repeats),
        "seed": int(e.single_shot_seed),
    }


def _percent(metrics: dict, names) -> dict:
    """evaluation.rank_metrics fractions -> {"mAP", ("mINP" when in `names`,) "rank1", "rank5", "rank10"} in
    percent."""
    cmc = np.asarray(metrics["cmc"])
    out = {"mAP": 100.0 * float(metrics["mAP"])}
    if "mINP" in names:
        out["mINP"] = 100.0 * float(metrics["mINP"])
    for r in RANKS:
        out[f"rank{r}"] = 100.0 * float(cmc[min(r, len(cmc)) - 1])
    return out


def supported_modes(modes, features: dict, name: str = "eval.modes") -> list:
    unknown = [m for m in modes if m not in distances.MODES]
    if unknown:
        raise ValueError(f"{name} contains {unknown}; choose from {list(distances.MODES)}.")
    return [m for m in modes if all(k in features for k in distances.required_keys(m))]


@dataclasses.dataclass
class Evaluation:
    """What one evaluation computed: its results and what the reports draw (reports.write_eval_reports)."""

    results: dict  # {mode: {"mAP", ("mINP",) "rank1", "rank5", "rank10"}} in percent; the "+rerank" modes last
    cmc: dict  # {mode: CMC [max_rank] fractions}, plain modes
    separation: dict = dataclasses.field(default_factory=dict)  # {mode: evaluation.separation} (report_queries)
    rows: dict = dataclasses.field(default_factory=dict)  # {query index: distances [G]} in rows_mode (report_queries)
    rows_mode: str | None = None  # eval.best_mode when among the evaluated modes, else the first one


def evaluate(
    q_feats: dict,
    g_feats: dict,
    query,
    gallery,
    config,
    modes=None,
    with_rerank: bool | None = None,
    report_queries: Sequence[int] | None = None,
) -> Evaluation:
    """Features of query and gallery (+ their .pids/.camids arrays) -> Evaluation, for `modes` (default
    eval.modes) with re-ranking (of eval.rerank_modes) when `with_rerank` (default eval.rerank).

    Every mode's [Q, G] distances come from one pass over query blocks ("global+lsa" reusing the "global" and
    "lsa" blocks) and are ranked as the blocks come (on the device where `rank_options` says). A [Q, G] matrix is
    assembled on the host only for re-ranking. `report_queries` (query indices, e.g. reports.sample_queries)
    keeps those queries' distance rows and every mode's evaluation.Separation, both taken from the blocks.
    """
    e = config.eval
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    rank_kw = dict(max_rank=min(e.max_rank, len(gallery.pids)), **rank_options(e))
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
    # The first re-ranked mode's [Q, G] matrix is kept from this pass; each other one is recomputed when its turn
    # comes, so one such matrix exists at a time.
    dists = {mode: np.empty((len(query.pids), len(gallery.pids)), np.float32) for mode in rerank_list[:1]}
    blocks = (
        distances.iter_mode_blocks(
            q_feats,
            g_feats,
            modes,
            block_size=e.block_size,
            progress=True,
            to_host=not rank_kw["on_device"],
            **lsa_options(config),
        )
        if modes
        else ()
    )
    for rows, by_mode in blocks:
        for mode, block in by_mode.items():
            rankers[mode].add(rows, block)
            if mode not in dists and not report:
                continue
            host = jax.device_get(block)[: rows.stop - rows.start]  # a device block keeps its padding rows
            if mode in dists:
                dists[mode][rows] = host
            if report:
                separations[mode].add(rows, host)
                if mode == out.rows_mode:
                    out.rows.update(
                        {int(q): host[q - rows.start].copy() for q in report_queries if rows.start <= q < rows.stop}
                    )
    for mode in modes:
        metrics = rankers[mode].result()
        out.results[mode], out.cmc[mode] = _percent(metrics, e.metrics), metrics["cmc"]
        if report:
            out.separation[mode] = separations[mode].result()
    # Re-ranked blocks are ranked in pieces of the pass's block shape: the device ranking compiled for it serves.
    rerank_kw = dict(rank_kw, call_rows=distances.rows_per_block(e.block_size, len(modes), len(query.pids)))
    for mode in rerank_list:
        dist = dists.pop(mode, None)
        if dist is None:
            dist = distances.pairwise_distance(
                q_feats, g_feats, mode, block_size=e.block_size, progress=True, **lsa_options(config)
            )
        out.results[mode + "+rerank"] = _reranked(dist, q_feats, g_feats, mode, labels, rerank_kw, config)
        del dist  # before the next mode's matrix exists
    return out


def _reranked(dist: np.ndarray, q_feats: dict, g_feats: dict, mode: str, labels: tuple, rank_kw: dict, config) -> dict:
    """Scores of mode's re-ranking from its q×g distances dist [Q, G], block by block (`rerank.re_ranking_blocks`:
    the neighbour lists on the device, never an [N, N] matrix nor a re-ranked [Q, G] one; the original algorithm's
    result up to float rounding, tests/test_rerank.py)."""
    e = config.eval
    ranker = evaluation.Ranker(*labels, **rank_kw)
    for rows, block in rerank.re_ranking_blocks(
        q_feats, g_feats, mode, dist, e.k1, e.k2, e.lambda_value, progress=True, **lsa_options(config)
    ):
        ranker.add(rows, block)
    return _percent(ranker.result(), e.metrics)


def evaluate_features(
    q_feats: dict, g_feats: dict, query, gallery, config, modes=None, with_rerank: bool | None = None
) -> dict:
    """The results dict in percent of `evaluate` (same arguments)."""
    return evaluate(q_feats, g_feats, query, gallery, config, modes, with_rerank).results


def split_features(model, variables, query, gallery, config) -> tuple:
    """Features of the query and gallery splits (objects with .images uint8 [N, H, W, 3]) -> (q_feats, g_feats)."""
    kw = dict(batch_size=config.eval.batch_size, flip=config.data.test_flip)
    q_feats = extract_features(model, variables, query.images, config.data, desc="query features", **kw)
    g_feats = extract_features(model, variables, gallery.images, config.data, desc="gallery features", **kw)
    return q_feats, g_feats


def format_table(results: dict, protocol: str = "market1501") -> str:
    """Readable table of a results dict: an mINP column when its scores have one, and a first line naming the
    protocol (eval.protocol) when it is not Market-1501."""
    _check_protocol(protocol)
    first = next(iter(results.values()), {})
    columns = [("mAP", "mAP")] + [("mINP", "mINP")] * ("mINP" in first) + [(f"rank{r}", f"R-{r}") for r in RANKS]
    width = max([len("mode")] + [len(m) for m in results])
    lines = [_PROTOCOL_TITLES[protocol]] if protocol in _PROTOCOL_TITLES else []
    lines.append(f"{'mode':<{width}}" + "".join(f"  {title:>6}" for _, title in columns))
    for mode, r in results.items():
        lines.append(f"{mode:<{width}}" + "".join(f"  {r[key]:6.2f}" for key, _ in columns))
    return "\n".join(lines)
