"""The independent PyTorch reference (benchmarks/torch_reference.py) agrees with gldfa_jax on the losses and the
LSA distance for the same features, and its trainer runs end to end with the project's evaluation."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gldfa_jax import losses, lsa
from gldfa_jax.config import get_config
from gldfa_jax.lsa import LSAOptions
from gldfa_jax.model import GLDFAOutput

from helpers.data import CUHK03_SAMPLE

torch = pytest.importorskip("torch")
ref = pytest.importorskip("benchmarks.torch_reference")


def features(batch=8, k=4, d=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(batch, d)).astype(np.float32)
    loc = np.maximum(rng.normal(size=(batch, k, d)), 0).astype(np.float32)
    logits = rng.normal(size=(batch, classes)).astype(np.float32)
    return g, loc, logits


@pytest.mark.parametrize("window,normalize", [(1, False), (2, False), (4, True), (8, False)])
def test_lsa_matches(window, normalize):
    (_, x, _), (_, y, _) = features(k=8), features(batch=5, k=8, seed=1)
    got = ref.lsa(torch.from_numpy(x), torch.from_numpy(y), window, normalize).numpy()
    want = np.asarray(lsa.lsa_distance(x, y, window, normalize=normalize))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "triplet,local_triplet,normalize,branches,joint",
    [
        ("soft", "", False, ("global", "local"), "separate"),
        ("soft", "hard", True, ("global",), "separate"),
        ("hard", "", False, ("local",), "separate"),
        ("soft", "", False, ("global", "local"), "sum"),
    ],
)
def test_total_loss_matches(triplet, local_triplet, normalize, branches, joint):
    g, loc, logits = features()
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    cfg = losses.LossOptions(
        triplet=triplet,
        local_triplet=local_triplet,
        center_branches=branches,
        triplet_distance=joint,
        lsa=LSAOptions(normalize=normalize),
    )
    centers = {"global": np.full((4, 6), 0.3, np.float32), "local": np.full((4, 24), 0.2, np.float32)}
    out = GLDFAOutput(
        global_feat=jnp.asarray(g),
        local_feat=jnp.asarray(loc),
        final_feat=jnp.zeros((8, 30)),
        logits=jnp.asarray(logits),
    )
    _, want = losses.total_loss(out, jnp.asarray(labels), jax_centers(centers), cfg, 4)
    t = lambda a: torch.from_numpy(a)
    _, got = ref.total_loss((t(g), t(loc), None, t(logits)), t(labels), {k: t(v) for k, v in centers.items()}, cfg, 4)
    for name in ("id", "triplet_global", "triplet_local", "center"):
        assert float(got[name]) == pytest.approx(float(want[name]), rel=1e-4, abs=1e-6), name


def jax_centers(centers):
    return {k: jnp.asarray(v) for k, v in centers.items()}


def test_trainer_runs_and_is_scored_by_the_project_evaluation(tmp_path):
    from gldfa_jax.experiment_data import load_experiment_data

    c = get_config()
    c.data.name, c.data.root, c.data.height, c.data.width = "market_layout", CUHK03_SAMPLE, 64, 32
    if not os.path.isdir(CUHK03_SAMPLE):  # outside the project folder: a small synthetic world instead
        c.data.root = str(tmp_path / "world")
        c.data.generate = ml_collections.ConfigDict({"identities": 12, "seed": 0})
    c.data.num_identities, c.data.num_instances = 4, 2
    c.model.depth, c.model.width_multiplier, c.model.embed_dim, c.model.num_stripes = 18, 0.125, 16, 4
    c.train.epochs, c.train.steps_per_epoch, c.train.log_every = 1, 3, 1
    c.eval.rerank = False
    results = ref.train_one(c, load_experiment_data(c.data), seed=0, workdir=str(tmp_path))
    assert set(results) == {"global", "lsa", "global+lsa", "final"}
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == results
    with open(tmp_path / "feature_stats.json") as f:
        stats = json.load(f)
    assert stats["stripe_norm"] > 0 and 0 < stats["lsa"]["ratio"]
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == [1, 2, 3]
    assert os.path.exists(tmp_path / "cmc.png")


def test_reference_schedule_matches_ours():
    from gldfa_jax.train import lr_schedule

    o = get_config().optim
    o.lr, o.warmup_epochs, o.warmup_factor, o.decay_epochs = 1.0, 2, 0.1, (3, 5)
    net = torch.nn.Linear(2, 2)
    net.backbone = torch.nn.Identity()
    c = get_config()
    c.optim = o
    opt, _, _ = ref.optimizers(net, c, num_classes=3, steps_per_epoch=4)
    got = []
    for _ in range(24):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        opt.scheduler.step()
    want = [float(lr_schedule(o, 4, xp=np)(step)) for step in range(24)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_pretrained_mobilenet_reference_loads_after_construction_and_matches_jax(tmp_path):
    """ImageNet weights reach the reference's backbone although GLDFANet's constructor re-initialises every conv,
    and the check against the JAX backbone catches a backbone that differs."""
    from gldfa_jax.experiment_data import load_experiment_data
    from gldfa_jax.pretrained import main as convert

    source = ref.MobileNetV2(last_stride=1)
    with torch.no_grad():
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    torch.save(source.state_dict(), tmp_path / "m.pth")
    convert(["convert", str(tmp_path / "m.pth"), str(tmp_path / "m.safetensors")])
    c = get_config()
    c.data.name, c.data.root, c.data.height, c.data.width = "market_layout", str(tmp_path / "world"), 64, 32
    c.data.generate = ml_collections.ConfigDict({"identities": 12, "seed": 0})
    c.data.num_identities, c.data.num_instances = 4, 2
    c.model.backbone, c.model.pretrained, c.model.embed_dim, c.model.num_stripes = "mobilenet_v2", "", 16, 4
    data = load_experiment_data(c.data)
    c.model.pretrained = str(tmp_path / "m.safetensors")
    net = ref.GLDFANet(c.model, data.num_classes)
    ref.load_backbone(net, c.model.pretrained)
    assert ref.check_backbone_matches_jax(net, c, data.train.images[:4]) < 1e-4
    for name, value in source.state_dict().items():
        torch.testing.assert_close(net.backbone.state_dict()[name], value)
    with torch.no_grad():
        net.backbone.features[3].conv[1][0].weight.mul_(1.5)  # a depthwise kernel that is not the file's
    with pytest.raises(AssertionError, match="reference backbone differs from the JAX one"):
        ref.check_backbone_matches_jax(net, c, data.train.images[:4])
    c.train.epochs, c.train.steps_per_epoch, c.train.log_every, c.eval.rerank = 1, 2, 1, False
    results = ref.train_one(c, data, seed=0, workdir=str(tmp_path / "run"))  # loads and checks again, then trains
    assert np.isfinite(results["global+lsa"]["mAP"])


def test_train_step_benchmark_json_matches_threads_per_line():
    """`benchmarks.train_step --json`: one line per (size, thread count), JAX and PyTorch on the same count; several
    counts run in child processes (XLA:CPU sizes its thread pool once per process)."""
    import json
    import subprocess
    import sys

    from helpers.cli import ENV, REPO

    argv = [sys.executable, "-m", "benchmarks.train_step", "--sizes", "64x32", "--depth", "18", "--width", "0.125"]
    argv += ["--steps", "1", "--threads", "1,2", "--json"]
    env = dict(ENV, JAX_TRANSFER_GUARD="allow")  # the benchmark hands its fixed numpy batch to the step
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    keys = {"jax_img_s", "torch_img_s", "ratio", "depth", "height", "width", "batch", "threads"}
    assert [set(r) for r in rows] == [keys, keys] and [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        assert (r["depth"], r["height"], r["width"], r["batch"]) == (18, 64, 32, 32)
        assert r["jax_img_s"] > 0 and r["torch_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["jax_img_s"] / r["torch_img_s"], rel=1e-2)
    bad = subprocess.run(argv[:-3] + ["--threads", "999"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "--threads 999" in bad.stderr
