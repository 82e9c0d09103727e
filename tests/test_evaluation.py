"""The evaluator (gldfa_jax.evaluation): features in, the results dict out, every mode from one pass, re-ranking,
protocols, options checked with the field's name, one compilation per function."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest

from gldfa_jax import config as base
from gldfa_jax import distances, evaluation, ranking
from gldfa_jax.experiment_data import Split


def evaluate(q, g, query, gallery, c, **kw):
    """evaluation.evaluate with the options of config `c`."""
    return evaluation.evaluate(q, g, query, gallery, evaluation.EvalOptions.from_config(c), **kw)


def evaluate_results(q, g, query, gallery, c):
    return evaluate(q, g, query, gallery, c).results


def test_evaluate_features_reports_percent_per_mode_and_rerank():
    c = base.get_config()
    c.eval.k1, c.eval.k2, c.eval.rerank_modes = 3, 2, ()  # tiny gallery; () re-ranks every mode
    rng = np.random.default_rng(0)
    ids = np.arange(6)
    centres = {"global": rng.normal(size=(6, 4)), "local": rng.normal(size=(6, 8, 4)), "final": rng.normal(size=(6, 9))}
    g_ids = np.repeat(ids, 2)
    g = {k: (v[g_ids] + 0.01 * rng.normal(size=v[g_ids].shape)).astype(np.float32) for k, v in centres.items()}
    q = {k: v.astype(np.float32) for k, v in centres.items()}
    query = Split(np.zeros((6, 1, 1, 3), np.uint8), ids, np.zeros(6, np.int64))
    gallery = Split(np.zeros((12, 1, 1, 3), np.uint8), g_ids, np.ones(12, np.int64))
    results = evaluate_results(q, g, query, gallery, c)
    assert list(results) == [
        "global",
        "lsa",
        "global+lsa",
        "final",
        "global+rerank",
        "lsa+rerank",
        "global+lsa+rerank",
        "final+rerank",
    ]
    for r in results.values():  # every query's two true matches are its nearest neighbours
        assert r == {"mAP": 100.0, "rank1": 100.0, "rank5": 100.0, "rank10": 100.0}
    del q["local"]  # a model without the local branch: modes needing it are skipped
    assert list(evaluate_results(q, g, query, gallery, c)) == [
        "global",
        "final",
        "global+rerank",
        "final+rerank",
    ]
    assert "mAP" in evaluation.format_table(results) and "global+lsa+rerank" in evaluation.format_table(results)


def test_rerank_equals_the_original_algorithm_on_the_distance_matrices():
    from gldfa_jax import rerank

    c = base.get_config()
    c.eval.k1, c.eval.k2, c.eval.rerank_modes = 4, 2, distances.MODES
    rng = np.random.default_rng(1)
    g_ids = np.repeat(np.arange(10), 3)
    centres = {"global": rng.normal(size=(10, 4)), "local": rng.normal(size=(10, 8, 4))}
    g = {k: (v[g_ids] + 0.8 * rng.normal(size=v[g_ids].shape)).astype(np.float32) for k, v in centres.items()}
    q = {k: (v + 0.8 * rng.normal(size=v.shape)).astype(np.float32) for k, v in centres.items()}
    query = Split(np.zeros((10, 1, 1, 3), np.uint8), np.arange(10), np.zeros(10, np.int64))
    gallery = Split(np.zeros((30, 1, 1, 3), np.uint8), g_ids, np.ones(30, np.int64))
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    results = evaluate_results(q, g, query, gallery, c)
    assert results["global+lsa+rerank"]["mAP"] < 100.0  # noisy enough that re-ranking has work to do
    for mode in ("global", "lsa", "global+lsa"):
        q_g, q_q, g_g = (distances.pairwise_distance(a, b, mode) for a, b in ((q, g), (q, q), (g, g)))
        original = rerank.re_ranking(q_g, q_q, g_g, k1=4, k2=2)
        ref = ranking.rank_metrics(original, *labels, max_rank=c.eval.max_rank)
        assert results[mode + "+rerank"]["mAP"] == pytest.approx(100 * ref["mAP"], abs=1e-4), mode
        assert results[mode + "+rerank"]["rank1"] == pytest.approx(100 * ref["cmc"][0], abs=1e-4), mode


def _noisy_world(seed=2, num_ids=8):
    rng = np.random.default_rng(seed)
    g_ids = np.repeat(np.arange(num_ids), 3)
    centres = {
        "global": rng.normal(size=(num_ids, 4)),
        "local": rng.normal(size=(num_ids, 6, 4)),
        "final": rng.normal(size=(num_ids, 7)),
    }
    g = {k: (v[g_ids] + 0.8 * rng.normal(size=v[g_ids].shape)).astype(np.float32) for k, v in centres.items()}
    q = {k: (v + 0.8 * rng.normal(size=v.shape)).astype(np.float32) for k, v in centres.items()}
    query = Split(np.zeros((num_ids, 1, 1, 3), np.uint8), np.arange(num_ids), np.zeros(num_ids, np.int64))
    gallery = Split(np.zeros((3 * num_ids, 1, 1, 3), np.uint8), g_ids, np.arange(3 * num_ids) % 2)
    return q, g, query, gallery


def test_evaluate_computes_each_distance_once_and_keeps_what_reports_draw(monkeypatch):
    c = base.get_config()
    c.eval.k1, c.eval.k2, c.eval.max_rank, c.eval.rerank_modes = 4, 2, 10, distances.MODES
    q, g, query, gallery = _noisy_world()
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    expected = {m: distances.pairwise_distance(q, g, m) for m in distances.MODES}
    calls = []
    real = distances.iter_mode_blocks

    def counted(a, b, modes, *args, **kw):
        calls.append(tuple(modes) if (a is q and b is g) else None)
        return real(a, b, modes, *args, **kw)

    monkeypatch.setattr(distances, "iter_mode_blocks", counted)
    out = evaluate(q, g, query, gallery, c, report_queries=[1, 5])
    # One pass for every mode; only the first re-ranked mode's matrix is kept from it, the others are recomputed.
    again = [(m,) for m in list(distances.MODES)[1:]]
    assert [m for m in calls if m] == [tuple(distances.MODES)] + again
    assert list(out.results) == list(distances.MODES) + [m + "+rerank" for m in distances.MODES]
    assert out.rows_mode == "global+lsa" and sorted(out.rows) == [1, 5]
    for qi in (1, 5):
        np.testing.assert_array_equal(out.rows[qi], expected["global+lsa"][qi])
    for mode, dist in expected.items():
        ref = ranking.rank_metrics(dist, *labels, max_rank=10)
        np.testing.assert_allclose(out.cmc[mode], ref["cmc"])
        assert out.results[mode]["mAP"] == pytest.approx(100 * ref["mAP"])
        assert out.separation[mode] == pytest.approx(ranking.separation(dist, *labels))


def test_rank_on_device_and_rerank_modes():
    c = base.get_config()
    c.eval.k1, c.eval.k2, c.eval.rerank_modes = 4, 2, ()
    q, g, query, gallery = _noisy_world(seed=3)
    host = evaluate_results(q, g, query, gallery, c)
    c.eval.rank_on = "device"
    device = evaluate_results(q, g, query, gallery, c)
    assert list(device) == list(host)
    for mode in host:
        for metric, value in host[mode].items():
            assert device[mode][metric] == pytest.approx(value, abs=1e-4), (mode, metric)
    c.eval.rank_on, c.eval.rerank_modes = "host", ("global+lsa",)
    assert evaluate_results(q, g, query, gallery, c) == {
        k: v for k, v in host.items() if "+rerank" not in k or k == "global+lsa+rerank"
    }
    c.eval.rerank_modes = ("cosine",)
    with pytest.raises(ValueError, match="eval.rerank_modes"):
        evaluate_results(q, g, query, gallery, c)


def test_eval_metrics_add_minp_to_every_mode_and_the_table():
    c = base.get_config()
    c.eval.k1, c.eval.k2, c.eval.max_rank, c.eval.rerank_modes = 4, 2, 10, ("global+lsa",)
    q, g, query, gallery = _noisy_world(seed=4)
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    plain = evaluate_results(q, g, query, gallery, c)
    assert all(set(r) == {"mAP", "rank1", "rank5", "rank10"} for r in plain.values())
    assert "mINP" not in evaluation.format_table(plain)
    c.eval.metrics = ("cmc", "mAP", "mINP")
    results = evaluate_results(q, g, query, gallery, c)
    assert list(results) == list(plain) and all("+rerank" not in m or "mINP" in results[m] for m in results)
    for mode, r in results.items():
        assert {k: v for k, v in r.items() if k != "mINP"} == plain[mode]
        if "+rerank" not in mode:
            ref = ranking.rank_metrics(distances.pairwise_distance(q, g, mode), *labels, max_rank=10)
            assert r["mINP"] == pytest.approx(100 * ref["mINP"])
    table = evaluation.format_table(results).splitlines()
    assert table[0].split() == ["mode", "mAP", "mINP", "R-1", "R-5", "R-10"]
    assert table[1].split()[:3] == ["global", f"{results['global']['mAP']:.2f}", f"{results['global']['mINP']:.2f}"]


def test_cuhk03_single_shot_protocol_through_the_driver(monkeypatch):
    c = base.get_config()
    c.eval.rerank, c.eval.max_rank, c.eval.metrics = False, 10, ("cmc", "mAP", "mINP")
    c.eval.protocol, c.eval.single_shot_repeats, c.eval.single_shot_seed = "cuhk03_single_shot", 7, 3
    c.eval.rank_on, c.eval.block_size = "auto", 3  # query blocks of one row per mode: the draws go on across blocks
    q, g, query, gallery = _noisy_world(seed=5)
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    out = evaluate(q, g, query, gallery, c)
    differs = []
    for mode in distances.MODES:
        dist = distances.pairwise_distance(q, g, mode)
        ref = ranking.rank_metrics(dist, *labels, max_rank=10, cuhk03_single_shot=True, repeats=7, seed=3)
        np.testing.assert_allclose(out.cmc[mode], ref["cmc"])
        assert out.results[mode]["mAP"] == pytest.approx(100 * ref["mAP"])
        assert out.results[mode]["mINP"] == pytest.approx(100 * ref["mINP"])
        differs.append(not np.allclose(ref["cmc"], ranking.rank_metrics(dist, *labels, max_rank=10)["cmc"]))
    assert any(differs)  # the world is noisy enough for the two protocols to disagree
    assert evaluation.format_table(out.results, c.eval.protocol).startswith("CUHK03 single-shot")
    with pytest.raises(ValueError, match="protocol must be one of .* got 'cuhk03'"):
        evaluation.format_table(out.results, "cuhk03")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # "auto" on an accelerator: the host all the same
    options = evaluation.EvalOptions.from_config(c)
    market = dataclasses.replace(options, protocol="market1501")
    assert market.ranker_options(10)["on_device"] and not options.ranker_options(10)["on_device"]
    c.eval.rank_on = "device"
    with pytest.raises(ValueError, match=r"eval\.rank_on='device'.*eval\.protocol='cuhk03_single_shot'"):
        evaluate(q, g, query, gallery, c)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("metrics", ("cmc", "mAP", "mINP", "NDCG"), "eval.metrics must be .*'NDCG'"),
        ("metrics", "mINP", "eval.metrics must be"),
        ("metrics", ("mAP", "mINP"), r"eval.metrics=.*lacks \['cmc'\]"),
        ("protocol", "cuhk03", "eval.protocol must be one of .*'market1501'.*got 'cuhk03'"),
        ("single_shot_repeats", 0, "eval.single_shot_repeats must be an integer >= 1, got 0"),
        ("single_shot_seed", -1, "eval.single_shot_seed must be an integer >= 0, got -1"),
        ("rank_on", "gpu", "eval.rank_on"),
    ],
)
def test_bad_eval_options_name_the_field_and_value(field, value, message):
    c = base.get_config()
    c.eval = ml_collections.ConfigDict({**c.eval.to_dict(), field: value})  # any type, as JSON could give
    with pytest.raises(ValueError, match=message):
        evaluation.EvalOptions.from_config(c)


_COMPILED = []  # (function name) of each XLA compilation while a test listens, from jax.monitoring


def _on_event(event, duration, **kwargs):
    if _COMPILED and event == "/jax/core/compile/backend_compile_duration":
        _COMPILED.append(kwargs.get("fun_name"))


jax.monitoring.register_event_duration_secs_listener(_on_event)  # jax has no public way to remove one


def _compiles(fn) -> dict:
    """{function name: compilations} while fn() runs."""
    _COMPILED[:] = [None]  # the marker that turns listening on
    try:
        fn()
    finally:
        names = _COMPILED[1:]
        _COMPILED.clear()
    return {name: names.count(name) for name in names}


def test_a_market_shaped_evaluation_compiles_each_function_once(monkeypatch):
    from gldfa_jax import rerank

    # Market's shape at a small size: several query blocks and a ragged last one, device ranking in sub-blocks,
    # re-ranking with several g×g tiles (diagonal and off) and Jaccard blocks of another height. Odd feature sizes
    # keep other tests' compilations out of the cache.
    monkeypatch.setattr(ranking, "_DEVICE_BLOCK_ELEMENTS", 20 * 301)
    monkeypatch.setattr(rerank, "_TILE", 128)
    monkeypatch.setattr(rerank, "_BLOCK_BYTES", 16 * 372 * 40)
    c = base.get_config()
    c.eval.block_size, c.eval.rank_on, c.eval.k1, c.eval.k2 = 4 * 16, "device", 6, 3
    rng = np.random.default_rng(7)
    num_ids, dims = 40, {"global": (13,), "local": (8, 13), "final": (29,)}
    g_ids, q_ids = rng.integers(0, num_ids, 301), rng.integers(0, num_ids, 71)
    centres = {k: rng.normal(size=(num_ids,) + d) for k, d in dims.items()}
    feats = lambda ids: {k: (v[ids] + rng.normal(size=v[ids].shape)).astype(np.float32) for k, v in centres.items()}
    q, g = feats(q_ids), feats(g_ids)
    query = Split(np.zeros((71, 1, 1, 3), np.uint8), q_ids, rng.integers(0, 6, 71))
    gallery = Split(np.zeros((301, 1, 1, 3), np.uint8), g_ids, rng.integers(0, 6, 301))
    results = {}
    cold = _compiles(lambda: results.update(evaluate_results(q, g, query, gallery, c)))
    assert list(results) == list(distances.MODES) + ["global+lsa+rerank"]
    # The gallery is prepared key by key (one raw device copy at a time): once per feature shape.
    assert cold.pop("jit(_prepare_gallery)") == len(dims)
    assert {"jit(_mode_distances)", "jit(_device_block_metrics)", "jit(_gallery_tile)", "jit(_query_rows)"} <= set(cold)
    assert cold == dict.fromkeys(cold, 1)
    assert _compiles(lambda: evaluate_results(q, g, query, gallery, c)) == {}  # warm: nothing new
    c.eval.rank_on = "host"
    host = evaluate_results(q, g, query, gallery, c)
    for mode in host:
        for metric, value in host[mode].items():
            assert results[mode][metric] == pytest.approx(value, abs=1e-4), (mode, metric)


def test_eval_compiles_benchmark_counts_a_cold_and_a_warm_evaluation(capsys):
    from benchmarks import eval_compiles

    eval_compiles.main(["--scale", "0.01", "--block-size", "64"])
    out = capsys.readouterr().out
    counts = [int(line.split(", ")[1].split()[0]) for line in out.splitlines() if line.startswith(("cold:", "warm:"))]
    assert counts[0] > 0 and counts[1] == 0, out
    assert "global+lsa+rerank" in out
