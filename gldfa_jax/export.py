"""Deployable export of a trained checkpoint: its test-time features as ONNX and as a jax.export program.

  python -m gldfa_jax.export --checkpoint runs/synthetic --out exported/ [--platforms cpu,cuda]

Writes into OUT:
  model.onnx        ONNX (jax2onnx) for onnxruntime and other ONNX runtimes
  model.jax_export  jax.export serialisation: jax.export.deserialize(bytes).call(images), no gldfa_jax needed
  export.json       input and output names/shapes, checkpoint step, weights fingerprint, versions
Both models map uint8 RGB images [B, H, W, 3] (H×W = the run's data.height × data.width, any batch size B) to the
global feature [B, d] and the local stripes [B, k, d], exactly as evaluation extracts them (normalisation by
data.mean/std, eval-mode BatchNorm, averaging with the mirrored image when data.test_flip); the weights are inside.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp

from data_pipelines.optional import require
from gldfa_jax import checkpointing, features, gallery_index
from gldfa_jax.lsa import LSAOptions

jax2onnx = require("jax2onnx", "export", "ONNX export")
onnx = require("onnx", "export", "ONNX export")
onnx_ir = require("onnx_ir", "export", "ONNX export")
require("onnx_ir.passes.common", "export", "ONNX export")  # onnx_ir.passes.common, used below

OUTPUTS = (
    "global",
    "local",
)  # of gldfa_jax.features' Features, in output order; a model without a branch lacks its one
INPUT_NAME = "images"
ONNX_FILE, JAX_FILE, MANIFEST = "model.onnx", "model.jax_export", "export.json"
BATCH = "B"  # name of the symbolic batch dimension in both exports
PLATFORMS = ("cpu", "cuda")  # of the jax.export program by default
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
VERSIONED = ("jax", "jaxlib", "flax", "jax2onnx", "onnx")


def input_spec(config) -> jax.ShapeDtypeStruct:
    """uint8 [B, H, W, 3] with a symbolic batch B and the run's image size."""
    h, w = config.data.height, config.data.width
    return jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"{BATCH}, {h}, {w}, 3"), jnp.uint8)


def feature_function(config, model, variables, spec):
    """(fn, shapes): fn maps uint8 images [B, H, W, 3] to the tuple of the model's features among OUTPUTS, float32,
    by gldfa_jax.features' own extraction; shapes = {their names in order: ShapeDtypeStruct for input `spec`}. The
    weights are closed over, so they are constants of an exported program."""
    data = config.data
    # Not gldfa_jax.features' jitted copy: jit caches its trace per shape, and through it the ONNX conversion could
    # reuse a trace made outside jax2onnx's flax patches (which it cannot convert), or jax.export one made inside them.
    extract = lambda images: features.image_features(
        variables, images, model=model, flip=bool(data.test_flip), mean=tuple(data.mean), std=tuple(data.std)
    )
    every = jax.eval_shape(extract, spec)
    shapes = {k: every[k] for k in OUTPUTS if k in every}
    return (lambda images: tuple(extract(images)[k] for k in shapes)), shapes


def write_onnx(fn, spec, names, path: str) -> dict:
    """Convert fn with jax2onnx and save it to `path`; returns the model's opset and IR version."""
    model = jax2onnx.to_onnx(
        fn, [spec], model_name="gldfa_net", input_names=[INPUT_NAME], output_names=list(names), return_mode="ir"
    )
    # With test_flip each of the two passes holds its own copy of every weight: one copy is kept, of any size.
    onnx_ir.passes.common.DeduplicateInitializersPass(size_limit=sys.maxsize)(model)
    proto = onnx_ir.to_proto(model)
    # jax2onnx 0.17.1 keeps the NHWC shapes it recorded for intermediate values after it has folded the layout
    # transposes away (the values are NCHW), and onnxruntime rejects the model; such shapes are optional hints,
    # so they are inferred afresh from the graph.
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return {
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": proto.ir_version,
    }


def write_jax_export(fn, spec, path: str, platforms) -> dict:
    """jax.export of jit(fn) for `platforms`, serialised to `path`."""
    exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(spec)
    with open(path, "wb") as f:
        f.write(exported.serialize())
    return {"platforms": list(exported.platforms), "calling_convention_version": exported.calling_convention_version}


