"""How much weight the LSA distance deserves at test time: mAP of global + w · lsa for trained runs.

    python -m benchmarks.lsa_fusion RUN [RUN ...] [--weights 0,0.25,0.5,1,2,4] [--data-root DIR]

Each RUN is a training workdir (its checkpoints/ and config.json). Features are extracted once per run; each
weight is one evaluation of "global+lsa" through gldfa_jax.evaluation, as training scores it. Prints a markdown
table, one row per run, and the mean over the runs; w = 1 is the paper's plain sum (§3.2), w = 0 the global
distance alone.
"""

import argparse
import dataclasses
import sys

import numpy as np
from tqdm import tqdm

from gldfa_jax import checkpointing, evaluation, features
from gldfa_jax.experiment_data import load_experiment_data


def fusion_map(q_feats: dict, g_feats: dict, query, gallery, config, weights) -> dict:
    """{w: mAP % of global + w · lsa} (the run's LSA window and normalisation), through the evaluator."""
    options = evaluation.EvalOptions.from_config(config)
    options = dataclasses.replace(options, modes=("global+lsa",), rerank=False)
    return {
        w: evaluation.evaluate(
            q_feats,
            g_feats,
            query,
            gallery,
            dataclasses.replace(options, lsa=dataclasses.replace(options.lsa, weight=w)),
        ).results["global+lsa"]["mAP"]
        for w in weights
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="training workdirs")
    parser.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    parser.add_argument("--data-root", default="", help="evaluate on this dataset instead of the run's own")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    rows, data, data_key = [], None, None
    for run in tqdm(args.runs, desc="runs", unit="run"):
        config, model, variables, _ = checkpointing.load_checkpoint(run)
        if args.data_root:
            config.data.root = args.data_root
        key = (config.data.root, config.data.height, config.data.width)
        if key != data_key:  # runs of one study share their data: decode it once
            data, data_key = load_experiment_data(config.data, need_train=False), key
        q_feats, g_feats = features.split_features(model, variables, data.query, data.gallery, config)
        rows.append(fusion_map(q_feats, g_feats, data.query, data.gallery, config, weights))
    print("| run | " + " | ".join(f"w={w:g}" for w in weights) + " |")
    print("|---" * (len(weights) + 1) + "|")
    for run, row in zip(args.runs, rows):
        print(f"| {run} | " + " | ".join(f"{row[w]:.2f}" for w in weights) + " |")
    if len(rows) > 1:
        print("| mean | " + " | ".join(f"{np.mean([r[w] for r in rows]):.2f}" for w in weights) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
