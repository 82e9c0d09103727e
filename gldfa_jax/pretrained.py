"""ImageNet initialisation (§4.1): torchvision/timm ResNet state dicts -> the Flax backbone's variables.

Reads `.safetensors` with the `safetensors` package (numpy API, no torch) or `.pth`/`.pt` when torch imports.
Mapping: `layer{s}.{b}.conv{i}.weight` [O, I, H, W] -> params `layer{s}_{b}/conv{i}/kernel` [H, W, I, O];
BN weight/bias -> params scale/bias, running_mean/var -> batch_stats mean/var; `downsample.0/1` ->
`downsample_conv`/`downsample_bn`; `fc.*` and `num_batches_tracked` are ignored.

Convert a torch checkpoint once, on a machine with torch:  python -m gldfa_jax.pretrained SRC.pth DST.safetensors
"""

import logging
import os
import sys

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors.numpy
from flax import traverse_util
from safetensors import SafetensorError

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("fc.",)  # the ImageNet classifier: GLDFA-Net replaces it (§3.1)
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


def flax_location(name: str):
    """torchvision name -> (collection, module path, leaf), or None for tensors we ignore.

    E.g. "layer2.0.downsample.1.running_var" -> ("batch_stats", ("layer2_0", "downsample_bn"), "var").
    """
    if name.startswith(IGNORED_PREFIXES) or name.endswith("num_batches_tracked"):
        return None
    parts = name.split(".")
    if parts[0].startswith("layer") and len(parts) > 2:
        parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
    if parts[-3:-1] in (["downsample", "0"], ["downsample", "1"]):
        parts = parts[:-3] + ["downsample_conv" if parts[-2] == "0" else "downsample_bn", parts[-1]]
    *module, leaf = parts
    if module and "conv" in module[-1] and leaf == "weight":
        return "params", tuple(module), "kernel"
    if module and "bn" in module[-1] and leaf in BN_LEAVES:
        collection, flax_leaf = BN_LEAVES[leaf]
        return collection, tuple(module), flax_leaf
    return "unknown", tuple(module), leaf


def load_pretrained(path: str, variables: dict) -> dict:
    """Copy ImageNet ResNet weights at `path` into `variables` (of GLDFANet, or of a bare ResNet).

    Returns new variables; the head (and anything outside the backbone) is left as initialised.
    path "" / None: logs that training starts from scratch and returns `variables` unchanged.
    Raises ValueError naming the tensor on a shape mismatch, a missing or an unexpected tensor.
    """
    if not path:
        log.info("model.pretrained is empty: training from scratch (no ImageNet initialisation).")
        return variables
    if not os.path.isfile(path):
        raise ValueError(
            f"model.pretrained={path!r} does not exist; point it at a torchvision/timm ResNet "
            ".safetensors or .pth file, or set it to '' to train from scratch."
        )
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    flat = traverse_util.flatten_dict(variables)
    prefix = ("backbone",) if any(key[1] == "backbone" for key in flat if key[0] == "params") else ()
    backbone_keys = {key for key in flat if key[0] in ("params", "batch_stats") and key[1 : 1 + len(prefix)] == prefix}
    located, unexpected = {}, []
    for name in state:
        location = flax_location(name)
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
            f"{missing[:5]} ({len(unexpected)} and {len(missing)} in all); check model.depth "
            "matches the checkpoint (ResNet-18/34/50/101, torchvision names)."
        )
    loaded = {}
    for key, name in located.items():
        value = state[name]
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if value.shape != flat[key].shape:
            raise ValueError(
                f"pretrained tensor {name!r} has shape {value.shape} (after OIHW->HWIO) but "
                f"{'/'.join(key)} expects {flat[key].shape}; use weights of the same depth and "
                f"model.width_multiplier=1.0, or set model.pretrained=''."
            )
        loaded[key] = jnp.asarray(value, dtype=flat[key].dtype)
    flat.update(loaded)
    log.info("Loaded %d pretrained tensors from %s into the backbone.", len(loaded), path)
    return traverse_util.unflatten_dict(flat)


def main(argv: list) -> None:
    if len(argv) != 3 or not argv[2].endswith(".safetensors"):
        raise SystemExit("usage: python -m gldfa_jax.pretrained SRC.pth DST.safetensors")
    state = read_state_dict(argv[1])
    safetensors.numpy.save_file(state, argv[2])
    print(f"wrote {len(state)} tensors to {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
