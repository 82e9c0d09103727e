"""benchmarks.device_check: the --smoke run end to end (subprocess, transfer guard on), --only, the section runner,
the peak-FLOP table and the JAX / PyTorch table."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import pytest

from benchmarks import device_check, device_report, device_sections, device_torch

from helpers.cli import ENV, REPO
from helpers.data import CUHK03_SAMPLE

METRICS = {
    "train": {
        "images_per_s",
        "step_ms",
        "step_min_ms",
        "mfu",
        "compile_s",
        "compile_and_first_step_s",
        "gflop_per_image",
        "loss",
    },
    "torch": {"images_per_s", "step_ms", "step_min_ms", "mfu", "compile_s", "id_loss", "torch_peak_bytes"},
    "float16_run": {
        "steps",
        "skipped",
        "skipped_after_settling",
        "loss_scale",
        "losses",
        "nonfinite_params",
        "images_per_s",
        "compile_s",
    },
    "features": {"images", "images_per_s", "device_images_per_s", "compile_and_first_s", "compile_s"},
    "distance": {"seconds", "mega_pairs_per_s", "compile_and_warmup_s", "compile_s"},
    "eval": {"cold_s", "warm_s", "compile_s", "results"},
}
NOT_NUMBERS = {
    "mfu",  # no peak FLOP/s for a CPU
    "torch_peak_bytes",  # "n/a" without CUDA
    "losses",  # "first → last"
    "results",  # {mode: {"mAP", "rank1"}}
    "skipped",  # counts: 0 is a fine value
    "skipped_after_settling",
    "nonfinite_params",
}


def run_smoke(out, *args):
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.device_check", "--out", str(out), "--smoke", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_smoke_run_writes_a_complete_report(tmp_path):
    # A huge budget: on a loaded machine the smoke must still run every section. The float16 run trains on the
    # real CUHK03 sample when it is here, else on noise.
    data = CUHK03_SAMPLE if os.path.isdir(CUHK03_SAMPLE) else str(tmp_path / "absent")
    proc = run_smoke(tmp_path, "--budget-s", "100000", "--data", data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO GPU" in proc.stdout
    with open(tmp_path / "device_check.json") as f:
        report = json.load(f)
    env = report["environment"]
    assert (env["backend"], env["platform"], env["preset"], env["auto_dtype"]) == ("cpu", "cpu", "smoke", "float32")
    assert env["device_kind"] and env["date"] and env["preallocate"] == "false"
    assert all(env["versions"][name] for name in ("python", "jax", "jaxlib", "flax", "optax"))
    assert report["peak_bytes_in_use"] == "n/a"  # the CPU backend reports no device memory
    assert 0 < report["total_wall_s"] < report["budget_s"] and report["only"] is None
    sections = report["sections"]
    kinds = ["train", "torch", "torch", "eval", "float16_run", "torch", "features", "distance", "distance", "eval"]
    assert [s["kind"] for s in sections] == kinds
    torch_here = device_torch.version() is not None
    for s in sections:
        if s["kind"] == "torch" and not torch_here:
            assert s["status"] == "skipped" and "does not import" in s["error"], s
            continue
        if s["params"].get("variant", "").startswith("torch.compile"):
            assert s["status"] == "skipped" and "CUDA only" in s["error"], s  # no inductor build on a CPU
            continue
        assert s["status"] == "ok" and s["error"] is None, s
        assert set(s["metrics"]) == METRICS[s["kind"]], s
        numbers = {k: v for k, v in s["metrics"].items() if k not in NOT_NUMBERS and v is not None}
        assert all(math.isfinite(v) for v in numbers.values()), s
        assert all(v > 0 for k, v in numbers.items() if k != "compile_s"), s  # a first call can beat a noisy median
        assert s["wall_s"] > 0
    train, *_ = [s["metrics"] for s in sections if s["kind"] == "train"]
    assert train["mfu"] is None and train["gflop_per_image"] > 0 and train["compile_s"] > 0
    run = next(s for s in sections if s["kind"] == "float16_run")
    assert run["params"]["data"] == os.path.relpath(data, REPO) or "synthetic noise" in run["params"]["data"]
    m = run["metrics"]
    assert m["steps"] == device_check.PRESETS["smoke"].float16_steps and m["nonfinite_params"] == 0
    assert 0 <= m["skipped_after_settling"] <= m["skipped"] < m["steps"] and m["loss_scale"] >= 1
    market, msmt = [s["metrics"] for s in sections if s["kind"] == "eval"]
    assert market["warm_s"] > 0 and msmt["warm_s"] is None and msmt["compile_s"] is None  # MSMT17: cold only
    for results in (market["results"], msmt["results"]):
        assert set(results) >= {"global", "lsa", "global+lsa", "final"}
        assert all(0 <= r["mAP"] <= 100 and 0 <= r["rank1"] <= 100 for r in results.values())
    md = (tmp_path / "device_check.md").read_text()
    assert "No GPU" in md and md.count("| ok |") == sum(s["status"] == "ok" for s in sections)
    assert md.count("| compile s |") == len(device_report.KINDS) and md.count("| MFU |") == 2
    assert "| skipped: torch.compile is timed on CUDA only" in md or not torch_here
    if torch_here:  # the side by side: one row, JAX's float32 (the smoke's only dtype) against PyTorch's best
        (pair,) = report["side_by_side"]
        assert (pair["batch"], pair["jax_dtype"]) == (8, "float32") and pair["ratio"] > 0
        assert "## JAX / PyTorch, train img/s at the same batch" in md


def test_only_runs_the_named_kinds_and_rejects_others(tmp_path):
    proc = run_smoke(tmp_path, "--only", "distance")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "device_check.json") as f:
        report = json.load(f)
    assert report["only"] == ["distance"]
    assert [(s["kind"], s["status"]) for s in report["sections"]] == [("distance", "ok")] * 2
    assert "Sections: --only distance." in (tmp_path / "device_check.md").read_text()
    for bad in ("train,trian", ",", "eval,Train"):
        with pytest.raises(ValueError) as raised:
            device_check.parse_only(bad)
        assert repr(bad) in str(raised.value) and ", ".join(device_report.KINDS) in str(raised.value)
    assert device_check.parse_only(" train, torch ,eval") == ("train", "torch", "eval")


def test_peak_flops_by_device_kind_and_dtype():
    h100 = device_sections.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16")
    assert h100 == device_sections.peak_flops("NVIDIA H200", "float16") == pytest.approx(989.4e12)
    assert device_sections.peak_flops("NVIDIA H100 PCIe", "float32") == pytest.approx(378e12)  # TF32
    assert device_sections.peak_flops("NVIDIA H100 NVL", "bfloat16") == pytest.approx(835.5e12)
    assert device_sections.peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == pytest.approx(312e12)
    assert device_sections.peak_flops("Tesla T4", "float16") == pytest.approx(65e12)
    assert device_sections.peak_flops("Tesla T4", "bfloat16") is None  # no bfloat16 on a T4
    assert device_sections.peak_flops("NVIDIA L40S", "bfloat16") is None  # not an L4
    assert device_sections.peak_flops("cpu", "float32") is None


def test_sections_record_failures_and_skip_once_the_budget_is_spent():
    last_wall = {}

    def out_of_memory():
        raise MemoryError("RESOURCE_EXHAUSTED: out of memory\n| allocator detail")

    def must_not_run():
        raise AssertionError("a section past the budget ran")

    def cannot_run_here():
        raise device_torch.Skipped("torch.compile is timed on CUDA only")

    section = lambda name, kind, params, fn, estimate_s=0.0: device_check.Section(name, kind, params, fn, estimate_s)
    deadline = time.perf_counter() + 100
    run = lambda s, deadline=deadline: device_check.run_section(s, deadline, last_wall)
    failed = run(section("train a", "train", {"batch": 8}, out_of_memory))
    done = run(section("train b", "train", {"batch": 16}, lambda: {"images_per_s": 2.0}))
    unsupported = run(section("torch c", "torch", {"batch": 8}, cannot_run_here))
    too_long = run(section("torch d", "torch", {"batch": 8}, must_not_run, estimate_s=1000.0))
    last_wall["train"] = 50.0  # the next train section would end past a deadline 10 s away
    skipped = run(section("train c", "train", {"batch": 32}, must_not_run), time.perf_counter() + 10)
    late = run(section("features", "features", {}, must_not_run), time.perf_counter() - 1)
    assert (failed["status"], failed["metrics"]) == ("error", {})
    assert failed["error"] == "MemoryError: RESOURCE_EXHAUSTED: out of memory\n| allocator detail"
    assert (done["status"], done["metrics"]) == ("ok", {"images_per_s": 2.0})
    assert (unsupported["status"], unsupported["error"]) == ("skipped", "torch.compile is timed on CUDA only")
    assert too_long["status"] == "skipped" and "its estimate is 1000 s" in too_long["error"]
    assert skipped["status"] == "skipped" and "time budget" in skipped["error"] and skipped["wall_s"] == 0.0
    assert late["status"] == "skipped"  # the first of its kind, but the budget is gone
    report = {
        "environment": device_check.environment("smoke"),
        "config": "experiments/market.py",
        "sizes": dataclasses.asdict(device_check.PRESETS["smoke"]),
        "only": None,
        "budget_s": 100.0,
        "total_wall_s": 1.0,
        "peak_bytes_in_use": 3 * 2**30,
        "sections": [failed, done, unsupported, too_long, skipped, late],
    }
    md = device_report.markdown(report)
    assert "Peak device memory of JAX: 3.00 GiB" in md
    assert "| error: MemoryError: RESOURCE_EXHAUSTED: out of memory / allocator detail |" in md  # one row
    assert "| skipped: time budget" in md and "| skipped: torch.compile is timed on CUDA only |" in md
    assert "| 16 | — | 2.0 |" in md  # the row's own batch and img/s; no dtype given
    assert "JAX / PyTorch" not in md  # no PyTorch row ran


def test_side_by_side_takes_jax_bfloat16_and_the_best_pytorch_variant():
    def record(kind, params, rate, status="ok"):
        return {"kind": kind, "params": params, "status": status, "metrics": {"images_per_s": rate}}

    sections = [
        record("train", {"batch": 32, "dtype": "float32"}, 900.0),
        record("train", {"batch": 32, "dtype": "bfloat16"}, 2000.0),
        record("torch", {"batch": 32, "variant": "float32"}, 800.0),
        record("torch", {"batch": 32, "variant": "AMP bfloat16, channels_last"}, 1600.0),
        record("torch", {"batch": 128, "variant": "float32"}, 1000.0),  # no JAX row at 128: no pair
        record("torch", {"batch": 32, "variant": "torch.compile"}, 0.0, status="skipped"),
    ]
    (pair,) = device_report.side_by_side(sections)
    assert pair == {
        "batch": 32,
        "jax_dtype": "bfloat16",
        "jax_images_per_s": 2000.0,
        "torch_variant": "AMP bfloat16, channels_last",
        "torch_images_per_s": 1600.0,
        "ratio": 1.25,
    }


def test_pytorch_sections_skip_without_torch(monkeypatch):
    monkeypatch.setattr(device_torch, "version", lambda: None)
    sizes = device_check.PRESETS["smoke"]
    config = device_sections.batch_config(os.path.join(REPO, "experiments", "market.py"), sizes, 8, "float32")
    with pytest.raises(device_torch.Skipped, match="torch does not import here"):
        device_torch.time_train_steps(config, *sizes.image, device_torch.VARIANTS[0], sizes.steps)
