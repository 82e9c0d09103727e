"""Ablation runner: resume, table (mean ± std against a naive computation), bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gldfa_jax.ablation import runner, sets
from gldfa_jax.ablation import table as tables
from gldfa_jax.ablation.__main__ import main as ablation_main


def run_set(set_name, bases, workdir, seeds, **kw):
    runner.run_set(set_name, bases, workdir, seeds, **kw)
    return tables.write_table(set_name, bases, workdir)


ROWS = ["GL+LSA", "GLDFA-Net"]


class FakeTrainer:
    """Stands in for gldfa_jax.main: writes results.json whose numbers depend on the row and seed."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def __call__(self, base, workdir, flags, log_path, verbose=False):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("interrupted")
        self.calls.append((workdir, flags))
        seed = int([f for f in flags if f.startswith("--config.seed=")][0].split("=")[1])
        lsa = "--config.loss.center_weight=0.0" in flags
        value = lambda offset: 40.0 + offset + 3.0 * seed + (0.0 if lsa else 10.0)
        results = {
            mode: {"mAP": value(0), "rank1": value(20), "rank5": value(30), "rank10": value(35)}
            for mode in ("global", "lsa", "global+lsa")
        }
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f)


def _table_row(path, name):
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == name:
            return cells
    raise AssertionError(f"row {name} not in {path}")


