"""The Colab notebooks run top to bottom, headless, with their tiny CPU settings."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "checkpoint_retrieval.ipynb")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("notebooks"))


@pytest.mark.parametrize("name", NOTEBOOKS)  # in this order: the second reuses the first's checkpoint
def test_notebook_runs(name, demo_dir, monkeypatch):
    monkeypatch.setenv("GLDFA_DEMO_DIR", demo_dir)
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) >= (4 if name == "quickstart.ipynb" else 3)


def test_install_cell_installs_the_core_from_a_clone(tmp_path):
    """The notebooks' first cell, run as on a fresh Colab runtime (gldfa_jax not importable: `python -S` sees no
    site-packages), installs this clone's last commit through pip's git support. PIP_TARGET and PIP_NO_DEPS keep
    it to the package itself, in a temporary folder; its metadata must ask for the core alone, the extras optional."""
    import json
    import subprocess
    import sys

    for name in NOTEBOOKS:
        nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
        cell = next(c.source for c in nb.cells if c.cell_type == "code" and "REPO_URL =" in c.source)
        lines = [
            f"REPO_URL = {json.dumps('file://' + ROOT)}" if ln.startswith("REPO_URL =") else ln
            for ln in cell.split("\n")
        ]
        target = tmp_path / name
        # PIP_NO_BUILD_ISOLATION=0 (pip reads it inverted: no isolation) builds with this environment's setuptools:
        # an isolated build would install setuptools under PIP_TARGET's --home beside its own --prefix, which pip
        # refuses.
        env = dict(
            os.environ,
            PIP_TARGET=str(target),
            PIP_NO_DEPS="1",
            PIP_NO_BUILD_ISOLATION="0",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        subprocess.run([sys.executable, "-S", "-c", "\n".join(lines)], cwd=tmp_path, env=env, check=True, timeout=600)
        assert (target / "gldfa_jax" / "__init__.py").is_file()
        metadata = next(target.glob("gldfa_jax-*.dist-info")).joinpath("METADATA").read_text()
        requires = [
            line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
        ]
        core = [r for r in requires if "extra ==" not in r]
        assert any(r.startswith("jax") for r in core) and any(r.startswith("flax") for r in core)
        assert not any(
            r.split(">")[0].split("=")[0] in ("faiss-cpu", "jax2onnx", "tensorflow-datasets", "h5py", "pytest")
            for r in core
        )
