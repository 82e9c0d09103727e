"""The evaluator: features in, metrics out (paper §3.2 inference distance, §4.1 re-ranking). Training, `--mode
eval`, the reports and the benchmarks all evaluate through `evaluate`.

    options = evaluation.EvalOptions.from_config(config)        # config.eval and config.lsa, checked once
    evaluated = evaluation.evaluate(q_feats, g_feats, query, gallery, options)
    evaluated.results  # {mode: {"mAP", ("mINP",) "rank1", "rank5", "rank10"}} in percent

Modes are those of `options.modes` that the features support, and the `options.rerank_modes` among them again
with "+rerank" when `options.rerank`, under the ranking protocol `options.protocol` (gldfa_jax.ranking ranks).
`evaluate` computes each mode's [Q, G] distances once and takes from them all it needs (scores, re-ranking,
what the reports draw) before the next mode's, so one such matrix (3.6 GiB at MSMT17 scale) exists at a time.
Features come from gldfa_jax.features.
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from gldfa_jax import distances, ranking, rerank
from gldfa_jax.checks import check_int
from gldfa_jax.lsa import LSAOptions

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


def _names(field: str, value, choices: Sequence[str]) -> tuple:
    """`value` as a tuple of distinct names from `choices`; a ValueError naming `field` otherwise."""
    if not isinstance(value, (tuple, list)) or any(v not in choices for v in value) or len(set(value)) != len(value):
        raise ValueError(f"{field} must be a tuple of distinct names from {tuple(choices)}, got {value!r}.")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """What an evaluation computes and how it ranks (config.eval, with config.lsa for the LSA modes). The
    defaults are gldfa_jax.config's; every field is checked on construction, with the config field's name."""

    modes: tuple = distances.MODES  # §3.2: inference uses global + LSA; the others are reported beside it
    rerank: bool = True  # §4.1: also k-reciprocal re-ranking [58]
    rerank_modes: tuple = ("global+lsa",)  # the modes re-ranked; () = every mode
    k1: int = 20  # Zhong et al. CVPR 2017 defaults
    k2: int = 6
    lambda_value: float = 0.3
    best_mode: str = "global+lsa"  # the mode whose distance rows the reports draw
    block_size: int = 2048  # query rows × modes per distance block
    max_rank: int = 50
    metrics: tuple = ("cmc", "mAP")
    protocol: str = "market1501"  # ranking.PROTOCOLS
    single_shot_repeats: int = 10
    single_shot_seed: int = 0
    rank_on: str = "auto"  # "device", "host" or "auto"
    lsa: LSAOptions = LSAOptions()

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("modes", _names("eval.modes", self.modes, distances.MODES))
        set_("rerank_modes", _names("eval.rerank_modes", self.rerank_modes, distances.MODES))
        set_("metrics", _names("eval.metrics", self.metrics, METRICS))
        missing = [m for m in _REQUIRED_METRICS if m not in self.metrics]
        if missing:
            raise ValueError(
                f"eval.metrics={self.metrics!r} lacks {missing}: CMC and mAP are always reported (the best "
                f"checkpoint is picked by mAP, reports read rank-1); use e.g. {METRICS}."
            )
        if self.best_mode not in distances.MODES:
            raise ValueError(f"eval.best_mode={self.best_mode!r}; choose one of {list(distances.MODES)}.")
        if self.protocol not in ranking.PROTOCOLS:
            raise ValueError(f"eval.protocol must be one of {list(ranking.PROTOCOLS)}, got {self.protocol!r}.")
        for name, least in (("k1", 1), ("k2", 1), ("block_size", 1), ("max_rank", 1), ("single_shot_repeats", 1)):
            set_(name, check_int(f"eval.{name}", getattr(self, name), least))
        set_("single_shot_seed", check_int("eval.single_shot_seed", self.single_shot_seed, 0))
        lam = self.lambda_value
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam <= 1:
            raise ValueError(f"eval.lambda_value must be a number in [0, 1] (Zhong et al.: 0.3), got {lam!r}.")
        set_("lambda_value", float(lam))
        if not isinstance(self.rerank, bool):
            raise ValueError(f"eval.rerank must be True or False, got {self.rerank!r}.")
        # Checked without asking jax for its backend: options are built before jax.distributed.initialize.
        if self.rank_on not in ranking.RANK_ON:
            raise ValueError(f"eval.rank_on must be 'auto', 'device' or 'host', got {self.rank_on!r}.")
        if self.protocol == "cuhk03_single_shot" and self.rank_on == "device":
            raise ValueError(
                "eval.rank_on='device' cannot rank eval.protocol='cuhk03_single_shot': its seeded gallery "
                "draws run on the host. Set eval.rank_on to 'auto' or 'host'."
            )

    @classmethod
    def from_config(cls, config) -> "EvalOptions":
        """config.eval and config.lsa -> EvalOptions (loop-only keys such as eval.batch_size are not the
        evaluator's)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"lsa"}
        return cls(**{k: config.eval[k] for k in fields}, lsa=LSAOptions.from_config(config.lsa))

    def ranker_options(self, num_gallery: int) -> dict:
        """ranking.Ranker keyword arguments: single-shot protocol ranks on the host (its seeded draws are numpy)."""
        single_shot = self.protocol == "cuhk03_single_shot"
        return {
            "max_rank": min(self.max_rank, num_gallery),
            "on_device": ranking.ranks_on_device(self.rank_on) and not single_shot,
            "cuhk03_single_shot": single_shot,
            "repeats": self.single_shot_repeats,
            "seed": self.single_shot_seed,
        }


def _percent(metrics: dict, names) -> dict:
    """ranking.Ranker fractions -> {"mAP", ("mINP" when in `names`,) "rank1", "rank5", "rank10"} in
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
    separation: dict = dataclasses.field(default_factory=dict)  # {mode: ranking.Separation result} (report_queries)
    rows: dict = dataclasses.field(default_factory=dict)  # {query index: distances [G]} in rows_mode (report_queries)
    rows_mode: str | None = None  # eval.best_mode when among the evaluated modes, else the first one


def evaluate(
    q_feats: dict,
    g_feats: dict,
    query,
    gallery,
    options: EvalOptions = EvalOptions(),
    modes: Sequence[str] | None = None,
    rerank_on: bool | None = None,
    report_queries: Sequence[int] | None = None,
) -> Evaluation:
    """Features of query and gallery (+ their .pids/.camids arrays) -> Evaluation, for `modes` (default
    options.modes) with re-ranking (of options.rerank_modes) when `rerank_on` (default options.rerank).

    Every mode's [Q, G] distances come from one pass over query blocks ("global+lsa" reusing the "global" and
    "lsa" blocks) and are ranked as the blocks come (on the device where `options.rank_on` says). A [Q, G] matrix
    is assembled on the host only for re-ranking. `report_queries` (query indices, e.g. reports.sample_queries)
    keeps those queries' distance rows and every mode's ranking.Separation, both taken from the blocks.
    """
    o = options
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    rank_kw = o.ranker_options(len(gallery.pids))
    modes = supported_modes(o.modes if modes is None else modes, q_feats)
    rerank_on = o.rerank if rerank_on is None else rerank_on
    rerank_modes = supported_modes(o.rerank_modes, q_feats, "eval.rerank_modes") if o.rerank_modes else modes
    report = report_queries is not None
    out = Evaluation({}, {})
    if report and modes:
        out.rows_mode = o.best_mode if o.best_mode in modes else modes[0]
    rankers = {mode: ranking.Ranker(*labels, **rank_kw) for mode in modes}
    separations = {mode: ranking.Separation(*labels) for mode in modes} if report else {}
    rerank_list = [mode for mode in modes if rerank_on and mode in rerank_modes]
    # The first re-ranked mode's [Q, G] matrix is kept from this pass; each other one is recomputed when its turn
    # comes, so one such matrix exists at a time.
    dists = {mode: np.empty((len(query.pids), len(gallery.pids)), np.float32) for mode in rerank_list[:1]}
    blocks = (
        distances.iter_mode_blocks(
            q_feats, g_feats, modes, o.lsa, o.block_size, progress=True, to_host=not rank_kw["on_device"]
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
        out.results[mode], out.cmc[mode] = _percent(metrics, o.metrics), metrics["cmc"]
        if report:
            out.separation[mode] = separations[mode].result()
    # Re-ranked blocks are ranked in pieces of the pass's block shape: the device ranking compiled for it serves.
    rerank_kw = dict(rank_kw, call_rows=distances.rows_per_block(o.block_size, len(modes), len(query.pids)))
    for mode in rerank_list:
        dist = dists.pop(mode, None)
        if dist is None:
            dist = distances.pairwise_distance(q_feats, g_feats, mode, o.lsa, o.block_size, progress=True)
        out.results[mode + "+rerank"] = _reranked(dist, q_feats, g_feats, mode, labels, rerank_kw, o)
        del dist  # before the next mode's matrix exists
    return out


def _reranked(
    dist: np.ndarray, q_feats: dict, g_feats: dict, mode: str, labels: tuple, rank_kw: dict, options: EvalOptions
) -> dict:
    """Scores of mode's re-ranking from its q×g distances dist [Q, G], block by block (`rerank.re_ranking_blocks`:
    the neighbour lists on the device, never an [N, N] matrix nor a re-ranked [Q, G] one; the original algorithm's
    result up to float rounding, tests/test_rerank.py)."""
    o = options
    ranker = ranking.Ranker(*labels, **rank_kw)
    for rows, block in rerank.re_ranking_blocks(
        q_feats, g_feats, mode, dist, o.k1, o.k2, o.lambda_value, o.lsa, progress=True
    ):
        ranker.add(rows, block)
    return _percent(ranker.result(), o.metrics)


def format_table(results: dict, protocol: str = "market1501") -> str:
    """Readable table of a results dict: an mINP column when its scores have one, and a first line naming the
    protocol (eval.protocol) when it is not Market-1501."""
    if protocol not in ranking.PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(ranking.PROTOCOLS)}, got {protocol!r}.")
    first = next(iter(results.values()), {})
    columns = [("mAP", "mAP")] + [("mINP", "mINP")] * ("mINP" in first) + [(f"rank{r}", f"R-{r}") for r in RANKS]
    width = max([len("mode")] + [len(m) for m in results])
    lines = [_PROTOCOL_TITLES[protocol]] if protocol in _PROTOCOL_TITLES else []
    lines.append(f"{'mode':<{width}}" + "".join(f"  {title:>6}" for _, title in columns))
    for mode, r in results.items():
        lines.append(f"{mode:<{width}}" + "".join(f"  {r[key]:6.2f}" for key, _ in columns))
    return "\n".join(lines)
