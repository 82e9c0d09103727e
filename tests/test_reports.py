"""Visual reports: PNGs exist with the documented size, and what they show matches naive computations."""

import numpy as np
import pytest
from PIL import Image

from gldfa_jax import lsa, reports


def _png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def _naive_ranking(dist, q_pid, q_cam, g_pids, g_cams, topk):
    """Sort by (distance, index), skipping same-identity same-camera gallery items."""
    keep = [(dist[g], g) for g in range(len(dist)) if not (g_pids[g] == q_pid and g_cams[g] == q_cam)]
    return [g for _, g in sorted(keep)][:topk]


@pytest.fixture
def world():
    rng = np.random.default_rng(3)
    q_pids = np.array([1, 2, 3, 9])  # identity 9 is not in the gallery
    q_cams = np.array([0, 0, 0, 0])
    g_pids = np.array([1, 1, 2, 2, 3, 3, 4])  # 7 gallery images: fewer than 10
    g_cams = np.array([0, 1, 1, 0, 1, 1, 0])
    dist = rng.random((4, 7)).astype(np.float32)
    dist[0, 3] = dist[0, 5]  # a tie: order must follow gallery index
    images = lambda n: [rng.integers(0, 256, (32, 16, 3), dtype=np.uint8) for _ in range(n)]
    return dict(
        dist=dist, q_pids=q_pids, q_cams=q_cams, g_pids=g_pids, g_cams=g_cams, q_imgs=images(4), g_imgs=images(7)
    )


def test_retrieval_grid_ranks_marks_and_size(world, tmp_path):
    w = world
    out_png = tmp_path / "sub" / "grid.png"
    out = reports.retrieval_grid(
        w["dist"],
        w["q_imgs"],
        w["g_imgs"],
        str(out_png),
        q_pids=w["q_pids"],
        g_pids=w["g_pids"],
        q_camids=w["q_cams"],
        g_camids=w["g_cams"],
        query_indices=[0, 2, 3],
        topk=10,
        tile=(40, 20),
    )
    assert _png_size(out_png) == (11 * (20 + 16) + 16, 3 * (40 + 36) + 10)
    assert out["queries"] == [0, 2, 3]
    for q, ranked, correct, has_match in zip(out["queries"], out["ranked"], out["correct"], out["has_match"]):
        naive = _naive_ranking(w["dist"][q], w["q_pids"][q], w["q_cams"][q], w["g_pids"], w["g_cams"], 10)
        assert list(ranked) == naive
        assert len(ranked) < 10  # the missing ranks are drawn as empty slots
        np.testing.assert_array_equal(correct, [w["g_pids"][g] == w["q_pids"][q] for g in naive])
        assert has_match == any(w["g_pids"][g] == w["q_pids"][q] for g in naive)
    assert out["has_match"] == [True, True, False]


def test_retrieval_grid_without_labels_and_sampling(world, tmp_path):
    w = world
    out = reports.retrieval_grid(
        w["dist"], w["q_imgs"], w["g_imgs"], str(tmp_path / "g.png"), num_queries=2, topk=3, seed=1, tile=(40, 20)
    )
    assert _png_size(tmp_path / "g.png") == (4 * 36 + 16, 2 * 76 + 10)
    assert len(set(out["queries"])) == 2 and out["correct"] == [None, None]
    for q, ranked in zip(out["queries"], out["ranked"]):
        assert list(ranked) == list(np.argsort(w["dist"][q], kind="stable")[:3])


def test_retrieval_grid_bad_input(world, tmp_path):
    w = world
    with pytest.raises(ValueError, match="gallery"):
        reports.retrieval_grid(w["dist"], w["q_imgs"], w["g_imgs"][:5], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="q_pids"):
        reports.rank_gallery(w["dist"], q_pids=w["q_pids"])


