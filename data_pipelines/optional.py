"""Optional dependencies: the extras of pyproject.toml, imported where a feature needs them, so the core install
(training, evaluation, checkpoints) stays light, and a missing one fails with the command that installs it."""

import importlib
import importlib.util
from types import ModuleType

# extra -> what it installs (pyproject.toml [project.optional-dependencies])
EXTRAS = {
    "tfds": "tensorflow-datasets and array_record",
    "export": "jax2onnx, onnx, onnx-ir and onnxruntime",
    "index": "faiss-cpu",
    "cuhk03": "h5py",
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (start-up checks stay cheap)."""
    return importlib.util.find_spec(module) is not None


def missing_extra(extra: str, purpose: str) -> str:
    """The message for a missing extra: what `purpose` needs, the extra that provides it and its install command."""
    return (
        f"{purpose} needs {EXTRAS[extra]} (the [{extra}] extra): pip install -e '.[{extra}]' in a clone of "
        f"gldfa-jax, or pip install 'gldfa-jax[{extra}]'."
    )


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """import `module`, or raise ImportError naming `purpose`, the extra that provides it and its install command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(missing_extra(extra, purpose)) from e
