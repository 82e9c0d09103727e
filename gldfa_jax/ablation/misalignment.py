"""What LSA does on misaligned boxes: trained runs re-evaluated with test-time windows W (W = 1 is hard
alignment), on all queries and separately on the queries the synthetic world drew shifted or cut.

  python -m gldfa_jax.ablation.misalignment \
      --runs runs/ablation/table2/gldfa_net runs/ablation/table2/gldfa_net_w_o_lsa \
      [--windows 1,4] [--out runs/ablation/misalignment.md]

Each --runs folder holds seed*/train run workdirs (the ablation runner's layout) or is one run workdir. The
split of the queries comes from the world's synthetic_manifest.json (per image: misalign kind or None).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

from gldfa_jax.ablation.table import mean_std

MODES = ("lsa", "global+lsa")


def run_dirs(path: str) -> list[str]:
    # Only finished rows (the runner writes row.json when the trainer has exited cleanly).
    found = sorted(
        os.path.join(os.path.dirname(r), "train") for r in glob.glob(os.path.join(path, "seed*", "row.json"))
    )
    if found:
        return found
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return [path]
    raise ValueError(f"--runs {path!r} holds neither finished seed*/ runs (row.json) nor a run's checkpoints/.")


def query_groups(data_root: str, query_paths: list[str]) -> dict:
    """{"all", "misaligned", "aligned"} -> boolean mask over the queries, from the synthetic manifest."""
    manifest = os.path.join(data_root, "synthetic_manifest.json")
    if not os.path.exists(manifest):
        raise ValueError(
            f"{manifest} not found: this analysis needs the synthetic world (data_pipelines.synthetic), "
            "which records which boxes it shifted or cut."
        )
    with open(manifest) as f:
        images = json.load(f)["images"]
    shifted = np.array([images[os.path.basename(p)]["misalign"] is not None for p in query_paths])
    return {"all": np.ones_like(shifted), "misaligned": shifted, "aligned": ~shifted}


def evaluate_run(run: str, windows: list[int]) -> dict:
    """{(mode, W, group): {"mAP", "rank1"}} in percent for one trained run."""
    import dataclasses

    from data_pipelines import datasets
    from gldfa_jax import checkpointing, evaluation, features
    from gldfa_jax.experiment_data import Split, load_experiment_data

    config, model, variables, _ = checkpointing.load_checkpoint(run)
    data = load_experiment_data(config.data)
    # load_experiment_data keeps the reader's order; read the query paths the same way to name them.
    query_paths = [r.path for r in datasets.get_dataset(config.data.name, config.data.root).query]
    if len(query_paths) != len(data.query.pids):
        raise ValueError("some query images could not be decoded; cannot match them to the manifest")
    groups = query_groups(config.data.root, query_paths)
    q, g = features.split_features(model, variables, data.query, data.gallery, config)
    options = evaluation.EvalOptions.from_config(config)
    options = dataclasses.replace(options, modes=MODES, rerank=False, max_rank=10)
    out = {}
    for w in windows:
        at_w = dataclasses.replace(options, lsa=dataclasses.replace(options.lsa, window=w))
        for name, mask in groups.items():
            query = Split(None, data.query.pids[mask], data.query.camids[mask])
            results = evaluation.evaluate({k: v[mask] for k, v in q.items()}, g, query, data.gallery, at_w).results
            for mode in MODES:
                r = results[mode]
                out[(mode, w, name)] = {"mAP": r["mAP"], "rank1": r["rank1"], "n": int(mask.sum())}
    return out


def table(results: dict, windows: list[int]) -> str:
    """results: {label: [per-run dicts]} -> markdown, mean ± std over the runs (seeds)."""
    groups = ("all", "misaligned", "aligned")
    head = ["trained as", "seeds", "distance", "test W"] + [f"{g} mAP / R-1" for g in groups]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, runs in results.items():
        for mode in MODES:
            for w in windows:
                cells = [label, str(len(runs)), mode, f"{w}" + (" (hard)" if w == 1 else "")]
                for g in groups:
                    r = [run[(mode, w, g)] for run in runs]
                    cells.append(f"{mean_std([x['mAP'] for x in r])} / {mean_std([x['rank1'] for x in r])}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gldfa_jax.ablation.misalignment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", nargs="+", required=True, help="ablation row folders (seed*/train) or run workdirs")
    parser.add_argument("--windows", default="1,4", help="test-time LSA windows, comma-separated (1 = hard)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)
    try:
        windows = [int(w) for w in args.windows.split(",")]
        results = {}
        for path in args.runs:
            results[os.path.basename(os.path.normpath(path))] = [evaluate_run(r, windows) for r in run_dirs(path)]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = next(iter(results.values()))[0]
    text = (
        table(results, windows)
        + "\n\nQueries: "
        + ", ".join(f"{g} {first[(MODES[0], windows[0], g)]['n']}" for g in ("all", "misaligned", "aligned"))
        + "; mAP / Rank-1 in percent, mean ± std over seeds.\n"
    )
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