def _naive_alignment(a, b, window):
    k = len(a)
    d = np.array([[np.linalg.norm(a[i] - b[j]) for j in range(k)] for i in range(k)])
    ok = lambda i, j: abs(i - j) <= window // 2
    m_ab = [min((d[i, j], j) for j in range(k) if ok(i, j))[1] for i in range(k)]
    m_ba = [min((d[i, j], i) for i in range(k) if ok(i, j))[1] for j in range(k)]
    d_ab = sum(d[i, m_ab[i]] for i in range(k))
    d_ba = sum(d[m_ba[j], j] for j in range(k))
    return d, m_ab, m_ba, min(d_ab, d_ba), sum(d[i, i] for i in range(k))


@pytest.mark.parametrize("k,window", [(8, None), (6, 2), (5, 1)])
def test_stripe_alignment_matches_naive_and_lsa(k, window):
    rng = np.random.default_rng(k)
    a = rng.normal(size=(k, 12)).astype(np.float32)
    b = np.roll(a, 1, axis=0) + 0.2 * rng.normal(size=(k, 12)).astype(np.float32)  # misaligned by a stripe
    info = reports.stripe_alignment(a, b, window)
    w = window or lsa.default_window(k)
    d, m_ab, m_ba, dist, hard = _naive_alignment(a, b, w)
    np.testing.assert_allclose(info["distances"], d, rtol=1e-4, atol=1e-4)
    assert list(info["matches_ab"]) == m_ab and list(info["matches_ba"]) == m_ba
    np.testing.assert_allclose(info["lsa"], dist, rtol=1e-4)
    np.testing.assert_allclose(info["hard"], hard, rtol=1e-4)
    np.testing.assert_allclose(info["lsa"], float(lsa.lsa_distance(a[None], b[None], w)[0, 0]), rtol=1e-4)
    if w == 1:
        np.testing.assert_allclose(info["lsa"], info["hard"], rtol=1e-5)
    else:
        assert info["lsa"] < info["hard"]


def test_alignment_figure_png(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 8, 16)).astype(np.float32)
    img = rng.random((48, 24, 3)).astype(np.float32)  # float images in [0, 1] are accepted too
    out = tmp_path / "align.png"
    info = reports.alignment_figure(img, img[::-1], a, b, str(out), tile=(96, 48))
    assert _png_size(out) == (2 * 48 + 120 + 420, 96 + 90)
    assert info["window"] == 4
    with pytest.raises(ValueError, match="local_a"):
        reports.alignment_figure(img, img, a, b[:6], str(out))


def test_cmc_curve_png(tmp_path):
    cmc = np.linspace(0.3, 1.0, 50)
    plotted = reports.cmc_curve({"global": cmc, "global+lsa": np.sqrt(cmc)}, str(tmp_path / "cmc.png"), max_rank=20)
    assert _png_size(tmp_path / "cmc.png") == (640, 480)
    np.testing.assert_allclose(plotted["global"], cmc[:20] * 100)
    reports.cmc_curve(cmc, str(tmp_path / "one.png"))
    assert _png_size(tmp_path / "one.png") == (640, 480)


def test_training_curves_reads_metrics_jsonl(tmp_path):
    """The metric_writer's format; a resumed run logs steps 20-30 twice and the later records win."""
    lines = []
    for step in (0, 10, 20, 30, 20, 30, 40):
        resumed = len(lines) >= 4
        lines.append(
            {
                "step": step,
                "split": "train",
                "id": 5.0 - step / 10 - (0.5 if resumed else 0.0),
                "triplet_global": 0.3,
                "total": 6.0 - step / 10,
                "lr": 3.5e-4,
                "images_per_s": 30.0,
            }
        )
    lines += [
        {"step": s, "split": "eval/global+lsa", "mAP": m, "rank1": m + 10, "rank5": 90.0, "rank10": 95.0}
        for s, m in ((20, 30.0), (40, 55.0))
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(__import__("json").dumps(line) for line in lines) + "\n")
    metrics = reports.training_curves(str(path), str(tmp_path / "curves.png"), steps_per_epoch=10)
    assert _png_size(tmp_path / "curves.png") == (1500, 450)
    np.testing.assert_array_equal(metrics["train"]["step"], [0, 10, 20, 30, 40])
    np.testing.assert_allclose(metrics["train"]["id"], [5.0, 4.0, 2.5, 1.5, 0.5])
    np.testing.assert_allclose(metrics["eval/global+lsa"]["mAP"], [30.0, 55.0])
    (tmp_path / "bad.jsonl").write_text('{"loss": 1}\n')
    with pytest.raises(ValueError, match="line 1"):
        reports.training_curves(str(tmp_path / "bad.jsonl"), str(tmp_path / "x.png"))


