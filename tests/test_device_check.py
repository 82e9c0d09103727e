"""benchmarks.device_check: the --smoke run end to end (subprocess, transfer guard on) and its section runner."""

import dataclasses
import json
import math
import subprocess
import sys
import time

from cli_runs import ENV, REPO

from benchmarks import device_check

METRICS = {
    "train": {"images_per_s", "step_ms", "step_min_ms", "compile_and_first_step_s", "loss"},
    "features": {"images", "images_per_s", "device_images_per_s", "compile_and_first_s"},
    "distance": {"seconds", "mega_pairs_per_s", "compile_and_warmup_s"},
    "eval": {"mAP", "rank1", "rerank_mAP", "rerank_rank1"},
}


def test_smoke_run_writes_a_complete_report(tmp_path):
    # A huge budget: on a loaded machine the smoke must still run every section.
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", "--out", str(tmp_path), "--smoke", "--budget-s", "100000"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO GPU" in proc.stdout
    with open(tmp_path / "device_check.json") as f:
        report = json.load(f)
    env = report["environment"]
    assert (env["backend"], env["platform"], env["preset"], env["auto_dtype"]) == ("cpu", "cpu", "smoke", "float32")
    assert env["device_kind"] and env["date"]
    assert all(env["versions"][name] for name in ("python", "jax", "jaxlib", "flax", "optax"))
    assert report["peak_bytes_in_use"] == "n/a"  # the CPU backend reports no device memory
    assert 0 < report["total_wall_s"] < report["budget_s"]
    sections = report["sections"]
    assert [s["kind"] for s in sections] == ["train", "features", "distance", "distance"] + ["eval"] * 4
    for s in sections:
        assert s["status"] == "ok" and s["error"] is None, s
        assert set(s["metrics"]) == METRICS[s["kind"]], s
        assert all(math.isfinite(v) and v > 0 for v in s["metrics"].values()), s
        assert s["wall_s"] > 0
    md = (tmp_path / "device_check.md").read_text()
    assert "No GPU" in md and md.count("| ok |") == len(sections)


def test_sections_record_failures_and_skip_once_the_budget_is_spent():
    last_wall = {}

    def out_of_memory():
        raise MemoryError("RESOURCE_EXHAUSTED: out of memory\n| allocator detail")

    def must_not_run():
        raise AssertionError("a section past the budget ran")

    deadline = time.perf_counter() + 100
    failed = device_check.run_section("train a", "train", {"batch": 8}, out_of_memory, deadline, last_wall)
    done = device_check.run_section(
        "train b", "train", {"batch": 16}, lambda: {"images_per_s": 2.0}, deadline, last_wall
    )
    last_wall["train"] = 50.0  # the next train section would end past a deadline 10 s away
    skipped = device_check.run_section(
        "train c", "train", {"batch": 32}, must_not_run, time.perf_counter() + 10, last_wall
    )
    late = device_check.run_section("features", "features", {}, must_not_run, time.perf_counter() - 1, last_wall)
    assert (failed["status"], failed["metrics"]) == ("error", {})
    assert failed["error"] == "MemoryError: RESOURCE_EXHAUSTED: out of memory\n| allocator detail"
    assert (done["status"], done["metrics"]) == ("ok", {"images_per_s": 2.0})
    assert skipped["status"] == "skipped" and "time budget" in skipped["error"] and skipped["wall_s"] == 0.0
    assert late["status"] == "skipped"  # the first of its kind, but the budget is gone
    report = {
        "environment": device_check.environment("smoke"),
        "config": "experiments/market.py",
        "sizes": dataclasses.asdict(device_check.PRESETS["smoke"]),
        "budget_s": 100.0,
        "total_wall_s": 1.0,
        "peak_bytes_in_use": 3 * 2**30,
        "sections": [failed, done, skipped, late],
    }
    md = device_check.markdown(report)
    assert "Peak device memory: 3.00 GiB" in md
    assert "| error: MemoryError: RESOURCE_EXHAUSTED: out of memory / allocator detail |" in md  # one row
    assert "| skipped: time budget" in md
    assert "| 16 | - | 2.0 |" in md  # the row's own batch and img/s; no dtype given