def manifest(config, model, checkpoint: str | None, step: int, fingerprint: str, spec, shapes: dict) -> dict:
    """export.json's content, apart from what each writer returns; `shapes` = {output name: its ShapeDtypeStruct}."""
    dims = lambda shape: [d if isinstance(d, int) else str(d) for d in shape]
    return {
        "checkpoint": checkpoint,
        "step": step,
        "fingerprint": fingerprint,
        "compute_dtype": jnp.dtype(model.dtype).name,  # model.dtype "auto" resolves on the exporting machine
        "input": {
            "name": INPUT_NAME,
            "shape": dims(spec.shape),
            "dtype": "uint8",
            "layout": "NHWC RGB, resized to H×W; normalisation (data.mean/std) is inside the model",
        },
        "outputs": [{"name": n, "shape": dims(s.shape), "dtype": str(s.dtype)} for n, s in shapes.items()],
        "data": {
            "mean": list(config.data.mean),
            "std": list(config.data.std),
            "test_flip": bool(config.data.test_flip),
        },
        "lsa": dataclasses.asdict(LSAOptions.from_config(config.lsa)),  # how evaluation compares the stripes
        "versions": {"python": platform.python_version(), **{p: importlib.metadata.version(p) for p in VERSIONED}},
    }


def parse_platforms(text: str) -> tuple:
    platforms = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if unknown or not platforms:
        raise ValueError(
            f"--platforms {text!r} names {unknown or 'no platform'}; pass a comma-separated list of "
            f"{', '.join(KNOWN_PLATFORMS)} (default {','.join(PLATFORMS)})."
        )
    return platforms


def export(config, model, variables, step: int, out: str, platforms=PLATFORMS, checkpoint: str | None = None) -> list:
    """Write OUT/model.onnx, OUT/model.jax_export and OUT/export.json for a loaded checkpoint
    (checkpointing.load_checkpoint; `checkpoint` its path, recorded); returns [(path, bytes, seconds)]."""
    spec = input_spec(config)
    fn, shapes = feature_function(config, model, variables, spec)
    local = shapes["local"].shape[1:] if "local" in shapes else None
    global_dim = shapes["global"].shape[1] if "global" in shapes else 0
    fingerprint = gallery_index.fingerprint(variables, global_dim, local)
    info = manifest(config, model, checkpoint, step, fingerprint, spec, shapes)
    os.makedirs(out, exist_ok=True)
    written = []

    def timed(name: str, write):
        path = os.path.join(out, name)
        print(f"writing {path} ...", flush=True)
        start = time.perf_counter()
        result = write(path)
        written.append((path, os.path.getsize(path), time.perf_counter() - start))
        return result

    info["onnx"] = {"file": ONNX_FILE, **timed(ONNX_FILE, lambda p: write_onnx(fn, spec, list(shapes), p))}
    info["jax_export"] = {"file": JAX_FILE, **timed(JAX_FILE, lambda p: write_jax_export(fn, spec, p, platforms))}

    def write_manifest(path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, ensure_ascii=False)

    timed(MANIFEST, write_manifest)
    return written


def format_written(written) -> str:
    """Table of (path, bytes, seconds)."""
    width = max(len("file"), *(len(os.path.basename(p)) for p, _, _ in written))
    size = lambda n: f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"
    lines = [f"{'file':<{width}}  {'size':>10}  {'seconds':>7}"]
    lines += [f"{os.path.basename(p):<{width}}  {size(n):>10}  {t:7.1f}" for p, n, t in written]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gldfa_jax.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="run workdir, checkpoints/ folder or a step folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help=f"comma-separated platforms the jax.export program runs on, of {KNOWN_PLATFORMS}",
    )
    args = parser.parse_args(argv)
    try:
        platforms = parse_platforms(args.platforms)
        config, model, variables, step = checkpointing.load_checkpoint(args.checkpoint)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"checkpoint {args.checkpoint} at step {step}: {config.data.height}×{config.data.width} images, "
        f"test_flip={bool(config.data.test_flip)}",
        flush=True,
    )
    written = export(config, model, variables, step, args.out, platforms, os.path.abspath(args.checkpoint))
    print(format_written(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
