"""Ablation runner: the paper's Table 2, Fig. 6 (k and W sweeps) and Table 3 as sets of config variants.

  python -m gldfa_jax.ablation --set table2 --base experiments/synthetic.py --workdir runs/ablation \
      --seeds 0,1,2 [--rows "GL+LSA,GLDFA-Net"] [--config.train.epochs=2 ...]

The markdown table (<workdir>/<set>/<set>.md) shows mean ± std over the seeds run so far beside the paper's
numbers, marked as not comparable when the dataset differs.
"""

from __future__ import annotations

import argparse
import sys

from gldfa_jax.ablation.runner import check_config, resolve_config, run_set
from gldfa_jax.ablation.sets import SETS, describe, override_flags, select_rows
from gldfa_jax.ablation.table import write_table


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m gldfa_jax.ablation",
        description=__doc__.split("\n\n")[0],
        epilog="Any --config.FIELD=VALUE is passed on to every run.",
    )
    parser.add_argument("--set", required=True, help=f"one of {', '.join(SETS)}")
    parser.add_argument(
        "--base",
        action="append",
        help="config file (repeatable); default experiments/synthetic.py (table3: the partial configs)",
    )
    parser.add_argument("--workdir", default="runs/ablation")
    parser.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--rows", default="", help="comma-separated row names (default: all rows of the set)")
    parser.add_argument("--list", action="store_true", help="print the rows and their config switches, run nothing")
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table from finished runs")
    parser.add_argument("--verbose", action="store_true", help="show the trainer's output instead of logging it")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognised arguments {unknown}; only --config.FIELD=VALUE overrides are passed on")
    if args.set not in SETS:
        parser.error(f"--set {args.set!r} is not a known set; choose one of {', '.join(SETS)}")
    return args, rest


def main(argv=None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print(describe(args.set))
        return 0
    spec = SETS[args.set]
    try:
        bases = [resolve_config(b) for b in (args.base or list(spec.default_bases) or ["experiments/synthetic.py"])]
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        rows = [r.strip() for r in args.rows.split(",") if r.strip()]
        select_rows(spec, rows)
        for base in bases:
            check_config(base, list(extra))
            for row in spec.rows:
                check_config(base, override_flags(row.overrides))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.table_only:
        path = write_table(args.set, bases, args.workdir)
    else:
        try:
            run_set(args.set, bases, args.workdir, seeds, extra, rows, verbose=args.verbose)
        except RuntimeError as e:
            print(f"error: {e}\nRerun the same command to continue; finished runs are kept.", file=sys.stderr)
            return 1
        path = write_table(args.set, bases, args.workdir)
    with open(path) as f:
        print(f.read())
    print(f"Table written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
