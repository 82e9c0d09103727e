"""MetricWriter: metrics.jsonl lines, and event files that TensorBoard's own schema decodes."""

import json
import os

import numpy as np

from gldfa_jax.metric_writer import MetricWriter

from helpers.events import read_events


def event_files(workdir) -> list:
    return sorted(n for n in os.listdir(workdir) if n.startswith("events.out.tfevents."))


def test_scalars_reach_metrics_jsonl_and_a_tensorboard_event_file(tmp_path):
    writer = MetricWriter(str(tmp_path))
    writer.write(10, "train", {"total": 2.5, "lr": 3.5e-4})
    writer.write(20, "eval/global+lsa", {"mAP": 41.25})
    writer.flush()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [
        {"step": 10, "split": "train", "total": 2.5, "lr": 3.5e-4},
        {"step": 20, "split": "eval/global+lsa", "mAP": 41.25},
    ]
    writer.close()
    (name,) = event_files(tmp_path)
    assert name.endswith(f".{os.getpid()}")  # one file per launch, told apart by the process id
    events = read_events(tmp_path / name)
    assert events[0].file_version == "brain.Event:2"
    scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
    # simple_value is a float32 field: 3.5e-4 comes back rounded to it.
    assert scalars == [
        (10, "train/total", 2.5),
        (10, "train/lr", float(np.float32(3.5e-4))),
        (20, "eval/global+lsa/mAP", 41.25),
    ]  # tags exactly as in metrics.jsonl
    assert all(e.wall_time > 0 for e in events)


def test_a_second_writer_appends_to_jsonl_and_starts_a_new_event_file(tmp_path, monkeypatch):
    """A resumed run adds to metrics.jsonl; its events go to a file of its own (a restart within the same
    second differs only by the process id at the end of the name)."""
    first = MetricWriter(str(tmp_path))
    first.write(1, "train", {"total": 2.0})
    first.close()
    monkeypatch.setattr(os, "getpid", lambda: 99999999)
    second = MetricWriter(str(tmp_path))
    second.write(2, "train", {"total": 1.0})
    second.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    names = event_files(tmp_path)
    assert len(names) == 2 and any(n.endswith(".99999999") for n in names)
    steps = sorted(e.step for n in names for e in read_events(tmp_path / n) if e.summary.value)
    assert steps == [1, 2]


def test_a_line_cut_by_a_killed_process_is_dropped(tmp_path):
    """A process killed mid-write leaves a partial last line; the resumed run's writer drops it, not appends to it."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "total": 2.0}\n{"step": 2, "spl')
    writer = MetricWriter(str(tmp_path))
    writer.write(2, "train", {"total": 1.5})
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "split": "train", "total": 2.0}, {"step": 2, "split": "train", "total": 1.5}]