def test_retrieval_grid_from_the_rows_an_evaluation_keeps(world, tmp_path):
    """A mapping query index -> distance row draws the same grid as the full matrix, from those rows alone."""
    w = world
    ids = dict(q_pids=w["q_pids"], g_pids=w["g_pids"], q_camids=w["q_cams"], g_camids=w["g_cams"])
    full = reports.retrieval_grid(
        w["dist"], w["q_imgs"], w["g_imgs"], str(tmp_path / "a.png"), **ids, seed=2, num_queries=3
    )
    assert full["queries"] == reports.sample_queries(4, 3, seed=2)
    rows = {q: w["dist"][q] for q in full["queries"]}
    drawn = reports.retrieval_grid(rows, w["q_imgs"], w["g_imgs"], str(tmp_path / "b.png"), **ids)
    assert drawn["queries"] == full["queries"] and drawn["has_match"] == full["has_match"]
    for key in ("ranked", "correct"):
        for a, b in zip(drawn[key], full[key]):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="query_indices"):
        reports.retrieval_grid(
            rows,
            w["q_imgs"],
            w["g_imgs"],
            str(tmp_path / "c.png"),
            query_indices=[q for q in range(4) if q not in rows],
            **ids,
        )


def test_write_eval_reports_draws_from_the_evaluation(tmp_path, monkeypatch):
    """Given evaluation.evaluate's product, the reports compute no distance again and show its numbers."""
    import json

    from gldfa_jax import distances, evaluation
    from gldfa_jax.experiment_data import Split

    rng = np.random.default_rng(5)
    g_ids = np.repeat(np.arange(5), 3)
    feats = lambda ids: {
        "global": (ids[:, None] + rng.normal(size=(ids.size, 4))).astype(np.float32),
        "local": (ids[:, None, None] + rng.normal(size=(ids.size, 4, 3))).astype(np.float32),
    }
    q, g = feats(np.arange(5)), feats(g_ids)
    image = lambda n: rng.integers(0, 256, (n, 32, 16, 3), dtype=np.uint8)
    query, gallery = Split(image(5), np.arange(5), np.zeros(5, int)), Split(image(15), g_ids, np.ones(15, int))
    options = evaluation.EvalOptions(rerank=False)
    evaluated = evaluation.evaluate(q, g, query, gallery, options, report_queries=reports.sample_queries(5))
    without_rows = evaluation.evaluate(q, g, query, gallery, options)
    monkeypatch.setattr(distances, "iter_distance_blocks", lambda *a, **kw: pytest.fail("distances recomputed"))
    paths = reports.write_eval_reports(str(tmp_path), evaluated, q, g, query, gallery)
    assert sorted(paths) == ["alignment", "cmc", "feature_stats", "retrieval_grid"]
    with open(paths["feature_stats"]) as f:
        stats = json.load(f)
    assert list(evaluated.separation) == ["global", "lsa", "global+lsa"]
    for mode, separation in evaluated.separation.items():
        assert stats[mode] == pytest.approx(separation)
    with pytest.raises(ValueError, match="report_queries"):
        reports.write_eval_reports(str(tmp_path), without_rows, q, g, query, gallery)
