"""Peak host memory of a whole command: run it as a child and sample the resident set of its process tree.

    python -m benchmarks.peak_rss -- python -m gldfa_jax.main --config experiments/msmt17.py ...

Prints the command's exit status, wall time and the peak of the summed VmRSS of every process in the tree
(the command, its threads' children and worker processes), sampled every 50 ms from /proc. Page-cache pages
of files the command reads are not counted: the kernel reclaims them under pressure.
"""

import argparse
import datetime
import platform
import shlex
import subprocess
import sys

from benchmarks.data_memory import GB, TreePeakMemory


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to measure (after --)")
    a = ap.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("give the command to measure after --, e.g. -- python -m gldfa_jax.main --config ...")
    with TreePeakMemory() as m:
        rc = subprocess.call(command)
    print(
        f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.machine()}, "
        f"python {platform.python_version()}\n"
    )
    peak_at = datetime.datetime.fromtimestamp(m.top_at, datetime.timezone.utc)
    print(
        "| command | exit status | wall (s) | peak RSS, process tree (GB) | peak at (UTC) |\n|---|---:|---:|---:|---|"
    )
    print(f"| `{shlex.join(command)}` | {rc} | {m.seconds:.0f} | {(m.start + m.peak) / GB:.2f} | {peak_at:%H:%M:%S} |")
    return rc


if __name__ == "__main__":
    sys.exit(main())
