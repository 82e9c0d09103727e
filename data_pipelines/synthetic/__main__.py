"""``python -m data_pipelines.synthetic --out DIR ...``: writes a synthetic world and prints its summary."""

from __future__ import annotations

import argparse
import sys

from data_pipelines import synthetic
from data_pipelines.datasets import get_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_pipelines.synthetic", description=synthetic.__doc__.split("\n")[0]
    )
    ap.add_argument("--out", required=True, help="folder to write (Market-1501 layout)")
    ap.add_argument(
        "--preset",
        choices=sorted(synthetic.PRESETS),
        default="default",
        help="world size: default (150 identities, 4 cameras, ~1,700 images) or msmt17 (MSMT17's "
        "split sizes, 15 cameras, ~126k images); the options below override it",
    )
    ap.add_argument("--identities", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cameras", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--width", type=int)
    ap.add_argument("--misalign-rate", type=float)
    ap.add_argument("--max-shift", type=float)
    ap.add_argument("--occlusion-rate", type=float)
    ap.add_argument("--workers", type=int, help="render processes (default: one per CPU); the output is the same")
    ap.add_argument("--overwrite", action="store_true", help="replace a dataset this tool wrote before")
    a = ap.parse_args(argv)
    try:
        synthetic.generate(
            a.out,
            identities=a.identities,
            seed=a.seed,
            overwrite=a.overwrite,
            preset=a.preset,
            workers=a.workers,
            cameras=a.cameras,
            height=a.height,
            width=a.width,
            misalign_rate=a.misalign_rate,
            max_shift=a.max_shift,
            occlusion_rate=a.occlusion_rate,
        )
    except ValueError as e:
        ap.error(str(e))
    print(get_dataset("market_layout", a.out).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
