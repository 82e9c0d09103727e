"""Million-image galleries: a FAISS index of the global features shortlists candidates, and the exact distance
(§3.2's inference distance, global + LSA) re-scores the shortlist.

An index is a folder, persisted and reopened:
  manifest.json  the fingerprint of the model that made the features, feature shapes, index choice, size
  global.faiss   FAISS index of the global features (L2)
  global.f32     global features [N, d] float32, memory-mapped (the exact re-score reads them)
  local.bin      stripes [N, k, d] in `retrieval.local_dtype` (float16: 4 GB at 1M images), memory-mapped
  paths.txt      one gallery image path per line
Adding images appends to every file without retraining the FAISS index.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os

import jax
import numpy as np

from data_pipelines.optional import require
from gldfa_jax import distances
from gldfa_jax.checks import check_int
from gldfa_jax.lsa import LSAOptions

MANIFEST, FAISS_FILE, GLOBAL_FILE, LOCAL_FILE, PATHS_FILE = (
    "manifest.json",
    "global.faiss",
    "global.f32",
    "local.bin",
    "paths.txt",
)
INDEX_TYPES = ("ivf_flat", "hnsw", "flat")
RESCORE_MODES = ("global+lsa", "global", "lsa")  # the shortlist is by global; "final" features are not stored
LOCAL_DTYPES = ("float16", "float32")


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    """How an index is built and searched (config.retrieval; the defaults and what each does are commented there,
    measured by benchmarks.large_gallery). Checked on construction, each error naming the config field."""

    index: str = "ivf_flat"
    nlist: int = 0  # 0 = about 4·√N
    nprobe: int = 1024
    kmeans_iterations: int = 20
    train_size: int = 262144
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 256
    shortlist: int = 256
    local_dtype: str = "float16"

    def __post_init__(self):
        if self.index not in INDEX_TYPES:
            raise ValueError(f"retrieval.index={self.index!r}; choose one of {INDEX_TYPES}.")
        if self.local_dtype not in LOCAL_DTYPES:
            raise ValueError(f"retrieval.local_dtype={self.local_dtype!r}; choose one of {LOCAL_DTYPES}.")
        check_int("retrieval.nlist", self.nlist, 0, " (0 = about 4·√N lists)")
        for name in ("nprobe", "kmeans_iterations", "train_size", "hnsw_m", "hnsw_ef_construction"):
            check_int(f"retrieval.{name}", getattr(self, name))
        check_int("retrieval.hnsw_ef_search", self.hnsw_ef_search)
        check_int("retrieval.shortlist", self.shortlist)

    @classmethod
    def from_config(cls, config) -> IndexOptions:
        """config.retrieval -> IndexOptions."""
        return cls(**{f.name: config.retrieval[f.name] for f in dataclasses.fields(cls)})


def _faiss():
    return require("faiss", "index", "Gallery indexes (FAISS; a faiss-gpu build serves too)")


def fingerprint(variables, global_dim: int, local_shape: tuple | None) -> str:
    """Identity of the features an index holds: a hash of the model's weights and the feature shapes. An index
    built from another checkpoint or another feature size is refused."""
    digest = hashlib.sha256()
    for path, leaf in sorted(
        jax.tree_util.tree_leaves_with_path(jax.device_get(variables)), key=lambda pl: jax.tree_util.keystr(pl[0])
    ):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    local = "x".join(map(str, local_shape)) if local_shape else "none"
    return f"weights sha256:{digest.hexdigest()[:16]}, global {global_dim}, local {local}"


def ivf_lists(options: IndexOptions, num_images: int, num_train: int | None = None) -> int:
    """`retrieval.nlist`, or for 0 the FAISS guideline of about 4·√N lists for a gallery of N images, with at
    least 39 training points a list (FAISS warns below that) and at least one."""
    wanted = options.nlist or int(round(4 * math.sqrt(num_images)))
    return max(1, min(wanted, (num_images if num_train is None else num_train) // 39))


def _new_faiss(options: IndexOptions, dim: int, train: np.ndarray, expected_size: int):
    """An empty FAISS index of `options.index` for about `expected_size` images, trained on `train` [M, d] when it
    needs training."""
    faiss = _faiss()
    kind = options.index
    nlist = ivf_lists(options, expected_size, len(train)) if kind == "ivf_flat" else 0
    if kind == "flat" or (kind == "ivf_flat" and nlist == 1):
        return faiss.IndexFlatL2(dim), {"type": "flat"}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, options.hnsw_m)
        index.hnsw.efConstruction = options.hnsw_ef_construction
        return index, {"type": "hnsw", "hnsw_m": options.hnsw_m, "hnsw_ef_construction": options.hnsw_ef_construction}
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)
    index.cp.niter = options.kmeans_iterations
    index.cp.max_points_per_centroid = max(39, len(train) // nlist + 1)  # train on the sample given, all of it
    index.train(np.ascontiguousarray(train, np.float32))
    return index, {"type": "ivf_flat", "nlist": nlist, "trained_on": len(train)}


class GalleryIndex:
    """An open gallery index (see the module docstring); `create` or `open_index` one."""

    def __init__(self, directory: str, manifest: dict, index, paths: list):
        self.directory, self.manifest, self.index, self.paths = directory, manifest, index, paths
        self._global = self._local = None
        self._map()

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    def _file(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _map(self) -> None:
        """Memory-map the stored features of the first `size` images."""
        n, dim, local = self.size, self.manifest["global_dim"], self.manifest["local_shape"]
        if n == 0:
            self._global, self._local = np.zeros((0, dim), np.float32), None
            return
        self._global = np.memmap(self._file(GLOBAL_FILE), np.float32, "r", shape=(n, dim))
        if local:
            self._local = np.memmap(self._file(LOCAL_FILE), self.manifest["local_dtype"], "r", shape=(n, *local))

    def add(self, features: dict, paths: list) -> None:
        """Append images: features {"global": [n, d], "local": [n, k, d]} and their n paths. Call `save` after
        the last batch (the FAISS index and the manifest are written there)."""
        g = np.ascontiguousarray(features["global"], np.float32)
        local_shape = self.manifest["local_shape"]
        if g.ndim != 2 or g.shape[1] != self.manifest["global_dim"] or len(paths) != len(g):
            raise ValueError(
                f"features['global'] must be [n, {self.manifest['global_dim']}] with one path per row, "
                f"got {g.shape} and {len(paths)} paths."
            )
        if local_shape:
            stripes = features.get("local")
            if stripes is None or tuple(stripes.shape) != (len(g), *local_shape):
                raise ValueError(
                    f"features['local'] must be [{len(g)}, {', '.join(map(str, local_shape))}], got "
                    f"{None if stripes is None else tuple(stripes.shape)}."
                )
            with open(self._file(LOCAL_FILE), "r+b" if self.size else "wb") as f:
                f.seek(self.size * math.prod(local_shape) * np.dtype(self.manifest["local_dtype"]).itemsize)
                f.write(np.ascontiguousarray(stripes, self.manifest["local_dtype"]).tobytes())
        with open(self._file(GLOBAL_FILE), "r+b" if self.size else "wb") as f:
            f.seek(self.size * g.shape[1] * 4)  # past the last saved image: an unsaved add is overwritten
            f.write(g.tobytes())
        self.index.add(g)
        self.paths.extend(str(p) for p in paths)
        self.manifest["size"] = self.size + len(g)
        self._map()

    def save(self) -> None:
        """Write the FAISS index, the paths and then the manifest (last, so a crash leaves the previous size)."""
        _faiss().write_index(self.index, self._file(FAISS_FILE + ".tmp"))
        _write_text(self._file(PATHS_FILE + ".tmp"), "".join(f"{p}\n" for p in self.paths))
        _write_text(self._file(MANIFEST + ".tmp"), json.dumps({**self.manifest, "updated": _now()}, indent=2))
        for name in (FAISS_FILE, PATHS_FILE, MANIFEST):
            os.replace(self._file(name + ".tmp"), self._file(name))

    def search(
        self,
        q_feats: dict,
        topk: int,
        options: IndexOptions = IndexOptions(),
        mode: str = "global+lsa",
        lsa_options: LSAOptions = LSAOptions(),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rank the gallery for queries {"global": [Q, d], "local": [Q, k, d]}: the `retrieval.shortlist` nearest
        by global feature from FAISS, re-scored exactly in `mode`. Returns (distances [Q, t], indices [Q, t]),
        t = min(topk, size), ascending; a query whose shortlist is short pads with inf / -1."""
        if mode not in RESCORE_MODES:
            raise ValueError(f"mode {mode!r} cannot re-score an index shortlist; choose one of {RESCORE_MODES}.")
        if mode != "global" and self._local is None:
            raise ValueError(f"mode {mode!r} needs stripes; this index holds none (its model has no local branch).")
        shortlist = min(max(options.shortlist, topk), self.size)
        self._search_parameters(options)
        _, candidates = self.index.search(np.ascontiguousarray(q_feats["global"], np.float32), shortlist)
        keys = distances.required_keys(mode)
        scores = rescore(
            self.candidate_features(candidates, keys),
            {k: q_feats[k] for k in keys},
            mode,
            lsa_options,
        )
        scores = np.where(candidates < 0, np.inf, scores)
        order = np.argsort(scores, axis=1, kind="stable")[:, : min(topk, self.size)]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(candidates, order, 1)

    def candidate_features(self, candidates: np.ndarray, keys=("global", "local")) -> dict:
        """Stored features of candidates [Q, K] (-1 reads image 0, masked by the caller) -> {key: [Q, K, ...]}
        in their stored dtypes, for the `keys` the index holds."""
        rows = np.maximum(candidates, 0).ravel()
        stored = {"global": self._global, "local": self._local}
        return {
            k: stored[k][rows].reshape(*candidates.shape, *stored[k].shape[1:]) for k in keys if stored[k] is not None
        }

    def _search_parameters(self, options: IndexOptions) -> None:
        kind = self.manifest["index"]["type"]
        if kind == "ivf_flat":
            self.index.nprobe = min(options.nprobe, self.manifest["index"]["nlist"])
        elif kind == "hnsw":
            self.index.hnsw.efSearch = max(options.hnsw_ef_search, options.shortlist)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


