"""benchmarks.pack_crops (layout, names, never enlarged) and benchmarks.imagenet_study's plan and tables, without
training: the GPU study itself runs on a device machine (docs/benchmarks.md)."""

import json
import os

import numpy as np
from PIL import Image

from benchmarks import imagenet_study as study
from benchmarks import pack_crops

# (folder, name, width, height): one crop larger than 384×128 on both axes, one only taller, one PNG.
CROPS = (
    ("bounding_box_train", "0001_c1_00.jpg", 40, 100),
    ("bounding_box_train", "0001_c2_01.jpg", 150, 500),
    ("bounding_box_train", "0002_c1_00.png", 100, 390),
    ("bounding_box_train", "0002_c2_03.jpg", 98, 283),
    ("query", "0003_c1_00.jpg", 60, 150),
    ("bounding_box_test", "0003_c2_00.jpg", 70, 160),
    ("bounding_box_test", "0000_c1_00.jpg", 70, 160),  # a distractor, kept as it is
)


def write_market(root):
    rng = np.random.default_rng(0)
    for folder, name, width, height in CROPS:
        os.makedirs(root / folder, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(root / folder / name)
    (root / "README.txt").write_text("terms of use")


def test_pack_keeps_layout_and_names_and_never_enlarges(tmp_path, capsys):
    write_market(tmp_path / "src")
    out = tmp_path / "packed"
    assert pack_crops.main(["--src", str(tmp_path / "src"), "--out", str(out), "--quality", "70"]) == 0
    assert "7 images" in capsys.readouterr().out
    expected = {
        ("bounding_box_train", "0001_c1_00.jpg"): (40, 100),  # smaller than 384×128: as it was
        ("bounding_box_train", "0001_c2_01.jpg"): (128, 384),
        ("bounding_box_train", "0002_c1_00.jpg"): (100, 384),  # the PNG, as a .jpg of the same pid and camera
        ("bounding_box_train", "0002_c2_03.jpg"): (98, 283),
        ("query", "0003_c1_00.jpg"): (60, 150),
        ("bounding_box_test", "0003_c2_00.jpg"): (70, 160),
        ("bounding_box_test", "0000_c1_00.jpg"): (70, 160),
    }
    found = {(f, n) for f in ("bounding_box_train", "query", "bounding_box_test") for n in os.listdir(out / f)}
    assert found == set(expected)
    for (folder, name), size in expected.items():
        with Image.open(out / folder / name) as img:
            assert (img.format, img.size) == ("JPEG", size)
    assert pack_crops.identities_and_cameras(str(tmp_path / "src")) == pack_crops.identities_and_cameras(str(out))
    assert (out / "README.txt").read_text() == "terms of use" and (out / "PACKED.txt").exists()
    # A second pack into the same folder is refused rather than mixed with the first.
    assert pack_crops.main(["--src", str(tmp_path / "src"), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_pack_sizes():
    assert pack_crops.packed_size((98, 283), (384, 128)) == (98, 283)
    assert pack_crops.packed_size((150, 500), (384, 128)) == (128, 384)
    assert pack_crops.packed_size((150, 100), (256, 128)) == (128, 100)
    assert pack_crops.parse_size("256x128") == (256, 128)


def test_plan_priority_and_schedule():
    runs = study.plan([(384, 128), (256, 128)], [0, 1])
    head = [(r.size_name, r.row.name, r.seed) for r in runs[:5]]
    assert head == [("384x128", row.name, 0) for row in study.ROWS] + [("384x128", study.ROWS[0].name, 1)]
    assert runs[-1].size_name == "256x128" and len(runs) == 2 * 2 * len(study.ROWS)
    assert study.schedule(15) == (1, (10,)) and study.schedule(20) == (1, (13,)) and study.schedule(1) == (0, ())
    settings = study.Settings("data/x", "w.safetensors", epochs=1, steps_per_epoch=2, smoke=True)
    resnet = study.config_flags(study.Run((64, 32), study.ROWS[1], 3), settings)
    assert resnet.index("--config.model.pretrained=") > resnet.index("--config.model.pretrained=w.safetensors")
    assert resnet[-2:] == ["--config.model.depth=18", "--config.model.width_multiplier=0.125"]
    assert "--config.seed=3" in resnet and "--config.optim.decay_epochs=()" in resnet


def fake_run(workdir, run, mean_map):
    out = study.run_dir(str(workdir), run)
    os.makedirs(out)
    results = {"global": {"mAP": mean_map - 5, "rank1": 50.0}}
    if run.row.name != "ImageNet init: global branch only":
        results |= {"lsa": {"mAP": mean_map - 10, "rank1": 40.0}, "global+lsa": {"mAP": mean_map, "rank1": 70.0}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        rates = [1, 9, 11, 10]  # the first window holds the compile
        f.writelines(json.dumps({"step": i, "split": "train", "images_per_s": v}) + "\n" for i, v in enumerate(rates))
    record = {"size": run.size_name, "row": run.row.name, "seed": run.seed, "status": "ok", "wall_s": 100.0 + run.seed}
    return {**record, **study.read_results(os.path.join(out, "results.json"), out)}


def test_tables_mean_and_sample_std(tmp_path):
    recipe, global_only = study.ROWS[0], study.ROWS[2]
    records = []
    for seed, value in enumerate([60.0, 62.0, 64.0]):
        records.append(fake_run(tmp_path, study.Run((384, 128), recipe, seed), value))
    records.append(fake_run(tmp_path, study.Run((384, 128), global_only, 0), 50.0))
    records.append({"size": "256x128", "row": recipe.name, "seed": 0, "status": "skipped (budget: 250 s + ~100 s)"})
    assert records[0]["images_per_s"] == 10.0  # the median after the first (compiling) window
    rows = study.summary(records)
    assert [(r["row"], r["seeds"]) for r in rows] == [(recipe.name, [0, 1, 2]), (global_only.name, [0])]
    assert rows[0]["global+lsa mAP"] == "62.0 ± 2.0" and rows[0]["lsa mAP"] == "52.0 ± 2.0"
    assert rows[0]["global+lsa R-1"] == "70.0 ± 0.0"
    assert rows[1]["global mAP"] == "45.0" and rows[1]["global+lsa mAP"] == "—"
    assert study.expected_wall(study.Run((384, 128), recipe, 3), records) == 101.0  # its own row's seeds
    assert study.expected_wall(study.Run((384, 128), study.ROWS[1], 0), records) == 102.0  # else the longest

    report = {
        "created": "now",
        "smoke": False,
        "environment": {"device": "NVIDIA H200"},
        "schedule": "20 epochs",
        "spent_s": 400.0,
        "budget_s": 240.0,
        "records": records,
    }
    study.write_report(str(tmp_path), report)
    saved = json.loads((tmp_path / "imagenet_study.json").read_text())
    assert saved["summary"] == rows and len(saved["records"]) == 5
    md = (tmp_path / "imagenet_study.md").read_text()
    assert "| 384x128 | ImageNet init (recipe) | 0,1,2 | 57.0 ± 2.0 | 52.0 ± 2.0 | 62.0 ± 2.0 | 70.0 ± 0.0 |" in md
    assert "skipped (budget" in md


def test_skip_reason():
    limits = {"budget": 240.0, "deadline": 280.0}
    assert study.skip_reason(0, 0.0, 0.0, 0, limits) == ""
    assert study.skip_reason(1, 100.0, 130.0, 0, limits) == ""
    assert study.skip_reason(2, 230.0, 100.0, 0, limits).startswith("budget")
    assert study.skip_reason(2, 230.0, 100.0, 0, {"budget": 0, "deadline": 280.0}).startswith("deadline")
    assert study.skip_reason(0, 0.0, 0.0, 1, limits) == "--start-at"


def test_main_skips_without_training(tmp_path):
    (tmp_path / "data" / "bounding_box_train").mkdir(parents=True)
    (tmp_path / "w.safetensors").write_bytes(b"")
    argv = ["--data", str(tmp_path / "data"), "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path)]
    assert study.main([*argv, "--workdir", str(tmp_path / "runs"), "--start-at", "99", "--seeds", "0,1"]) == 0
    saved = json.loads((tmp_path / "imagenet_study.json").read_text())
    assert len(saved["plan"]) == 2 * 2 * len(study.ROWS)
    assert {r["status"] for r in saved["records"]} == {"skipped (--start-at)"}
    assert study.main([*argv[:1], str(tmp_path / "absent"), *argv[2:]]) == 2