def test_resume_and_table(tmp_path):
    work = str(tmp_path / "runs")
    first = FakeTrainer(fail_at=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_set("table2", ["experiments/synthetic.py"], work, [0, 1], rows=ROWS, trainer=first)
    assert len(first.calls) == 3
    again = FakeTrainer()
    table = run_set("table2", ["experiments/synthetic.py"], work, [0, 1], rows=ROWS, trainer=again)
    assert len(again.calls) == 1
    assert again.calls[0][0].endswith(os.path.join("gldfa_net", "seed1", "train"))
    # Everything is finished now: a third run trains nothing.
    third = FakeTrainer()
    run_set("table2", ["experiments/synthetic.py"], work, [0, 1], rows=ROWS, trainer=third)
    assert third.calls == []

    cells = _table_row(table, "GLDFA-Net")
    maps = [50.0, 53.0]  # seeds 0 and 1 of the fake trainer (no row override -> +10)
    assert cells[1] == f"{np.mean(maps):.1f} ± {np.std(maps, ddof=1):.1f}"
    assert cells[5] == "0,1" and cells[6] == "global+lsa"
    assert cells[-4:] == ["86.1", "94.8", "97.2", "98.4"]  # the paper's Market-1501 row
    text = open(table).read()
    assert "paper Market-1501 (not comparable) mAP" in text
    record = json.load(open(os.path.join(work, "table2", "gl_lsa", "seed0", "row.json")))
    assert "--config.loss.use_lsa=True" in record["command"] and record["seed"] == 0

    # The full table lists the rows not run yet as such, never with numbers.
    full = tables.write_table("table2", ["experiments/synthetic.py"], work)
    assert _table_row(full, "ResNet101")[1:5] == ["not yet run"] * 4
    assert _table_row(full, "GL+LSA")[1] == f"{np.mean([40.0, 43.0]):.1f} ± {np.std([40.0, 43.0], ddof=1):.1f}"


def test_paper_numbers_side_by_side_on_market(tmp_path):
    path = tables.write_table("table2", ["experiments/market.py"], str(tmp_path))
    header = open(path).read()
    assert "paper Market-1501 mAP" in header and "not comparable" not in header
    table3 = tables.write_table(
        "table3", ["experiments/partial_market.py", "experiments/partial_duke.py"], str(tmp_path)
    )
    text = open(table3).read()
    assert "paper Partial-Duke R-1" in text
    assert _table_row(table3, "GLDFA-Net")[-2:] == ["54.6", "72.4"]


def test_sweep_rows_and_plot(tmp_path):
    assert [r.overrides["model.num_stripes"] for r in sets.FIG6_K.rows] == [1, 2, 4, 6, 8, 10]
    assert [r.overrides["lsa.window"] for r in sets.FIG6_W.rows] == [1, 2, 4, 6, 8]
    trainer = FakeTrainer()
    run_set("fig6_w", ["experiments/synthetic.py"], str(tmp_path), [0], rows=["W=1", "W=4"], trainer=trainer)
    assert any("--config.lsa.window=4" in flags for _, flags in trainer.calls)
    assert os.path.getsize(tmp_path / "fig6_w" / "fig6_w_synthetic.png") > 0


def test_cli_bad_input(capsys, tmp_path):
    assert ablation_main(["--set", "table2", "--base", "experiments/markett.py", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "market.py" in err and "experiments/duke.py" in err
    assert "cuhk03_common" not in err  # a helper module, not a config
    market = ["--set", "table2", "--base", "experiments/market.py", "--workdir", str(tmp_path)]
    assert ablation_main([*market, "--config.train.epochz=1"]) == 2
    err = capsys.readouterr().err
    assert "--config.train.epochz" in err and "Did you mean \"epochs\"" in err
    assert ablation_main([*market, "--config.train.epochs=many"]) == 2  # config_flags checks the type too
    assert "--config.train.epochs=many" in capsys.readouterr().err
    assert ablation_main(["--set", "table2", "--base", "experiments/market.py", "--rows", "GL+LSB"]) == 2
    with pytest.raises(SystemExit):
        ablation_main(["--set", "table9"])
    assert ablation_main(["--set", "fig6_k", "--list"]) == 0
    assert "--config.model.num_stripes=10" in capsys.readouterr().out


def test_one_real_row_through_the_trainer(tmp_path, capsys):
    """One Table 2 row trained for 2 steps by `python -m gldfa_jax.main` in a subprocess: the row's config
    switches are accepted by the trainer's flags and its results land in the table; a rerun trains nothing."""
    tiny = [
        f"--config.data.root={tmp_path / 'synthetic'}",
        "--config.data.generate.identities=12",
        "--config.data.height=64",
        "--config.data.width=32",
        "--config.data.num_identities=4",
        "--config.model.width_multiplier=0.125",
        "--config.train.epochs=1",
        "--config.train.steps_per_epoch=2",
        "--config.eval.rerank=False",
        "--config.eval.modes=('lsa',)",
    ]
    args = [
        "--set",
        "table2",
        "--base",
        "experiments/synthetic.py",
        "--workdir",
        str(tmp_path / "runs"),
        "--rows",
        "L(Local+TH)",
        *tiny,
    ]
    assert ablation_main(args) == 0, capsys.readouterr().err
    record = json.load(open(tmp_path / "runs" / "table2" / "l_local_th" / "seed0" / "row.json"))
    assert "--config.loss.use_lsa=False" in record["command"] and "--config.lsa.window=1" in record["command"]
    assert set(record["results"]["lsa"]) == {"mAP", "rank1", "rank5", "rank10"}
    cells = _table_row(tmp_path / "runs" / "table2" / "table2.md", "L(Local+TH)")
    assert cells[1] == f"{record['results']['lsa']['mAP']:.1f}"
    capsys.readouterr()
    assert ablation_main(args) == 0
    assert "1 already finished, 0 to do" in capsys.readouterr().out


def test_table_warns_when_the_base_config_changed_between_runs(tmp_path):
    """The runner fingerprints the config each run actually used (its checkpoints/config.json)."""
    epochs = {"value": 20}

    class Trainer(FakeTrainer):
        def __call__(self, base, workdir, flags, log_path, verbose=False):
            super().__call__(base, workdir, flags, log_path, verbose)
            os.makedirs(os.path.join(workdir, "checkpoints"))
            overrides = dict(f[len("--config.") :].split("=", 1) for f in flags)
            with open(os.path.join(workdir, "checkpoints", "config.json"), "w") as f:
                json.dump(
                    {
                        "seed": int(overrides["seed"]),
                        "train": {"epochs": epochs["value"]},
                        "loss": {"center_weight": float(overrides.get("loss.center_weight", 0.05))},
                    },
                    f,
                )

    work = str(tmp_path)
    table = run_set("table2", ["experiments/synthetic.py"], work, [0, 1], rows=ROWS, trainer=Trainer())
    assert "Warning" not in open(table).read()  # seeds and row switches do not count as changes
    epochs["value"] = 40
    table = run_set("table2", ["experiments/synthetic.py"], work, [2], rows=["GLDFA-Net"], trainer=Trainer())
    text = open(table).read()
    assert "different base configs" in text and "GLDFA-Net seed 2" in text


def test_runs_claimed_by_a_live_process_are_skipped(tmp_path):
    """Two runner processes may share a workdir: a run claimed by a live process is not started twice, a claim
    left by a dead process is taken over."""
    from gldfa_jax.ablation.runner import claim

    out = str(tmp_path / "row" / "seed0")
    assert claim(out) and claim(out)  # ours, and still ours
    with open(os.path.join(out, ".claim"), "w") as f:
        f.write("1")  # pid 1 is alive and is not us
    assert not claim(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(out, ".claim"), "w") as f:
        f.write(str(dead.pid))
    assert claim(out)


def test_row_names_can_be_selected_with_rows():
    """--rows splits at commas, so a row name with a comma could never be chosen."""
    for name, spec in sets.SETS.items():
        for row in spec.rows:
            assert "," not in row.name, (name, row.name)
            assert sets.select_rows(spec, [row.name]) == [row]


def test_row_switches_override_flags_given_to_every_run(tmp_path):
    trainer = FakeTrainer()
    flags = ["--config.model.pretrained=weights.safetensors"]
    runner.run_set("imagenet", ["experiments/cuhk03_real_imagenet.py"], str(tmp_path), [0], flags, trainer=trainer)
    scratch = [f for workdir, f in trainer.calls if "from_scratch" in workdir]
    assert len(scratch) == 1 and scratch[0][-1] == "--config.model.pretrained="


def test_table_shows_a_dash_for_modes_a_row_does_not_have(tmp_path):
    class GlobalOnly(FakeTrainer):
        def __call__(self, base, workdir, flags, log_path, verbose=False):
            super().__call__(base, workdir, flags, log_path, verbose)
            if "--config.model.branches=global" in flags:  # a global-branch model has no lsa distance
                path = os.path.join(workdir, "results.json")
                results = json.load(open(path))
                json.dump({"global": results["global"]}, open(path, "w"))

    rows = ["ImageNet init (recipe)", "ImageNet init: global branch only"]
    base = ["experiments/cuhk03_real_imagenet.py"]
    table = run_set("imagenet", base, str(tmp_path), [0, 1], rows=rows, trainer=GlobalOnly())
    cells = _table_row(table, "ImageNet init: global branch only")
    assert cells[1] == "51.5 ± 2.1" and cells[2:4] == ["—", "—"]
    assert _table_row(table, "ImageNet init (recipe)")[2] == "51.5 ± 2.1"
