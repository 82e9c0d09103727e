"""The decoded splits a run trains and evaluates on, from `config.data`: data.root's files or its TFDS copy
(data.source), in RAM or decoded per batch when they would not fit."""

import hashlib
import os
from typing import NamedTuple

import numpy as np
from absl import logging

from data_pipelines import datasets, images, optional

NO_DATA_HINT = """No dataset at hand? The self-contained demo generates its own data:
  python -m gldfa_jax.main --config experiments/synthetic.py --workdir runs/synthetic"""
RAM_FRACTION = 0.5  # decoded splits above this share of the host's memory are decoded per batch instead
SOURCES = ("folder", "tfds")


class DataRootError(ValueError):
    """`data.root` does not hold the dataset."""


class Split(NamedTuple):
    images: np.ndarray  # [N, H, W, 3] uint8: an np.ndarray, or images.LazyImages (decoded on read) for large sets
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


def _folder_split(records, height: int, width: int) -> Split:
    """The split's files decoded into RAM."""
    if not records:
        return Split(np.zeros((0, height, width, 3), np.uint8), np.zeros((0,), np.int64), np.zeros((0,), np.int64))
    pixels, kept = images.load_images(records, height, width)
    return Split(pixels, np.array([r.pid for r in kept], np.int64), np.array([r.camid for r in kept], np.int64))


def tfds_dir(data_config) -> str:
    """The folder of data.root's TFDS copy: under data.tfds_dir, or the user cache ($XDG_CACHE_HOME, else
    ~/.cache)/gldfa_jax/tfds. The name carries data.root's base name and digest, so one folder holds the copies
    of several roots read by the same builder (the synthetic world and Partial-Market are both market_layout)."""
    base = data_config.tfds_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gldfa_jax", "tfds"
    )
    root = os.path.abspath(data_config.root)
    return os.path.join(base, f"{os.path.basename(root)}-{hashlib.sha256(root.encode()).hexdigest()[:8]}")


def _tfds_splits(data_config, dataset, names: tuple, in_ram: bool) -> dict:
    """{split: Split} of `names` from data.root's TFDS copy (prepared on first use): decoded into RAM, or
    LazyImages decoded per batch when they would not fit."""
    from data_pipelines import tfds_builders  # the [tfds] extra: imported only when this path is taken

    records = dataset.train + dataset.query + dataset.gallery
    sources = tfds_builders.prepare(
        data_config.name,
        data_config.root,
        tfds_dir(data_config),
        tfds_builders.builder_config(data_config.name, data_config.options.to_dict()),
        tfds_builders.files_fingerprint(r.path for r in records),
    )
    out = {}
    for name in names:
        pixels, pids, camids = tfds_builders.split_images(sources[name], data_config.height, data_config.width)
        out[name] = Split(pixels.load() if in_ram else pixels, pids, camids)
    return out


def _choose_source(data_config, nbytes: int) -> tuple:
    """(source, in_ram): data.source, except that splits beyond RAM_FRACTION of the host's memory are read per
    batch from the TFDS copy. In RAM, a set near the machine's memory ends in swapping or the OOM killer long after
    the decode began; without the [tfds] extra the run decodes into RAM as asked, after a warning with the fix."""
    source = data_config.source
    if source not in SOURCES:
        raise ValueError(
            f"data.source={source!r} is not one of {SOURCES}: 'folder' decodes data.root's files, 'tfds' reads "
            "its TFDS copy (prepared on first use); set --config.data.source=folder or tfds."
        )
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes <= RAM_FRACTION * ram:
        return source, True
    if source == "folder" and not optional.installed("tensorflow_datasets"):
        logging.warning(
            "decoding the splits takes %.1f GB of host memory (%.1f GB installed). %s",
            nbytes / 1e9,
            ram / 1e9,
            optional.missing_extra("tfds", "Reading them per batch from a TFDS copy instead"),
        )
        return source, True
    logging.info(
        "the decoded splits would take %.1f GB of host memory (%.1f GB installed): decoding them per batch from "
        "the TFDS copy of data.root in %s (data.tfds_dir)",
        nbytes / 1e9,
        ram / 1e9,
        tfds_dir(data_config),
    )
    return "tfds", False


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
    names = ("train", "query", "gallery") if need_train else ("query", "gallery")  # evaluation reads no train images
    source, in_ram = _choose_source(data_config, sum(len(dataset.split(n)) for n in names) * h * w * 3)
    if source == "tfds":
        splits = _tfds_splits(data_config, dataset, names, in_ram)
    else:
        splits = {n: _folder_split(dataset.split(n), h, w) for n in names}
    train = splits.get("train") or _folder_split([], h, w)
    return ExperimentData(train, splits["query"], splits["gallery"], int(dataset.num_train_pids))
