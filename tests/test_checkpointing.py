"""Checkpoints: save/restore, keep-last-n + best, shape mismatch, and resume after SIGKILL mid-epoch."""

import json
import os
import signal
import time

import numpy as np
import pytest

from gldfa_jax import checkpointing

from helpers.cli import TINY, new_workdir, popen_cli, run_cli, trained_workdir


def fake_state(scale=1.0):
    return {
        "step": np.int32(3),
        "params": {"conv": {"kernel": scale * np.arange(6.0).reshape(2, 3)}},
        "opt_state": {"mu": {"conv": {"kernel": np.zeros((2, 3))}}},
        "rng": np.array([0, 7], np.uint32),
    }


def test_save_restore_keep_last_and_best(tmp_path):
    store = checkpointing.CheckpointStore(str(tmp_path), keep=2)
    for step in (2, 4, 6):
        store.save(
            fake_state(step),
            {"step": step, "epoch": step // 2, "steps_per_epoch": 2},
            best_map=50.0 + step if step == 4 else None,
        )
    store.wait()
    assert store.latest.all_steps() == [4, 6]
    assert store.best.all_steps() == [4] and store.best_map() == 54.0
    state, meta = checkpointing.restore(store.latest, fake_state())
    assert meta["step"] == 6
    np.testing.assert_array_equal(state["params"]["conv"]["kernel"], 6.0 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(state["rng"], [0, 7])
    best, _ = checkpointing.restore(os.path.join(str(tmp_path), "best", "4"), fake_state())  # a step folder
    np.testing.assert_array_equal(best["params"]["conv"]["kernel"], 4.0 * np.arange(6.0).reshape(2, 3))
    store.close()


def test_restore_shape_mismatch_names_the_parameter(tmp_path):
    store = checkpointing.CheckpointStore(str(tmp_path), keep=1)
    store.save(fake_state(), {"step": 1, "epoch": 0, "steps_per_epoch": 1})
    store.wait()
    other = fake_state()
    other["params"]["conv"]["kernel"] = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"params/conv/kernel.*\(2, 3\).*\(2, 4\)"):
        checkpointing.restore(store.latest, other)
    with pytest.raises(ValueError, match="does not exist"):
        checkpointing.restore(str(tmp_path / "nowhere"), other)
    store.close()


def test_sigkill_mid_epoch_then_resume_gives_the_same_final_metrics():
    reference, _ = trained_workdir()
    workdir = new_workdir("killed")
    log = os.path.join(new_workdir("."), "killed.log")
    proc = popen_cli(*TINY, "--workdir", workdir, log_path=log)
    mid_epoch = os.path.join(workdir, "checkpoints", "6")  # step 6 = epoch 1, step 2 of 4
    deadline = time.time() + 240
    while not os.path.isdir(mid_epoch) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, open(log).read()[-2000:]
    assert not os.path.exists(os.path.join(workdir, "results.json"))

    resumed = run_cli(*TINY, "--workdir", workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stderr
    with open(os.path.join(reference, "results.json")) as f, open(os.path.join(workdir, "results.json")) as g:
        assert json.load(f) == json.load(g)
