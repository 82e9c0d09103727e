"""The decoded splits a run trains and evaluates on, from `config.data` (dataset registry + image decoding)."""

import hashlib
import os
from typing import NamedTuple

import numpy as np
from absl import logging

from data_pipelines import datasets, images

NO_DATA_HINT = """No dataset at hand? The self-contained demo generates its own data:
  python -m gldfa_jax.main --config experiments/synthetic.py --workdir runs/synthetic"""
RAM_WARN_FRACTION = 0.5  # decoded splits above this share of the host's memory: advise data.cache_dir


class DataRootError(ValueError):
    """`data.root` does not hold the dataset."""


class Split(NamedTuple):
    images: np.ndarray  # [N, H, W, 3] uint8: an np.ndarray, or images.CachedImages (read on demand) with data.cache_dir
    pids: np.ndarray  # [N] int64 (training split: relabelled 0..C-1)
    camids: np.ndarray  # [N] int64


class ExperimentData(NamedTuple):
    train: Split
    query: Split
    gallery: Split
    num_classes: int


def ensure_data(data_config) -> None:
    """Generate the synthetic world when the config asks for it (data.generate) and data.root is absent or
    empty (a folder with data, e.g. a test-only set for cross-domain evaluation, is read as it is)."""
    root = data_config.root
    generate = data_config.generate
    if generate and not (os.path.isdir(root) and os.listdir(root)):  # only into an absent or empty folder
        from data_pipelines import synthetic

        logging.info("generating the synthetic re-ID world into %s", root)
        synthetic.generate(root, **generate.to_dict())


def _split(records, height: int, width: int, cache_prefix: str) -> Split:
    """The decoded split: in RAM, or in the on-disk cache at cache_prefix (.u8/.json) when it is not ""."""
    if not records:
        return Split(np.zeros((0, height, width, 3), np.uint8), np.zeros((0,), np.int64), np.zeros((0,), np.int64))
    if cache_prefix:
        pixels, kept = images.cache_images(records, height, width, cache_prefix)
    else:
        pixels, kept = images.load_images(records, height, width)
    return Split(pixels, np.array([r.pid for r in kept], np.int64), np.array([r.camid for r in kept], np.int64))


def _cache_prefixes(data_config) -> dict:
    """{split: cache file prefix} under data.cache_dir ("" each without one). The name carries the dataset, the
    size and a digest of data.root, so one folder can hold the caches of several datasets, roots and sizes."""
    folder = data_config.cache_dir
    root = hashlib.sha256(os.path.abspath(data_config.root).encode()).hexdigest()[:8]
    stem = f"{data_config.name}-{root}-{data_config.height}x{data_config.width}"
    return {s: os.path.join(folder, f"{stem}-{s}") if folder else "" for s in ("train", "query", "gallery")}


def _warn_if_large(data_config, num_images: int) -> None:
    """In RAM, a decoded set near the machine's memory ends in swapping or the OOM killer long after the decode
    began: say so up front, with the fix."""
    nbytes = num_images * data_config.height * data_config.width * 3
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if not data_config.cache_dir and nbytes > RAM_WARN_FRACTION * ram:
        logging.warning(
            "decoding %d images at %dx%d takes %.1f GB of host memory (%.1f GB installed); set "
            "data.cache_dir to a folder with that much free disk to read them from there instead",
            num_images,
            data_config.height,
            data_config.width,
            nbytes / 1e9,
            ram / 1e9,
        )


def load_experiment_data(data_config, need_train: bool = True) -> ExperimentData:
    """Decode train/query/gallery of the configured dataset at data.height × data.width.

    need_train=False (evaluation) accepts a dataset without a training split (cross-domain evaluation): its
    train Split is empty and num_classes 0; the model's classifier size then comes from the checkpoint.
    """
    ensure_data(data_config)
    try:
        dataset = datasets.get_dataset(data_config.name, data_config.root, **data_config.options.to_dict())
    except FileNotFoundError as e:  # the reader's message names the expected layout and where to get the data
        raise DataRootError(
            f"data.root={data_config.root!r} (dataset {data_config.name!r}): {e}\n" + NO_DATA_HINT
        ) from e
    logging.info("dataset %s at %s:\n%s", data_config.name, data_config.root, dataset.summary())
    if need_train and not dataset.train:
        raise DataRootError(
            f"data.root={data_config.root!r} has no training split (dataset {data_config.name!r}); "
            "training needs one. A test-only dataset can be evaluated: --mode eval --checkpoint RUN."
        )
    for split in ("query", "gallery"):
        if not dataset.split(split):
            raise DataRootError(f"the {split} split of data.root={data_config.root!r} is empty.")
    h, w = data_config.height, data_config.width
    train_records = dataset.train if need_train else []  # evaluation never reads training images
    _warn_if_large(data_config, len(train_records) + len(dataset.query) + len(dataset.gallery))
    cache = _cache_prefixes(data_config)
    return ExperimentData(
        _split(train_records, h, w, cache["train"]),
        _split(dataset.query, h, w, cache["query"]),
        _split(dataset.gallery, h, w, cache["gallery"]),
        int(dataset.num_train_pids),
    )
