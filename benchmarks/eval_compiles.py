"""Compilations and time of one evaluation from features, cold then warm: Market's shape (3,368 × 19,732, 751
identities, 6 cameras) scaled by --scale, synthetic identity-clustered features (`retrieval.synthetic_split`),
every mode of eval.modes with the config's re-ranking. Prints per run the wall time and each compiled function's
count and compile seconds (from jax.monitoring), then the mAPs.

    python -m benchmarks.eval_compiles [--scale 0.1] [--block-size 400] [--rank-on device]
"""

import argparse
import collections
import time

import jax

from benchmarks import retrieval
from gldfa_jax import evaluation
from gldfa_jax.config import get_config

MARKET = (3368, 19732, 751, 6)  # queries, gallery, identities, cameras


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of Market's queries, gallery, identities")
    parser.add_argument("--block-size", type=int, default=400, help="eval.block_size (query rows × modes per block)")
    parser.add_argument("--rank-on", default="device", choices=("auto", "device", "host"), help="eval.rank_on")
    args = parser.parse_args(argv)
    compiles, seconds = collections.Counter(), collections.Counter()

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[kwargs.get("fun_name")] += 1
            seconds[kwargs.get("fun_name")] += duration

    jax.monitoring.register_event_duration_secs_listener(on_event)
    num_q, num_g, ids = (max(1, int(n * args.scale)) for n in MARKET[:3])
    q, g, query, gallery = retrieval.synthetic_split(num_q, num_g, ids, MARKET[3], ("global", "local", "final"))
    config = get_config()
    config.eval.block_size, config.eval.rank_on = args.block_size, args.rank_on
    options = evaluation.EvalOptions.from_config(config)
    print(f"# {num_q:,} × {num_g:,}, block_size {args.block_size}, rank_on {args.rank_on}, jax {jax.__version__}")
    for run in ("cold", "warm"):
        compiles.clear(), seconds.clear()
        tic = time.perf_counter()
        results = evaluation.evaluate(q, g, query, gallery, options).results
        wall = time.perf_counter() - tic
        print(f"{run}: {wall:.2f} s, {sum(compiles.values())} compilations ({sum(seconds.values()):.2f} s)")
        for name, count in sorted(compiles.items()):
            print(f"    {count} × {name} ({seconds[name]:.2f} s)")
    print("mAP: " + ", ".join(f"{mode} {r['mAP']:.2f}" for mode, r in results.items()))


if __name__ == "__main__":
    main()
