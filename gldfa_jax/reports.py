"""Visual reports: retrieval grid (paper Fig. 8), stripe alignment (Fig. 7), training curves, CMC.

Every function takes arrays/paths plus an output path, writes one PNG of a fixed pixel size
(no tight bounding box, so sizes are predictable) and returns what it computed. Figures are built
with matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from data_pipelines.images import decode_image
from gldfa_jax import lsa, ranking
from gldfa_jax.metric_writer import read_metrics

DPI = 100
CORRECT = "#1a9e3a"
WRONG = "#d62728"
UNKNOWN = "#7f7f7f"


def _figure(width_px: int, height_px: int) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str) -> str:
    parent = os.path.dirname(os.path.abspath(out_png))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(out_png, dpi=DPI, format="png")
    return out_png


def _axes_px(fig: Figure, left: float, top: float, width: float, height: float):
    """Axes placed in pixel coordinates measured from the figure's top-left corner."""
    fw, fh = fig.get_size_inches() * DPI
    return fig.add_axes((left / fw, 1.0 - (top + height) / fh, width / fw, height / fh))


def _as_image(item, height: int, width: int) -> np.ndarray:
    """A path or an [H, W, 3] array (uint8, or float in [0, 1]) -> uint8 [height, width, 3]."""
    if isinstance(item, (str, os.PathLike)):
        return decode_image(item, height, width)
    arr = np.asarray(item)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image array must be [H, W, 3], got shape {arr.shape}; pass RGB images or file paths")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.asarray(Image.fromarray(arr).resize((width, height), Image.BILINEAR))


