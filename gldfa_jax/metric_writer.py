"""Scalar metrics to `metrics.jsonl` and to a TensorBoard event file (written by tensorboardX, no TensorFlow), and
metrics.jsonl read back."""

import json
import os

import numpy as np
from tensorboardX import FileWriter
from tensorboardX.proto.summary_pb2 import Summary

FLUSH_SECS = 10  # how stale a live TensorBoard may be; tensorboardX's default is 120


def _drop_partial_line(path: str) -> None:
    """A process killed mid-write leaves a line without its newline; a resumed run must not append to it."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


class MetricWriter:
    """Appends {"step", "split", **scalars} lines to DIR/metrics.jsonl and `split/name` scalars to a new
    DIR/events.out.tfevents.* file (one per writer; its name ends with the process id).

    tensorboardX writes events from a background thread: they reach the disk within FLUSH_SECS, and all of them
    by close(); metrics.jsonl, flushed by flush(), is the record that resumption and the reports read.
    """

    def __init__(self, workdir: str):
        path = os.path.join(workdir, "metrics.jsonl")
        _drop_partial_line(path)
        self.jsonl = open(path, "a")
        # tensorboardX names the file by the second and host only: the pid keeps a quick restart in a file of its own.
        self.events = FileWriter(workdir, flush_secs=FLUSH_SECS, filename_suffix=f".{os.getpid()}")

    def write(self, step: int, split: str, scalars: dict) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        self.jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        # A Summary built here, not by SummaryWriter.add_scalar, which renames tags: "eval/global+lsa" would
        # become "eval/global_lsa".
        values = [Summary.Value(tag=f"{split}/{name}", simple_value=value) for name, value in scalars.items()]
        self.events.add_summary(Summary(value=values), int(step))

    def flush(self) -> None:
        self.jsonl.flush()
        self.events.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.events.close()


def read_metrics(metrics_jsonl_path: str) -> dict:
    """metrics.jsonl ({"step", "split", **scalars} per line, as MetricWriter writes it) -> {split: {"step": [S],
    name: [S]}} sorted by step. A step logged twice (a run resumed from an earlier checkpoint redoes it)
    keeps its last record."""
    by_split: dict = {}
    with open(metrics_jsonl_path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                split, step = record.pop("split"), int(record.pop("step"))
            except (ValueError, KeyError) as e:
                raise ValueError(
                    f"{metrics_jsonl_path} line {number} is not a metrics record ({{'step', 'split', ...}}): {e}"
                ) from e
            by_split.setdefault(split, {})[step] = record
    out = {}
    for split, steps in by_split.items():
        order = sorted(steps)
        names = sorted({k for s in order for k in steps[s]})
        out[split] = {"step": np.array(order)}
        for name in names:
            out[split][name] = np.array([steps[s].get(name, np.nan) for s in order], np.float64)
    return out
