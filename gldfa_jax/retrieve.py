"""Retrieval on your own images with a trained checkpoint.

  python -m gldfa_jax.retrieve --checkpoint runs/synthetic --query me.jpg --gallery photos/ --out retrieval/ \
      [--gallery-features photos.npz | --index photos_index/] [--topk 10] [--mode global+lsa]

Writes OUT/matches.csv and OUT/matches.json (ranked gallery images per query with distances),
OUT/retrieval_grid.png (paper Fig. 8 style, grey borders since your images carry no identities) and
OUT/alignment_top1.png (LSA stripe alignment of the first query and its best match, paper Fig. 7).
With --gallery-features the gallery's features are extracted once into that .npz and reused while the
gallery folder and the checkpoint stay the same. With --index a persistent FAISS gallery index (million-image
galleries, `gldfa_jax.gallery_index`) shortlists by the global feature and re-scores exactly: it is built on first
use, later runs add the gallery's new images to it, and --gallery may then be left out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from data_pipelines.datasets.common import IMAGE_EXTENSIONS, list_images
from data_pipelines.images import load_images
from gldfa_jax import checkpointing, distances, evaluation, features, gallery_index, reports
from gldfa_jax.lsa import LSAOptions

PREFERRED_MODES = ("global+lsa", "global", "lsa", "final")  # §3.2: inference uses global + LSA


def image_paths(path: str, what: str) -> list[str]:
    """One image file or the images of a folder (sorted)."""
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(f"{what} {path!r} is not an image ({', '.join(IMAGE_EXTENSIONS)}).")
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"{what} {path!r} does not exist; pass an image file or a folder of images.")
    paths = list_images(path)
    if not paths:
        raise ValueError(f"{what} folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return paths


def folder_features(paths: list[str], config, model, variables, batch_size: int, desc: str):
    """Features of image files -> (Features dict of numpy arrays, the paths that could be read)."""
    images, kept = load_images(paths, config.data.height, config.data.width)
    feats = features.extract_features(model, variables, images, config.data, batch_size=batch_size, desc=desc)
    return feats, list(kept)


def gallery_features(paths, cache: str | None, checkpoint_id: str, config, model, variables, batch_size: int):
    """Gallery features, read from / written to the .npz `cache` when given."""
    if cache and os.path.exists(cache):
        with np.load(cache) as z:
            stored = [str(p) for p in z["source_paths"]]
            if stored != [os.path.abspath(p) for p in paths] or str(z["checkpoint"]) != checkpoint_id:
                raise ValueError(
                    f"--gallery-features {cache} was extracted from another gallery folder or "
                    f"checkpoint ({z['checkpoint']}); delete it or pass a new file name."
                )
            feats = {k[len("feat_") :]: z[k] for k in z.files if k.startswith("feat_")}
            kept = [str(p) for p in z["paths"]]
        print(f"gallery features read from {cache} ({len(kept)} images)")
        return feats, kept
    feats, kept = folder_features(paths, config, model, variables, batch_size, "gallery features")
    if cache:
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        np.savez(
            cache,
            source_paths=np.array([os.path.abspath(p) for p in paths]),
            paths=np.array(kept),
            checkpoint=np.array(checkpoint_id),
            **{f"feat_{k}": v for k, v in feats.items()},
        )
        print(f"gallery features written to {cache}")
    return feats, kept


def choose_mode(mode: str | None, feats: dict, modes=PREFERRED_MODES) -> str:
    supported = evaluation.supported_modes([m for m in PREFERRED_MODES if m in modes], feats)
    if mode is None:
        return supported[0]
    if mode not in supported:
        raise ValueError(f"--mode {mode!r} is not available for this model's features; choose one of {supported}.")
    return mode


def indexed_gallery(index_dir: str, g_paths: list, q_feats: dict, config, model, variables, batch_size: int):
    """Open the gallery index in `index_dir` (or build it) and add the images of g_paths it does not hold yet."""
    local = q_feats.get("local")
    fp = gallery_index.fingerprint(
        variables, q_feats["global"].shape[1], local.shape[1:] if local is not None else None
    )
    exists = os.path.exists(os.path.join(index_dir, gallery_index.MANIFEST))
    if not exists and not g_paths:
        raise ValueError(f"--index {index_dir} holds no gallery index yet; pass --gallery FOLDER to build it.")
    index = gallery_index.open_index(index_dir, fp) if exists else None
    held = set(index.paths) if index else set()
    new = [p for p in map(os.path.abspath, g_paths) if p not in held]
    added = 0
    if new:
        feats, kept = folder_features(new, config, model, variables, batch_size, "gallery features (new)")
        if index is None:
            options = gallery_index.IndexOptions.from_config(config)
            sample = np.random.default_rng(0).permutation(len(kept))[: options.train_size]
            index = gallery_index.create(
                index_dir,
                options,
                fp,
                feats["global"][np.sort(sample)],
                None if local is None else local.shape[1:],
                expected_size=len(kept),
            )
        index.add(feats, kept)
        index.save()
        added = len(kept)
    print(f"gallery index {index_dir}: {index.size} images, {added} added ({index.manifest['index']['type']})")
    return index


def retrieve(
    checkpoint: str,
    query: str,
    gallery: str | None,
    out: str,
    gallery_features_path: str | None = None,
    topk: int = 10,
    mode: str | None = None,
    batch_size: int = 64,
    grid_queries: int = 8,
    index_dir: str | None = None,
) -> dict:
    """Rank the gallery for every query image; writes matches.csv/json and the PNGs into `out`.

    Returns {"mode", "queries" [Q paths], "gallery" [G paths], "ranked" (Q arrays of topk gallery indices),
    "ranked_distances" (Q arrays of their distances), "query_features", and without an index "distances" [Q, G]
    and "gallery_features" (Features dicts); with `index_dir` "index" (the open GalleryIndex)}.
    """
    if topk < 1:
        raise ValueError(f"--topk {topk} must be >= 1")
    if index_dir and gallery_features_path:
        raise ValueError("--index and --gallery-features both keep gallery features; pass one of them.")
    if gallery is None and not index_dir:
        raise ValueError("--gallery is required (it may be left out only with an existing --index).")
    g_paths = image_paths(gallery, "--gallery") if gallery is not None else []
    q_paths = image_paths(query, "--query")
    config, model, variables, step = checkpointing.load_checkpoint(checkpoint)
    checkpoint_id = f"{checkpointing.checkpoint_location(checkpoint)[0]}@{step}"
    q_feats, q_paths = folder_features(q_paths, config, model, variables, batch_size, "query features")
    result = {"queries": q_paths, "query_features": q_feats}
    lsa_options = LSAOptions.from_config(config.lsa)
    if index_dir:
        index = indexed_gallery(index_dir, g_paths, q_feats, config, model, variables, batch_size)
        mode = choose_mode(mode, q_feats, gallery_index.RESCORE_MODES)
        top, ranked = index.search(q_feats, topk, gallery_index.IndexOptions.from_config(config), mode, lsa_options)
        ranked, top = [r[r >= 0] for r in ranked], [t[r >= 0] for t, r in zip(top, ranked)]
        g_paths = index.paths
        stripes = lambda g: np.asarray(index.candidate_features(np.array([[g]]))["local"][0, 0], np.float32)
        result["index"] = index
    else:
        g_feats, g_paths = gallery_features(
            g_paths, gallery_features_path, checkpoint_id, config, model, variables, batch_size
        )
        mode = choose_mode(mode, q_feats)
        dist = distances.pairwise_distance(q_feats, g_feats, mode, lsa_options)
        ranked = reports.rank_gallery(dist, topk=topk)
        top = [dist[q, r] for q, r in enumerate(ranked)]
        stripes = lambda g: g_feats["local"][g]
        result.update(distances=dist, gallery_features=g_feats)
    result.update(mode=mode, gallery=g_paths, ranked=ranked, ranked_distances=top)

    os.makedirs(out, exist_ok=True)
    rows = [
        {"query": q_paths[q], "rank": r + 1, "gallery": g_paths[g], "distance": float(top[q][r])}
        for q in range(len(q_paths))
        for r, g in enumerate(ranked[q])
    ]
    with open(os.path.join(out, "matches.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["query", "rank", "gallery", "distance"])
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out, "matches.json"), "w") as f:
        json.dump(
            {
                "checkpoint": checkpoint_id,
                "mode": mode,
                "matches": {
                    qp: [{k: r[k] for k in ("rank", "gallery", "distance")} for r in rows if r["query"] == qp]
                    for qp in q_paths
                },
            },
            f,
            indent=2,
        )
    shown = list(range(min(grid_queries, len(q_paths))))
    reports.retrieval_grid(
        {q: _row(len(g_paths), ranked[q], top[q]) for q in shown},
        q_paths,
        g_paths,
        os.path.join(out, "retrieval_grid.png"),
        query_indices=shown,
        topk=topk,
    )
    if "local" in q_feats and len(ranked[0]):
        best = int(ranked[0][0])
        reports.alignment_figure(
            q_paths[0],
            g_paths[best],
            q_feats["local"][0],
            stripes(best),
            os.path.join(out, "alignment_top1.png"),
            window=lsa_options.window,
            labels=("query", "match #1"),
        )
    return result


def _row(num_gallery: int, ranked: np.ndarray, top: np.ndarray) -> np.ndarray:
    """A query's distances [G] for the grid: its ranked images, every other one at infinity."""
    row = np.full(num_gallery, np.inf, np.float32)
    row[ranked] = top
    return row


