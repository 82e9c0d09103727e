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
