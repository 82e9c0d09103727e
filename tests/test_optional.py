"""Optional features: a missing extra fails with the command that installs it; the core imports none of them."""

import subprocess
import sys

import pytest

from data_pipelines import optional
from data_pipelines.datasets import cuhk03
from gldfa_jax import gallery_index


@pytest.mark.parametrize(
    "call, module, extra",
    [(gallery_index._faiss, "faiss", "index"), (cuhk03._import_h5py, "h5py", "cuhk03")],
)
def test_a_missing_extra_names_its_install_command(call, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import of `module` now raises ImportError
    with pytest.raises(ImportError, match=rf"\[{extra}\] extra\): pip install -e '\.\[{extra}\]'"):
        call()


def test_export_without_its_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)
    monkeypatch.delitem(sys.modules, "gldfa_jax.export", raising=False)
    with pytest.raises(ImportError, match=r"ONNX export needs jax2onnx, onnx, onnx-ir and onnxruntime"):
        __import__("gldfa_jax.export")
    assert optional.require("json", "tfds", "anything").dumps([]) == "[]"


def test_the_core_paths_import_no_optional_dependency():
    """Training, evaluation, checkpoints, reports and retrieval import no extra's package."""
    code = (
        "import sys\n"
        "import gldfa_jax.main, gldfa_jax.loop, gldfa_jax.evaluation, gldfa_jax.features, gldfa_jax.reports\n"
        "import gldfa_jax.retrieve, gldfa_jax.options\n"
        "import gldfa_jax.checkpointing, data_pipelines.datasets, data_pipelines.synthetic\n"
        "extras = ('tensorflow_datasets', 'array_record', 'jax2onnx', 'onnx', 'onnxruntime', 'faiss', 'h5py')\n"
        "print(sorted(m for m in extras if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