def format_matches(result: dict, limit: int = 3) -> str:
    """Table: each query with its best `limit` matches."""
    lines = [f"distance mode: {result['mode']}", f"{'query':<32} {'rank':>4}  {'distance':>9}  gallery"]
    for q, path in enumerate(result["queries"]):
        for r, g in enumerate(result["ranked"][q][:limit]):
            name = os.path.basename(path) if r == 0 else ""
            lines.append(
                f"{name:<32} {r + 1:>4}  {result['ranked_distances'][q][r]:9.4f}  "
                f"{os.path.basename(result['gallery'][g])}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gldfa_jax.retrieve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="run workdir, checkpoints/ folder or a step folder")
    parser.add_argument("--query", required=True, help="an image or a folder of images")
    parser.add_argument("--gallery", default=None, help="a folder of images (optional with an existing --index)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--gallery-features", default=None, help=".npz cache of the gallery's features")
    parser.add_argument(
        "--index",
        default=None,
        help="gallery index folder (FAISS shortlist + exact re-score; "
        "built on first use, new gallery images are added); settings: config retrieval.*",
    )
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--mode", default=None, help=f"distance mode (default: first available of {PREFERRED_MODES})")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        result = retrieve(
            args.checkpoint,
            args.query,
            args.gallery,
            args.out,
            args.gallery_features,
            args.topk,
            args.mode,
            args.batch_size,
            index_dir=args.index,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_matches(result))
    print(
        f"ranked matches written to {os.path.join(args.out, 'matches.csv')} and matches.json; "
        f"grid: {os.path.join(args.out, 'retrieval_grid.png')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
