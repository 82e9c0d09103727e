"""Retrieval on a folder with a tiny trained checkpoint: rankings against a naive global + LSA distance,
the gallery feature cache, bad input."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gldfa_jax import checkpointing, retrieve


def tiny_synthetic_config(root):
    """experiments/synthetic.py shrunk to a few training steps on a 12-identity world."""
    from experiments import synthetic

    c = synthetic.get_config()
    c.data.root = root
    c.data.generate.identities = 12
    c.data.height, c.data.width = 64, 32
    c.data.num_identities, c.data.num_instances = 4, 4
    c.model.width_multiplier = 0.125
    c.train.epochs, c.train.steps_per_epoch = 1, 2
    c.train.eval_every = c.train.checkpoint_every = 1
    c.eval.rerank = False
    c.eval.batch_size = 64
    return c


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from gldfa_jax import main

    base = tmp_path_factory.mktemp("tiny_run")
    config = tiny_synthetic_config(str(base / "synthetic"))
    main.run(config, str(base / "run"))
    return config, str(base / "run")


def _naive_global_lsa(qf, gf, q, g, window):
    """Euclidean distance of the global features + LSA of the stripes (paper eqs. 1-5), by loops."""
    a, b = qf["local"][q], gf["local"][g]
    k = len(a)
    d = [[float(np.linalg.norm(a[i] - b[j])) for j in range(k)] for i in range(k)]
    near = lambda i, j: abs(i - j) <= window // 2
    d_ab = sum(min(d[i][j] for j in range(k) if near(i, j)) for i in range(k))
    d_ba = sum(min(d[i][j] for i in range(k) if near(i, j)) for j in range(k))
    return float(np.linalg.norm(qf["global"][q] - gf["global"][g])) + min(d_ab, d_ba)


def test_retrieve_cli_ranks_caches_and_draws(tiny_run, tmp_path, capsys):
    config, run = tiny_run
    gallery = os.path.join(config.data.root, "bounding_box_test")
    query = tmp_path / "queries"
    query.mkdir()
    for name in sorted(os.listdir(os.path.join(config.data.root, "query")))[:3]:
        shutil.copy(os.path.join(config.data.root, "query", name), query / name)
    cache, out = str(tmp_path / "gallery.npz"), str(tmp_path / "out")
    args = [
        "--checkpoint",
        run,
        "--query",
        str(query),
        "--gallery",
        gallery,
        "--out",
        out,
        "--gallery-features",
        cache,
        "--topk",
        "5",
    ]
    assert retrieve.main(args) == 0
    assert "gallery features written" in capsys.readouterr().out

    result = retrieve.retrieve(run, str(query), gallery, out, gallery_features_path=cache, topk=5)
    assert "gallery features read" in capsys.readouterr().out
    assert result["mode"] == "global+lsa"
    qf, gf = result["query_features"], result["gallery_features"]
    num_g = len(result["gallery"])
    assert num_g == len(os.listdir(gallery)) and len(result["queries"]) == 3
    naive = np.array(
        [[_naive_global_lsa(qf, gf, q, g, config.model.num_stripes // 2) for g in range(num_g)] for q in range(3)]
    )
    np.testing.assert_allclose(result["distances"], naive, rtol=1e-4, atol=1e-4)
    with open(os.path.join(out, "matches.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 5
    for q in range(3):
        mine = [r for r in rows if r["query"] == result["queries"][q]]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3, 4, 5]
        expected = np.sort(naive[q])[:5]
        np.testing.assert_allclose([float(r["distance"]) for r in mine], expected, rtol=1e-4, atol=1e-4)
        assert os.path.basename(mine[0]["gallery"]) == os.path.basename(result["gallery"][int(np.argmin(naive[q]))])
    matches = json.load(open(os.path.join(out, "matches.json")))
    assert matches["mode"] == "global+lsa" and len(matches["matches"]) == 3
    with Image.open(os.path.join(out, "retrieval_grid.png")) as im:
        assert im.size == (6 * (64 + 16) + 16, 3 * (128 + 36) + 10)
    assert os.path.getsize(os.path.join(out, "alignment_top1.png")) > 0

    # One image as the query; the cache belongs to the full gallery, so a different gallery is refused.
    single = retrieve.retrieve(run, str(query / sorted(os.listdir(query))[0]), gallery, str(tmp_path / "one"), topk=3)
    np.testing.assert_allclose(single["distances"][0], naive[0], rtol=1e-4, atol=1e-4)
    smaller = tmp_path / "smaller"
    shutil.copytree(gallery, smaller)
    os.remove(smaller / sorted(os.listdir(smaller))[0])
    assert retrieve.main(args[:5] + [str(smaller)] + args[6:]) == 2
    assert "another gallery folder" in capsys.readouterr().err


def test_retrieve_with_a_gallery_index_builds_adds_and_refuses(tiny_run, tmp_path, capsys):
    """--index: the first run builds the index (same top 5 as the dense ranking: a small gallery is probed whole),
    a later run adds only the new images (an unreadable one is skipped and named), a run without --gallery reads
    the index alone, and an index of other weights is refused naming both fingerprints."""
    from gldfa_jax import gallery_index

    config, run = tiny_run
    gallery = tmp_path / "gallery"
    shutil.copytree(os.path.join(config.data.root, "bounding_box_test"), gallery)
    queries = os.path.join(config.data.root, "query")
    query = os.path.join(queries, sorted(os.listdir(queries))[0])
    index, out = str(tmp_path / "index"), str(tmp_path / "out")
    args = ["--checkpoint", run, "--query", query, "--out", out, "--topk", "5", "--index", index]
    assert retrieve.main(args + ["--gallery", str(gallery)]) == 0
    num_g = len(os.listdir(gallery))
    assert f"{num_g} images, {num_g} added" in capsys.readouterr().out
    dense = retrieve.retrieve(run, query, str(gallery), str(tmp_path / "dense"), topk=5)
    indexed = retrieve.retrieve(run, query, None, str(tmp_path / "indexed"), topk=5, index_dir=index)
    assert indexed["mode"] == dense["mode"] == "global+lsa"
    assert [indexed["gallery"][g] for g in indexed["ranked"][0]] == [
        os.path.abspath(dense["gallery"][g]) for g in dense["ranked"][0]
    ]
    np.testing.assert_allclose(indexed["ranked_distances"][0], dense["ranked_distances"][0], rtol=2e-3)
    with open(os.path.join(str(tmp_path / "indexed"), "matches.csv")) as f:
        assert len(list(csv.DictReader(f))) == 5
    assert os.path.getsize(os.path.join(str(tmp_path / "indexed"), "alignment_top1.png")) > 0

    built = gallery_index.open_index(index).manifest
    new = sorted(os.listdir(queries))[1:3]
    for name in new:
        shutil.copy(os.path.join(queries, name), gallery / f"new_{name}")
    (gallery / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert retrieve.main(args + ["--gallery", str(gallery)]) == 0
    assert f"{num_g + 2} images, 2 added" in capsys.readouterr().out
    grown = gallery_index.open_index(index)
    assert {k: grown.manifest[k] for k in ("index", "created")} == {k: built[k] for k in ("index", "created")}
    assert grown.paths[-2:] == [str(gallery / f"new_{name}") for name in new]

    manifest_path = os.path.join(index, gallery_index.MANIFEST)
    manifest = json.load(open(manifest_path))
    theirs, manifest["fingerprint"] = manifest["fingerprint"], "weights sha256:0000000000000000, global 16, local 4x16"
    json.dump(manifest, open(manifest_path, "w"))
    assert retrieve.main(args) == 2
    err = capsys.readouterr().err
    assert "weights sha256:0000000000000000" in err and theirs in err
    assert retrieve.main(args + ["--gallery-features", str(tmp_path / "g.npz")]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert retrieve.main(args[:-1] + [str(tmp_path / "empty_index")]) == 2
    assert "pass --gallery FOLDER" in capsys.readouterr().err


def test_retrieve_bad_input(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    assert (
        retrieve.main(
            ["--checkpoint", str(tmp_path / "nope"), "--query", "x", "--gallery", "y", "--out", str(tmp_path)]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        retrieve.main(["--checkpoint", run, "--query", str(empty), "--gallery", str(empty), "--out", str(tmp_path)])
        == 2
    )
    assert "holds no images" in capsys.readouterr().err


def test_eval_reports_of_a_checkpoint(tiny_run, tmp_path):
    from gldfa_jax import evaluation, features, reports
    from gldfa_jax.experiment_data import load_experiment_data

    _, run = tiny_run
    config, model, variables, _ = checkpointing.load_checkpoint(run)
    data = load_experiment_data(config.data)
    q, g = features.split_features(model, variables, data.query, data.gallery, config)
    evaluated = evaluation.evaluate(
        q,
        g,
        data.query,
        data.gallery,
        evaluation.EvalOptions.from_config(config),
        rerank_on=False,
        report_queries=reports.sample_queries(len(data.query.pids)),
    )
    paths = reports.write_eval_reports(
        str(tmp_path),
        evaluated,
        q,
        g,
        data.query,
        data.gallery,
        metrics_jsonl=os.path.join(run, "metrics.jsonl"),
        steps_per_epoch=2,
    )
    assert sorted(paths) == ["alignment", "cmc", "feature_stats", "retrieval_grid", "training_curves"]
    with open(paths.pop("feature_stats")) as f:
        stats = json.load(f)
    assert stats["stripe_norm"] > 0 and stats["global_norm"] > 0
    assert {"global", "lsa", "global+lsa"} <= set(stats) and 0 < stats["lsa"]["ratio"]
    for path in paths.values():
        with Image.open(path) as im:
            im.verify()


def test_misalignment_analysis_of_a_run(tiny_run):
    """gldfa_jax/ablation/misalignment.py: query groups from the manifest; W = 1 'lsa' = sum of stripe-by-stripe
    distances (hard alignment), evaluated on each group."""
    from data_pipelines import datasets
    from gldfa_jax import features, ranking
    from gldfa_jax.ablation import misalignment

    config, run = tiny_run
    out = misalignment.evaluate_run(run, [1, 4])
    manifest = json.load(open(os.path.join(config.data.root, "synthetic_manifest.json")))["images"]
    names = [os.path.basename(r.path) for r in datasets.get_dataset("market_layout", config.data.root).query]
    shifted = np.array([manifest[n]["misalign"] is not None for n in names])
    assert out[("lsa", 1, "misaligned")]["n"] == shifted.sum() and out[("lsa", 1, "aligned")]["n"] == (~shifted).sum()

    cfg, model, variables, _ = checkpointing.load_checkpoint(run)
    from gldfa_jax.experiment_data import load_experiment_data

    data = load_experiment_data(cfg.data)
    q = features.extract_features(model, variables, data.query.images, cfg.data)["local"]
    g = features.extract_features(model, variables, data.gallery.images, cfg.data)["local"]
    hard = np.linalg.norm(q[:, None] - g[None], axis=-1).sum(-1)  # [Q, G]: stripe i against stripe i only
    for name, mask in (("all", np.ones_like(shifted)), ("misaligned", shifted), ("aligned", ~shifted)):
        if mask.any():
            mean_ap = ranking.rank_metrics(
                hard[mask],
                data.query.pids[mask],
                data.gallery.pids,
                data.query.camids[mask],
                data.gallery.camids,
                max_rank=10,
            )["mAP"]
            np.testing.assert_allclose(out[("lsa", 1, name)]["mAP"], 100 * mean_ap, rtol=1e-4, atol=1e-3)
    text = misalignment.table({"tiny": [out]}, [1, 4])
    assert "| tiny | 1 | lsa | 1 (hard) |" in text
