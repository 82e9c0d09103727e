"""CLI end to end on the tiny CUHK03-sample config: outputs, eval reproducing training, and bad input."""

import json
import os
import shutil

import pytest

from helpers.cli import ROOT, TINY, new_workdir, run_cli, trained_workdir
from helpers.events import read_events

MODES = ("global", "lsa", "global+lsa")
EVAL_REPORTS = ("retrieval_grid.png", "alignment.png", "cmc.png")


def assert_reports(workdir, names):
    for name in names:
        with open(os.path.join(workdir, "reports", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_train_writes_results_metrics_events_and_checkpoints():
    workdir, proc = trained_workdir()
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    # eval.rerank_modes: the paper's inference distance alone is re-ranked.
    assert set(MODES) <= set(results) and [m for m in results if "+rerank" in m] == ["global+lsa+rerank"]
    for r in results.values():
        assert set(r) == {"mAP", "rank1", "rank5", "rank10"}
        assert 0.0 <= r["mAP"] <= 100.0 and r["rank1"] <= r["rank5"] <= r["rank10"] <= 100.0
    assert "global+lsa" in proc.stdout and "mAP" in proc.stdout  # the printed table
    assert "local device(s)" in proc.stderr
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    train_lines = [m for m in lines if m["split"] == "train"]
    assert train_lines[-1]["step"] == 12 and {"total", "id", "lr", "images_per_s"} <= set(train_lines[-1])
    assert any(m["split"] == "eval/global+lsa" for m in lines)
    events = [n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")]
    records = read_events(os.path.join(workdir, events[0]))
    assert records[0].file_version == "brain.Event:2"
    scalars = {(e.step, v.tag) for e in records for v in e.summary.value}
    assert (12, "train/total") in scalars and any(tag == "eval/global+lsa/mAP" for _, tag in scalars)
    assert os.path.exists(os.path.join(workdir, "checkpoints", "config.json"))
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())[-1] == 12
    assert_reports(workdir, EVAL_REPORTS + ("training_curves.png",))  # written after the final evaluation


def test_eval_of_the_checkpoint_reproduces_training_numbers():
    workdir, _ = trained_workdir()
    eval_dir = new_workdir("eval")
    proc = run_cli(*TINY, "--workdir", eval_dir, "--mode", "eval", "--checkpoint", os.path.join(workdir, "checkpoints"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "results.json")) as f, open(os.path.join(eval_dir, "results.json")) as g:
        assert json.load(f) == json.load(g)
    assert_reports(eval_dir, EVAL_REPORTS)


def test_tfds_source_trains_and_evaluates_like_the_folder():
    """data.source="tfds" prepares the TFDS copy of data.root on first use; its pixels, labels and order are the
    folder's, so the same run gives the same results.json."""
    pytest.importorskip("tensorflow_datasets")
    workdir, _ = trained_workdir()
    tfds_run, tfds_dir = new_workdir("tfds_run"), new_workdir("tfds_copies")
    proc = run_cli(*TINY, "--workdir", tfds_run, "--config.data.source=tfds", f"--config.data.tfds_dir={tfds_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preparing the TFDS copy" in proc.stderr and os.listdir(tfds_dir)
    with open(os.path.join(workdir, "results.json")) as f, open(os.path.join(tfds_run, "results.json")) as g:
        assert json.load(f) == json.load(g)


def test_cross_domain_eval_on_a_test_only_dataset():
    """Train on one dataset, evaluate on another that has only query/ and bounding_box_test/:
    the classifier's size comes from the checkpoint; training on such a folder fails with a clear message."""
    from helpers.cli import DATA_ROOT

    workdir, _ = trained_workdir()
    other = os.path.join(ROOT, "test_only")
    for folder, keep in (("query", 12), ("bounding_box_test", 40)):  # a different, smaller test set
        os.makedirs(os.path.join(other, folder), exist_ok=True)
        for name in sorted(os.listdir(os.path.join(DATA_ROOT, folder)))[:keep]:
            shutil.copy(os.path.join(DATA_ROOT, folder, name), os.path.join(other, folder, name))
    eval_dir = new_workdir("cross_domain")
    proc = run_cli(
        *TINY, "--workdir", eval_dir, "--mode", "eval", "--checkpoint", workdir, f"--config.data.root={other}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(eval_dir, "results.json")) as f, open(os.path.join(workdir, "results.json")) as g:
        results, trained = json.load(f), json.load(g)
    assert set(results) == set(trained) and results != trained  # scored on the other gallery
    assert_reports(eval_dir, EVAL_REPORTS)
    proc = run_cli(*TINY, "--workdir", new_workdir("train_on_test_only"), f"--config.data.root={other}")
    _assert_clean_failure(proc, "no training split", "--mode eval")


def _assert_clean_failure(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def test_unknown_config_key_lists_close_matches():
    proc = run_cli(*TINY, "--workdir", new_workdir("typo"), "--config.train.epoch=2")
    _assert_clean_failure(proc, "epochs")


def test_missing_config_file_lists_available_configs():
    proc = run_cli("--config", "experiments/no_such.py", "--workdir", new_workdir("nocfg"))
    _assert_clean_failure(proc, "synthetic.py", "market.py")


def test_missing_data_root_explains_the_layout():
    proc = run_cli(
        "--config",
        "experiments/market.py",
        "--workdir",
        new_workdir("nodata"),
        "--config.data.root=/nonexistent/market1501",
    )
    _assert_clean_failure(proc, "bounding_box_train", "experiments/synthetic.py")


def test_unwritable_workdir_fails_before_training():
    blocker = os.path.join(ROOT, "a_file")
    open(blocker, "w").close()
    proc = run_cli(*TINY, "--workdir", os.path.join(blocker, "run"))
    _assert_clean_failure(proc, "not writable")
    assert "decoding" not in proc.stderr  # nothing was loaded


def test_checkpoint_of_another_model_names_the_parameter():
    workdir, _ = trained_workdir()
    proc = run_cli(
        *TINY,
        "--config.model.embed_dim=32",
        "--workdir",
        new_workdir("mismatch"),
        "--mode",
        "eval",
        "--checkpoint",
        os.path.join(workdir, "checkpoints"),
    )
    _assert_clean_failure(proc, "params/", "shape")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint():
    workdir, _ = trained_workdir()
    copy = new_workdir("nonfinite")
    shutil.copytree(workdir, copy)
    proc = run_cli(*TINY, "--workdir", copy, "--config.train.epochs=4", "--config.optim.lr=1e38")
    _assert_clean_failure(proc, "non-finite")
    steps = sorted(int(s) for s in os.listdir(os.path.join(copy, "checkpoints")) if s.isdigit())
    assert steps[-1] == 12  # resumed from 12; nothing written after the loss blew up


def test_compilation_cache_dir_sets_jax_cache(tmp_path):
    import jax
    import pytest

    from gldfa_jax import main

    before = jax.config.jax_compilation_cache_dir
    try:
        main.use_compilation_cache("")  # off: jax's own setting stays
        assert jax.config.jax_compilation_cache_dir == before
        main.use_compilation_cache(str(tmp_path / "xla_cache"))
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla_cache")
        assert (tmp_path / "xla_cache").is_dir()
        with pytest.raises(main.UsageError, match="compilation_cache_dir"):
            main.use_compilation_cache(None)
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