def _frame(ax, color: str, linewidth: float = 4.0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(linewidth)


def _check_ids(*ids) -> None:
    if any(v is not None for v in ids) and any(v is None for v in ids):
        raise ValueError("pass all of q_pids, g_pids, q_camids, g_camids or none of them")


def rank_gallery(distmat, q_pids=None, g_pids=None, q_camids=None, g_camids=None, topk: int = 10):
    """Top-k gallery indices per query, ascending distance (stable for ties).

    distmat [Q, G]. With ids and cameras given, gallery items of the query's identity seen by the
    query's camera are dropped (Market protocol: they are not counted as retrievals). Returns a list of
    Q int arrays of length <= topk (shorter when the gallery has fewer valid items).
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be [Q, G], got shape {distmat.shape}")
    _check_ids(q_pids, g_pids, q_camids, g_camids)
    removed = np.zeros(distmat.shape, bool)
    if q_pids is not None:
        removed = (np.asarray(q_pids)[:, None] == np.asarray(g_pids)[None]) & (
            np.asarray(q_camids)[:, None] == np.asarray(g_camids)[None]
        )
    return [row[row >= 0][:topk] for row in ranking.ranked_gallery(distmat, removed)]


def sample_queries(num_q: int, num_queries: int = 4, seed: int = 0) -> list:
    """The query indices a retrieval grid draws: min(num_queries, num_q) of range(num_q), sorted, seeded."""
    rng = np.random.default_rng(seed)
    return [int(q) for q in np.sort(rng.choice(num_q, size=min(num_queries, num_q), replace=False))]


def retrieval_grid(
    distmat,
    query_images: Sequence,
    gallery_images: Sequence,
    out_png: str,
    *,
    q_pids=None,
    g_pids=None,
    q_camids=None,
    g_camids=None,
    query_indices: Sequence[int] | None = None,
    num_queries: int = 4,
    topk: int = 10,
    seed: int = 0,
    tile: tuple[int, int] = (128, 64),
) -> dict:
    """Top-`topk` retrievals of sampled queries, one row per query (paper Fig. 8).

    distmat [Q, G], or a mapping query index -> its distances [G] (the rows an evaluation keeps,
    evaluation.Evaluation.rows; query_indices default to its keys). Only the drawn queries are ranked.
    query_images / gallery_images: Q and G paths or [H, W, 3] arrays. With ids and
    cameras the borders are green (same identity) or red; without them grey. A query whose identity has
    no valid gallery image is framed red and labelled "no match", and missing ranks (gallery smaller than topk) are
    drawn as empty hatched slots. `tile` = (height, width) of each image in pixels.
    Image size: width (topk + 1) * (tile_w + 16) + 16, height rows * (tile_h + 36) + 10.
    Returns {"queries": [int], "ranked": [int array], "correct": [bool array | None], "has_match": [bool | None]}.
    """
    num_q = len(query_images)
    if isinstance(distmat, Mapping):
        rows = {int(q): np.asarray(r) for q, r in distmat.items()}
        query_indices = sorted(rows) if query_indices is None else query_indices
        num_g = next(iter(rows.values())).shape[-1] if rows else len(gallery_images)
    else:
        rows = np.asarray(distmat)
        if rows.ndim != 2:
            raise ValueError(f"distmat must be [Q, G] or a mapping query index -> [G] row, got shape {rows.shape}")
        if rows.shape[0] != num_q:
            raise ValueError(f"distmat is {rows.shape} but got {num_q} query images; pass one image per row")
        num_g = rows.shape[1]
        if query_indices is None:
            query_indices = sample_queries(num_q, num_queries, seed)
    if len(gallery_images) != num_g:
        raise ValueError(
            f"distances have {num_g} gallery columns but got {len(gallery_images)} gallery images; "
            "pass one image per column"
        )
    query_indices = [int(q) for q in query_indices]
    if not query_indices:
        raise ValueError("query_indices is empty; pass at least one query index")
    missing = [q for q in query_indices if not 0 <= q < num_q or (isinstance(rows, dict) and q not in rows)]
    if missing:
        raise ValueError(f"query_indices {missing} have no distance row; pick them among the rows of distmat")
    _check_ids(q_pids, g_pids, q_camids, g_camids)
    labelled = q_pids is not None
    drawn = np.stack([rows[q] for q in query_indices])  # [n, G]
    if labelled:
        q_pids, g_pids, q_camids, g_camids = (np.asarray(a) for a in (q_pids, g_pids, q_camids, g_camids))
        ranked_all = rank_gallery(drawn, q_pids[query_indices], g_pids, q_camids[query_indices], g_camids, topk)
    else:
        ranked_all = rank_gallery(drawn, topk=topk)

    th, tw = tile
    cell_w, cell_h, gap = tw + 16, th + 36, 16
    fig = _figure((topk + 1) * cell_w + gap, len(query_indices) * cell_h + 10)
    out = {"queries": query_indices, "ranked": [], "correct": [], "has_match": []}
    for row, q in enumerate(query_indices):
        ranked = ranked_all[row]
        top = row * cell_h + 26
        if labelled:  # a true match the protocol keeps: same identity, another camera
            has_match = bool(np.any((g_pids == q_pids[q]) & (g_camids != q_camids[q])))
            correct = g_pids[ranked] == q_pids[q]
        else:
            has_match, correct = None, None
        out["ranked"].append(ranked)
        out["correct"].append(correct)
        out["has_match"].append(has_match)

        ax = _axes_px(fig, 8, top, tw, th)
        ax.imshow(_as_image(query_images[q], th, tw))
        _frame(ax, "black", 2.0)
        title = f"query {q}" + (f"\nid {q_pids[q]}" if labelled else "")
        ax.set_title(title, fontsize=7, pad=2)
        if has_match is False:  # no gallery image of this identity (from another camera): every border is red
            _frame(ax, WRONG, 2.0)
            ax.set_xlabel("no match", fontsize=7, color=WRONG, labelpad=1)
        for r in range(topk):
            ax = _axes_px(fig, gap + (r + 1) * cell_w, top, tw, th)
            if r < len(ranked):
                g = int(ranked[r])
                ax.imshow(_as_image(gallery_images[g], th, tw))
                color = UNKNOWN if correct is None else (CORRECT if correct[r] else WRONG)
                _frame(ax, color)
                ax.set_title(f"#{r + 1}  d={drawn[row, g]:.3g}", fontsize=6, pad=2)
                if labelled:
                    ax.set_xlabel(f"id {g_pids[g]}", fontsize=6, labelpad=1)
            else:
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.add_patch(Rectangle((0, 0), 1, 1, facecolor="#eeeeee", hatch="//", edgecolor="#bbbbbb"))
                ax.text(0.5, 0.5, "no\nimage", ha="center", va="center", fontsize=7, color=UNKNOWN)
                _frame(ax, "#bbbbbb", 1.0)
                ax.set_title(f"#{r + 1}", fontsize=6, pad=2)
    _save(fig, out_png)
    return out


def stripe_alignment(local_a, local_b, window: int | None = None) -> dict:
    """LSA bookkeeping for one image pair: local_a, local_b [k, d].

    Returns {"distances" [k, k] stripe distances, "band" [k, k] bool window mask (|i - j| <= W // 2),
    "matches_ab" [k] (best stripe of B inside the window of each stripe of A), "matches_ba" [k],
    "d_ab", "d_ba", "lsa" = min(d_ab, d_ba) (paper eq. 5), "hard" = stripe-by-stripe (W = 1) distance,
    "direction" "ab" or "ba" (which set of matches gives the LSA distance)}.
    """
    local_a, local_b = np.asarray(local_a, np.float32), np.asarray(local_b, np.float32)
    if local_a.ndim != 2 or local_a.shape != local_b.shape:
        raise ValueError(f"local_a and local_b must both be [k, d], got {local_a.shape} and {local_b.shape}")
    k = local_a.shape[0]
    window = lsa.default_window(k) if not window else int(window)
    dist = jax.device_get(lsa.stripe_distances(local_a[None], local_b[None]))[0, 0]
    band = lsa.window_band(k, window)
    masked = np.where(band, dist, np.inf)
    matches_ab = masked.argmin(axis=1)
    matches_ba = masked.argmin(axis=0)
    d_ab = float(masked.min(axis=1).sum())
    d_ba = float(masked.min(axis=0).sum())
    return {
        "distances": dist,
        "band": band,
        "window": window,
        "matches_ab": matches_ab,
        "matches_ba": matches_ba,
        "d_ab": d_ab,
        "d_ba": d_ba,
        "lsa": min(d_ab, d_ba),
        "hard": float(np.trace(dist)),
        "direction": "ab" if d_ab <= d_ba else "ba",
    }


def alignment_figure(
    image_a,
    image_b,
    local_a,
    local_b,
    out_png: str,
    *,
    window: int | None = None,
    labels: tuple[str, str] = ("A", "B"),
    tile: tuple[int, int] = (256, 128),
) -> dict:
    """Stripe alignment of two images (paper Figs. 3 and 7).

    image_a, image_b: paths or [H, W, 3] arrays; local_a, local_b: their local features [k, d].
    Left: both images cut into k stripes, a line from each stripe to its LSA match (the direction
    that gives the LSA distance; the other direction dashed). Right: the k x k stripe distance
    matrix, cells outside the sliding window band greyed out, the matches marked.
    Image size: width 2 * tile_w + 120 + 420, height tile_h + 90. Returns stripe_alignment(...).
    """
    info = stripe_alignment(local_a, local_b, window)
    k = info["distances"].shape[0]
    th, tw = tile
    link = 120
    fig = _figure(2 * tw + link + 420, th + 90)
    top = 40
    ax_a = _axes_px(fig, 20, top, tw, th)
    ax_b = _axes_px(fig, 20 + tw + link, top, tw, th)
    for ax, img, name in ((ax_a, image_a, labels[0]), (ax_b, image_b, labels[1])):
        ax.imshow(_as_image(img, th, tw), extent=(0, tw, th, 0))
        for s in range(1, k):
            ax.axhline(s * th / k, color="white", linewidth=1.0, linestyle="--")
        for s in range(k):
            ax.text(
                3,
                (s + 0.5) * th / k,
                str(s + 1),
                color="white",
                fontsize=7,
                va="center",
                bbox=dict(facecolor="black", alpha=0.6, pad=1, linewidth=0),
            )
        _frame(ax, "black", 1.0)
        ax.set_title(name, fontsize=9)

    fw, fh = fig.get_size_inches() * DPI
    xa, xb = (20 + tw) / fw, (20 + tw + link) / fw

    def y_of(stripe):
        return 1.0 - (top + (stripe + 0.5) * th / k) / fh

    chosen = info["direction"]
    for src, matches, direction in ((np.arange(k), info["matches_ab"], "ab"), (np.arange(k), info["matches_ba"], "ba")):
        style = (
            dict(color=CORRECT, linewidth=1.8)
            if direction == chosen
            else dict(color="#888888", linewidth=0.8, linestyle=":")
        )
        for s, m in zip(src, matches):
            ya, yb = (y_of(s), y_of(m)) if direction == "ab" else (y_of(m), y_of(s))
            fig.add_artist(Line2D([xa, xb], [ya, yb], transform=fig.transFigure, **style))

    ax_m = _axes_px(fig, 2 * tw + link + 70, top, min(th, 300), min(th, 300))
    im = ax_m.imshow(info["distances"], cmap="viridis", extent=(0.5, k + 0.5, k + 0.5, 0.5))
    fig.colorbar(im, ax=ax_m, fraction=0.046, pad=0.04)
    # Outside the window band LSA never looks: grey it out so the band stands out.
    outside = np.where(info["band"], np.nan, 0.0)
    ax_m.imshow(outside, cmap="Greys", vmin=0.0, vmax=1.0, alpha=0.7, extent=(0.5, k + 0.5, k + 0.5, 0.5))
    rows = np.arange(k) + 1
    ab = dict(marker="o", s=28, facecolors="none", edgecolors="red", linewidths=1.5)
    ba = dict(marker="x", s=22, c="orange", linewidths=1.2)
    ax_m.scatter(info["matches_ab"] + 1, rows, label=f"{labels[0]}→{labels[1]}", **ab)
    ax_m.scatter(rows, info["matches_ba"] + 1, label=f"{labels[1]}→{labels[0]}", **ba)
    ax_m.set_xlabel(f"stripe of {labels[1]}", fontsize=8)
    ax_m.set_ylabel(f"stripe of {labels[0]}", fontsize=8)
    ax_m.set_xticks(rows)
    ax_m.set_yticks(rows)
    ax_m.tick_params(labelsize=7)
    ax_m.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    ax_m.set_title(f"stripe distances, window W={info['window']}", fontsize=9)
    fig.suptitle(
        f"k={k}, W={info['window']}:  LSA distance {info['lsa']:.3f}   hard alignment (W=1) {info['hard']:.3f}",
        fontsize=10,
        y=0.98,
    )
    _save(fig, out_png)
    return info


def cmc_curve(curves, out_png: str, *, max_rank: int | None = None, title: str = "CMC") -> dict:
    """CMC curves: `curves` is one cmc array [R] (fractions) or a mapping label -> cmc array.

    Image size 640 x 480. Returns the plotted {label: percent array}.
    """
    if not isinstance(curves, Mapping):
        curves = {"cmc": curves}
    if not curves:
        raise ValueError("curves is empty; pass a cmc array or a mapping label -> cmc array")
    fig = _figure(640, 480)
    ax = fig.add_subplot(1, 1, 1)
    plotted = {}
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, np.float64).ravel()
        if max_rank:
            cmc = cmc[:max_rank]
        pct = cmc * 100.0
        plotted[label] = pct
        ranks = np.arange(1, len(pct) + 1)
        ax.plot(ranks, pct, marker="o" if len(pct) <= 20 else None, markersize=3, label=f"{label} (R-1 {pct[0]:.1f}%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.1)
    _save(fig, out_png)
    return plotted


def parameter_curve(
    x_values: Sequence, series: Mapping[str, Sequence[float]], out_png: str, *, x_label: str, title: str = ""
) -> None:
    """Metrics (percent) against a swept parameter, as in paper Fig. 6; NaN = not run yet. Size 640 x 480."""
    fig = _figure(640, 480)
    ax = fig.add_subplot(1, 1, 1)
    for label, values in series.items():
        values = np.asarray(values, np.float64)
        if values.shape != (len(x_values),):
            raise ValueError(
                f"series {label!r} has {values.shape} values for {len(x_values)} x values; "
                "pass one value per x (NaN where missing)"
            )
        ax.plot(x_values, values, marker="o", label=label)
    ax.set_xticks(list(x_values))
    ax.set_xlabel(x_label)
    ax.set_ylabel("%")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.1)
    _save(fig, out_png)


def training_curves(metrics_jsonl_path: str, out_png: str, *, steps_per_epoch: int | None = None) -> dict:
    """Loss parts, learning rate and evaluation mAP (solid) / Rank-1 (dashed) per distance mode, from a
    run's metrics.jsonl; the x axis is epochs when `steps_per_epoch` is given, else steps.
    Image size 1500 x 450. Returns read_metrics(...)."""
    metrics = read_metrics(metrics_jsonl_path)
    train = metrics.get("train")
    if train is None:
        raise ValueError(f"{metrics_jsonl_path} has no 'train' records; pass the metrics.jsonl of a training run")
    scale = float(steps_per_epoch) if steps_per_epoch else 1.0
    x_label = "epoch" if steps_per_epoch else "step"
    fig = _figure(1500, 450)
    ax_loss, ax_lr, ax_eval = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    x = train["step"] / scale
    parts = {k: v for k, v in train.items() if k not in ("step", "lr", "images_per_s", "epoch")}
    for name, values in parts.items():
        ax_loss.plot(x, values, label=name, linewidth=2.0 if name == "total" else 1.2)
    # The parts differ by orders of magnitude (centre loss vs. triplet); a part switched off logs zeros.
    if all(np.nanmin(v) > 0 for v in parts.values()):
        ax_loss.set_yscale("log")
    ax_loss.set_title("training loss (unweighted parts)", fontsize=10)
    ax_loss.legend(fontsize=7)
    if "lr" in train:
        ax_lr.plot(x, train["lr"], color="black")
        ax_lr.set_yscale("log")
    ax_lr.set_title("learning rate", fontsize=10)
    modes = [s for s in metrics if s.startswith("eval/")]
    for i, split in enumerate(modes):
        color = f"C{i % 10}"
        ex = metrics[split]["step"] / scale
        ax_eval.plot(ex, metrics[split]["mAP"], marker="o", color=color, label=f"{split[5:]} mAP")
        if "rank1" in metrics[split]:
            ax_eval.plot(ex, metrics[split]["rank1"], marker="s", linestyle="--", color=color, alpha=0.6)
    ax_eval.set_title("evaluation: mAP (solid), Rank-1 (dashed), %", fontsize=10)
    if modes:
        ax_eval.legend(fontsize=7)
    else:
        ax_eval.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_eval.transAxes)
    for ax in (ax_loss, ax_lr, ax_eval):
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.05, right=0.98, top=0.9, bottom=0.12, wspace=0.25)
    _save(fig, out_png)
    return metrics


def write_eval_reports(
    out_dir: str,
    evaluated,
    q_feats: dict,
    g_feats: dict,
    query,
    gallery,
    *,
    window: int | None = None,
    metrics_jsonl: str | None = None,
    steps_per_epoch: int | None = None,
) -> dict:
    """The PNG reports of one evaluation into `out_dir`; returns {name: path}. Nothing is evaluated here.

    evaluated: the evaluation.Evaluation the figures are drawn from, computed with
    `evaluate(..., report_queries=sample_queries(len(query.pids)))` so that it holds those queries' distance rows;
    q_feats / g_feats: Features dicts ({"global" [N, d], "local" [N, k, d], "final" [N, D]});
    query / gallery: objects with .images uint8 [N, H, W, 3], .pids [N], .camids [N] (experiment_data.Split);
    window: the LSA window the alignment figure draws (lsa.LSAOptions.window; None = k // 2).
    Writes retrieval_grid.png (the evaluation's rows_mode: eval.best_mode when the model has it, else the first
    mode), alignment.png (a drawn query and its best-ranked true match, when the model has local features),
    cmc.png (every evaluated mode), training_curves.png (when metrics_jsonl exists) and feature_stats.json
    (feature norms and, per mode, the ranking.Separation of its distances).
    """
    if not evaluated.rows:
        raise ValueError(
            "evaluated has no distance rows to draw; pass evaluation.evaluate(..., "
            "report_queries=reports.sample_queries(len(query.pids)))"
        )
    paths = {}
    stats = {**feature_norms(q_feats, g_feats), **evaluated.separation}
    ids = dict(q_pids=query.pids, g_pids=gallery.pids, q_camids=query.camids, g_camids=gallery.camids)
    paths["retrieval_grid"] = os.path.join(out_dir, "retrieval_grid.png")
    grid = retrieval_grid(evaluated.rows, query.images, gallery.images, paths["retrieval_grid"], **ids)
    if "local" in q_feats:
        pair = next(
            ((q, int(r[c.argmax()])) for q, r, c in zip(grid["queries"], grid["ranked"], grid["correct"]) if c.any()),
            (grid["queries"][0], int(grid["ranked"][0][0])),
        )
        paths["alignment"] = os.path.join(out_dir, "alignment.png")
        alignment_figure(
            query.images[pair[0]],
            gallery.images[pair[1]],
            q_feats["local"][pair[0]],
            g_feats["local"][pair[1]],
            paths["alignment"],
            window=window,
            labels=(f"query {pair[0]} (id {query.pids[pair[0]]})", f"gallery {pair[1]} (id {gallery.pids[pair[1]]})"),
        )
    paths["cmc"] = os.path.join(out_dir, "cmc.png")
    cmc_curve(evaluated.cmc, paths["cmc"], max_rank=min(20, *(len(c) for c in evaluated.cmc.values())))
    if metrics_jsonl and os.path.exists(metrics_jsonl):
        paths["training_curves"] = os.path.join(out_dir, "training_curves.png")
        training_curves(metrics_jsonl, paths["training_curves"], steps_per_epoch=steps_per_epoch)
    paths["feature_stats"] = os.path.join(out_dir, "feature_stats.json")
    with open(paths["feature_stats"], "w") as f:
        json.dump(stats, f, indent=2)
    return paths


def feature_norms(q_feats: dict, g_feats: dict) -> dict:
    """Mean L2 norm of each feature over query + gallery: "global_norm", "stripe_norm" (per stripe), "final_norm"."""
    out = {}
    for key, name in (("global", "global_norm"), ("local", "stripe_norm"), ("final", "final_norm")):
        if key in q_feats:
            both = np.concatenate([np.asarray(q_feats[key]), np.asarray(g_feats[key])])
            out[name] = float(np.linalg.norm(both, axis=-1).mean())
    return out


def write_run_reports(
    workdir: str, evaluated, q_feats: dict, g_feats: dict, data, config, steps_per_epoch: int
) -> dict:
    """`write_eval_reports` of a run's evaluation into WORKDIR/reports, with its training curves; process 0 only
    (the others computed the same evaluation)."""
    if jax.process_index() != 0:
        return {}
    out = os.path.join(workdir, "reports")
    os.makedirs(out, exist_ok=True)
    paths = write_eval_reports(
        out,
        evaluated,
        q_feats,
        g_feats,
        data.query,
        data.gallery,
        window=config.lsa.window or None,
        metrics_jsonl=os.path.join(workdir, "metrics.jsonl"),
        steps_per_epoch=steps_per_epoch,
    )
    logging.info("reports: %s", ", ".join(sorted(paths.values())))
    return paths


def write_results(workdir: str, results: dict) -> str:
    """WORKDIR/results.json: every mode's metrics (evaluation.Evaluation.results)."""
    path = os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    return path
