"""The markdown table of an ablation set: mean ± std over seeds beside the paper's numbers."""

from __future__ import annotations

import json
import os

import numpy as np

from gldfa_jax import reports
from gldfa_jax.ablation.runner import ROW_FILE, config_fingerprint, dataset_key, run_dir
from gldfa_jax.ablation.sets import METRICS, SETS, AblationSet, Row

STATS_FILE = os.path.join("reports", "feature_stats.json")  # gldfa_jax.reports, in the trainer's workdir


def collect(set_name: str, base: str, row: Row, workdir: str, multi_base: bool) -> list[dict]:
    """row.json records of every seed of this row finished so far."""
    parent = os.path.dirname(run_dir(workdir, set_name, base, row, 0, multi_base))
    records = []
    if os.path.isdir(parent):
        for entry in sorted(os.listdir(parent)):
            path = os.path.join(parent, entry, ROW_FILE)
            if entry.startswith("seed") and os.path.exists(path):
                with open(path) as f:
                    records.append(json.load(f))
    return sorted(records, key=lambda r: r["seed"])


def mean_std(values) -> str:
    values = np.asarray(values, np.float64)
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def summarize(records: list[dict], mode: str) -> dict:
    """{"mAP": "x ± s", ...} over the seeds, sample std (ddof 1)."""
    return {key: mean_std([r["results"][mode][key] for r in records]) for key, _ in METRICS}


def paper_columns(spec: AblationSet, rows: list[Row], key: str) -> list[tuple[str, str, str]]:
    """(paper dataset key, metric key, column label) of the paper's numbers to show beside a run on `key`."""
    comparable = key in spec.paper_dataset
    columns = []
    for pk in [key] if comparable else list(spec.paper_dataset):
        label = f"paper {spec.paper_dataset[pk]}" + ("" if comparable else " (not comparable)")
        columns += [(pk, m, f"{label} {name}") for m, name in METRICS if any(m in r.paper.get(pk, {}) for r in rows)]
    return columns


def write_table(set_name: str, bases: list[str], workdir: str) -> str:
    """Write <workdir>/<set>/<set>.md (and, for the sweeps, a plot per config) from the finished runs;
    every row of the set is listed, those without finished runs as "not yet run"."""
    spec = SETS[set_name]
    rows = list(spec.rows)
    multi = len(bases) > 1
    lines = [f"## {spec.title}", ""]
    total_s = 0.0
    for base in bases:
        key = dataset_key(base)
        paper = paper_columns(spec, rows, key)
        note = (
            ""
            if key in spec.paper_dataset or not paper
            else " — the paper's numbers are for another dataset: shown for reference, not comparable."
        )
        head = (
            ["Methods"]
            + (
                [f"{m} mAP" for m in spec.modes] + ["stripe norm", "LSA pos/neg", "global pos/neg"]
                if spec.modes
                else [name for _, name in METRICS]
            )
            + ["seeds", "distance"]
            + [c[2] for c in paper]
        )
        lines += [f"Config: `{base}`{note}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        curve, fingerprints = [], {}
        for row in rows:
            records = collect(set_name, base, row, workdir, multi)
            for r in records:
                run = run_dir(workdir, set_name, base, row, r["seed"], multi)
                fingerprint = config_fingerprint(os.path.join(run, "train"), spec)
                if fingerprint:
                    fingerprints.setdefault(fingerprint, []).append(f"{row.name} seed {r['seed']}")
            if records and spec.modes:
                ours = (
                    [  # a mode the row's model has not (lsa of a global-branch-only row) shows "—"
                        mean_std([r["results"][m]["mAP"] for r in records]) if m in records[0]["results"] else "—"
                        for m in spec.modes
                    ]
                    + feature_stat_cells(records, workdir, set_name, base, row, multi)
                    + [",".join(str(r["seed"]) for r in records)]
                )
                total_s += sum(r["wall_s"] for r in records)
                curve.append([np.nan, np.nan])
            elif records:
                ours = list(summarize(records, row.mode).values()) + [",".join(str(r["seed"]) for r in records)]
                total_s += sum(r["wall_s"] for r in records)
                curve.append([np.mean([r["results"][row.mode][m] for r in records]) for m in ("mAP", "rank1")])
            else:
                ours = ["not yet run"] * (len(spec.modes) + 3 if spec.modes else len(METRICS)) + ["—"]
                curve.append([np.nan, np.nan])
            cells = [row.name] + ours + [row.mode] + [_fmt(row.paper.get(pk, {}).get(m)) for pk, m, _ in paper]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if len(fingerprints) > 1:
            groups = "; ".join(f"{fp}: {', '.join(runs)}" for fp, runs in fingerprints.items())
            lines += [
                f"**Warning: these runs used different base configs** (the config or the overrides changed "
                f"between runs; fingerprints {groups}). Rerun them in a fresh --workdir.",
                "",
            ]
        if spec.x_values:
            curve = np.asarray(curve)
            reports.parameter_curve(
                spec.x_values,
                {"mAP": curve[:, 0], "Rank-1": curve[:, 1]},
                os.path.join(workdir, set_name, f"{set_name}_{key}.png"),
                x_label=spec.x_label,
                title=spec.title,
            )
    lines += [
        "mAP and R-k in percent, mean ± sample std over the seeds listed (one value: one seed); "
        "'distance' is the evaluation mode reported. Config switches per row: "
        f"`python -m gldfa_jax.ablation --set {set_name} --list`; each seed's exact command and wall time "
        f"are in its row.json. Wall time of the finished runs: {total_s / 60:.1f} min in total.",
        "",
    ]
    out = os.path.join(workdir, set_name, f"{set_name}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    return out


def feature_stat_cells(records: list[dict], workdir: str, set_name: str, base: str, row: Row, multi: bool) -> list[str]:
    """Mean stripe norm, LSA and global pos/neg distance ratios (gldfa_jax.ranking.Separation) over seeds."""
    stats = []
    for r in records:
        path = os.path.join(run_dir(workdir, set_name, base, row, r["seed"], multi), "train", STATS_FILE)
        if os.path.exists(path):
            with open(path) as f:
                stats.append(json.load(f))
    cells = []
    for get in (lambda s: s["stripe_norm"], lambda s: s["lsa"]["ratio"], lambda s: s["global"]["ratio"]):
        try:
            values = [get(s) for s in stats]
        except KeyError:
            values = []
        cells.append(f"{np.mean(values):.2f}" if values else "—")
    return cells


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.1f}"
