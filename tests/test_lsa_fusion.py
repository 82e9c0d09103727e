"""benchmarks/lsa_fusion.py: global + w·lsa, with w = 0 the global mode and w = 1 the paper's global+lsa."""

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.lsa_fusion import fusion_map
from gldfa_jax import evaluation
from gldfa_jax.config import get_config


def test_fusion_weights_reproduce_the_evaluation_modes():
    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(6), 3)
    feats = {
        "global": rng.normal(size=(18, 8)).astype(np.float32) + pids[:, None],
        "local": rng.normal(size=(18, 4, 5)).astype(np.float32),
    }
    split = lambda rows, cams: SimpleNamespace(pids=pids[rows], camids=cams)
    q_rows, g_rows = np.arange(0, 18, 3), np.setdiff1d(np.arange(18), np.arange(0, 18, 3))
    query, gallery = split(q_rows, np.zeros(6, np.int64)), split(g_rows, np.ones(12, np.int64))
    q = {k: v[q_rows] for k, v in feats.items()}
    g = {k: v[g_rows] for k, v in feats.items()}
    config = get_config()
    config.eval.rerank, config.eval.modes = False, ("global", "global+lsa")
    got = fusion_map(q, g, query, gallery, config, [0.0, 1.0, 3.0])
    want = evaluation.evaluate(q, g, query, gallery, evaluation.EvalOptions.from_config(config)).results
    assert got[0.0] == pytest.approx(want["global"]["mAP"]) and got[1.0] == pytest.approx(want["global+lsa"]["mAP"])
    config.lsa.weight = 3.0
    options = evaluation.EvalOptions.from_config(config)
    assert got[3.0] == pytest.approx(evaluation.evaluate(q, g, query, gallery, options).results["global+lsa"]["mAP"])