_rescore = jax.jit(jax.vmap(distances.candidate_distance, in_axes=(0, 0, None, None)), static_argnums=(2, 3))


def rescore(candidates: dict, q_feats: dict, mode: str, lsa_options: LSAOptions = LSAOptions()) -> np.ndarray:
    """Exact distances of each query to its own candidates: q {key: [Q, ...]}, candidates {key: [Q, K, ...]} ->
    [Q, K] float32 (`distances.candidate_distance`: the dense evaluation's distance)."""
    keys = distances.required_keys(mode)
    q = jax.device_put({k: np.asarray(q_feats[k], np.float32) for k in keys})
    c = jax.device_put({k: candidates[k] for k in keys})  # float16 stripes stay float16 until the device
    return np.asarray(jax.device_get(_rescore(q, c, mode, lsa_options)))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def create(
    directory: str,
    options: IndexOptions,
    fingerprint_: str,
    train_global: np.ndarray,
    local_shape: tuple | None,
    expected_size: int | None = None,
) -> GalleryIndex:
    """A new, empty index in `directory` (which must not hold one), its FAISS part trained on `train_global`
    [M, d] (the gallery or a sample of it: IVF's lists come from it) and sized for `expected_size` images (default
    M). Fill it with `add`, then `save`."""
    if os.path.exists(os.path.join(directory, MANIFEST)):
        raise ValueError(f"{directory} already holds a gallery index; open it (open_index) or choose another folder.")
    dtype = options.local_dtype
    os.makedirs(directory, exist_ok=True)
    index, described = _new_faiss(options, train_global.shape[1], train_global, expected_size or len(train_global))
    manifest = {
        "format": 1,
        "fingerprint": fingerprint_,
        "global_dim": int(train_global.shape[1]),
        "local_shape": list(local_shape) if local_shape else None,
        "local_dtype": dtype,
        "index": described,
        "size": 0,
        "created": _now(),
    }
    return GalleryIndex(directory, manifest, index, [])


def open_index(directory: str, expected_fingerprint: str | None = None) -> GalleryIndex:
    """Reopen a saved index; with `expected_fingerprint`, refuse one built from other features."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise ValueError(f"{directory} holds no gallery index ({MANIFEST} is missing); build one first.")
    with open(path) as f:
        manifest = json.load(f)
    if expected_fingerprint is not None and manifest["fingerprint"] != expected_fingerprint:
        raise ValueError(
            f"the gallery index in {directory} was built from other features: index "
            f"[{manifest['fingerprint']}], this model [{expected_fingerprint}]. Use the checkpoint "
            "that built it, or another --index folder for this one."
        )
    index = _faiss().read_index(os.path.join(directory, FAISS_FILE))
    with open(os.path.join(directory, PATHS_FILE)) as f:
        paths = f.read().splitlines()
    if index.ntotal != manifest["size"] or len(paths) != manifest["size"]:
        raise ValueError(
            f"the gallery index in {directory} is inconsistent: manifest size {manifest['size']}, FAISS "
            f"{index.ntotal} vectors, {len(paths)} paths; rebuild it."
        )
    return GalleryIndex(directory, manifest, index, paths)
