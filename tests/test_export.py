"""Export of a tiny checkpoint: the ONNX model and the jax.export program, each run in a process without gldfa_jax,
give gldfa_jax.features' features; the manifest; bad --checkpoint."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gldfa_jax import checkpointing, export, features, gallery_index, train
from gldfa_jax.config import get_config
from gldfa_jax.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 7

# Runs both artefacts on images.npy in a process that never imports gldfa_jax (as a deployment would).
RUN_ARTEFACTS = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    import onnxruntime

    images = np.load("images.npy")
    session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    with open("model.jax_export", "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    out = {}
    for batch in (images, images[:1]):  # two batch sizes through the same files
        for name, value in zip(names, session.run(None, {session.get_inputs()[0].name: batch})):
            out[f"onnx_{name}_{len(batch)}"] = value
        for name, value in zip(names, exported.call(batch)):
            out[f"jax_{name}_{len(batch)}"] = np.asarray(value)
    np.savez("outputs.npz", **out)
    print("gldfa_jax imported:", "gldfa_jax" in sys.modules)
""")


def tiny_config():
    """ResNet-18/8 at 64×32 with test-time flipping, so the exports include the mirrored pass."""
    c = get_config()
    c.data.height, c.data.width = 64, 32
    c.data.test_flip = True
    c.model.depth, c.model.width_multiplier = 18, 0.125
    c.model.embed_dim, c.model.num_stripes = 16, 4
    return c


def random_variables(model, shape, seed: int = 0) -> dict:
    """Variables of `model` for images `shape` drawn with numpy (no compiled init): He-scaled kernels, and BatchNorm
    scales, shifts and running statistics away from their defaults, so train-mode BatchNorm in an export would show."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
        elif name.endswith(("['scale']", "['var']")):
            value = rng.uniform(0.5, 2.0, leaf.shape)
        else:  # BatchNorm bias and mean
            value = rng.normal(0.0, 0.5, leaf.shape)
        return value.astype(leaf.dtype)

    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)), train=False))
    return jax.tree_util.tree_map_with_path(draw, abstract)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run workdir holding one checkpoint of random weights."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config()
    shape = (config.data.height, config.data.width, 3)
    model = build_model(config.model, num_classes=5)
    tx = train.make_optimizer(config.optim, 1)
    state = train.create_train_state(model, tx, random_variables(model, shape), 5, jax.random.PRNGKey(0), shape)
    store = checkpointing.CheckpointStore(workdir, keep=1)
    store.save_config(config)
    store.save(state, {"step": STEP, "epoch": 0, "steps_per_epoch": 1})
    store.wait()
    store.close()
    return workdir


def test_exports_give_the_evaluated_features_without_gldfa_jax(checkpoint, tmp_path):
    out = tmp_path / "exported"
    proc = subprocess.run(
        [sys.executable, "-m", "gldfa_jax.export", "--checkpoint", checkpoint, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [export.ONNX_FILE, export.JAX_FILE, export.MANIFEST]
    lines = proc.stdout.splitlines()
    assert [f"writing {out / name} ..." in lines for name in files] == [True] * 3, proc.stdout
    assert [line.split()[0] for line in lines[-3:]] == files, proc.stdout  # the closing table

    config, model, variables, step = checkpointing.load_checkpoint(checkpoint)
    images = np.random.default_rng(1).integers(0, 256, (3, config.data.height, config.data.width, 3), np.uint8)
    expected = features.extract_features(model, variables, images, config.data, batch_size=4)
    np.save(out / "images.npy", images)
    run = subprocess.run(
        [sys.executable, "-c", RUN_ARTEFACTS],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "gldfa_jax imported: False" in run.stdout
    with np.load(out / "outputs.npz") as got:
        for kind in ("onnx", "jax"):
            for name in export.OUTPUTS:
                for batch in (3, 1):
                    want = expected[name][:batch]
                    # float32 rounding grows with the feature's magnitude: 1e-4 relative to its largest value
                    np.testing.assert_allclose(
                        got[f"{kind}_{name}_{batch}"],
                        want,
                        rtol=0,
                        atol=1e-4 * np.abs(want).max(),
                        err_msg=f"{kind} {name} B={batch}",
                    )

    with open(out / export.MANIFEST) as f:
        manifest = json.load(f)
    d, k = expected["global"].shape[1], expected["local"].shape[1]
    assert manifest["step"] == step == STEP
    assert manifest["fingerprint"] == gallery_index.fingerprint(variables, d, (k, d))
    assert manifest["input"]["shape"] == [export.BATCH, 64, 32, 3] and manifest["input"]["dtype"] == "uint8"
    assert manifest["outputs"] == [
        {"name": "global", "shape": [export.BATCH, d], "dtype": "float32"},
        {"name": "local", "shape": [export.BATCH, k, d], "dtype": "float32"},
    ]
    assert manifest["data"]["test_flip"] is True and manifest["compute_dtype"] == "float32"
    assert manifest["jax_export"]["platforms"] == list(export.PLATFORMS)
    assert set(manifest["versions"]) >= {"jax", "jax2onnx", "onnx"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "{tmp}/nowhere"], "--checkpoint '{tmp}/nowhere' does not exist; pass a run's workdir"),
        (["--checkpoint", "{tmp}"], "no config.json beside the checkpoint {tmp}"),
        (["--checkpoint", "{tmp}", "--platforms", "gpu"], "--platforms 'gpu' names ['gpu']; pass a comma-separated"),
    ],
)
def test_bad_arguments_give_one_line_error(argv, message, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert export.main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(tmp=tmp_path)) and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "out")
