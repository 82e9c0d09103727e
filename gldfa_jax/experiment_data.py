"""The decoded splits a run trains and evaluates on, from `config.data` (dataset registry + image decoding)."""
import os
from typing import NamedTuple

import numpy as np
from absl import logging

from data_pipelines import datasets, images

NO_DATA_HINT = """No dataset at hand? The self-contained demo generates its own data:
  python -m gldfa_jax.main --config experiments/synthetic.py --workdir runs/synthetic"""


class DataRootError(ValueError):
    """`data.root` does not hold the dataset."""


class Split(NamedTuple):
    images: np.ndarray  # [N, H, W, 3] uint8
    pids: np.ndarray    # [N] int64 (training split: relabelled 0..C-1)
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


def _split(records, height: int, width: int) -> Split:
    if not records:
        return Split(np.zeros((0, height, width, 3), np.uint8), np.zeros((0,), np.int64), np.zeros((0,), np.int64))
    pixels, kept = images.load_images(records, height, width)
    return Split(pixels, np.array([r.pid for r in kept], np.int64), np.array([r.camid for r in kept], np.int64))


def load_experiment_data(data_config, need_train: bool = True) -> ExperimentData:
    """Decode train/query/gallery of the configured dataset at data.height × data.width.

    need_train=False (evaluation) accepts a dataset without a training split (cross-domain evaluation): its
    train Split is empty and num_classes 0; the model's classifier size then comes from the checkpoint.
    """
    ensure_data(data_config)
    try:
        dataset = datasets.get_dataset(data_config.name, data_config.root, **data_config.options.to_dict())
    except FileNotFoundError as e:  # the reader's message names the expected layout and where to get the data
        raise DataRootError(f"data.root={data_config.root!r} (dataset {data_config.name!r}): {e}\n"
                            + NO_DATA_HINT) from e
    logging.info("dataset %s at %s:\n%s", data_config.name, data_config.root, dataset.summary())
    if need_train and not dataset.train:
        raise DataRootError(f"data.root={data_config.root!r} has no training split (dataset {data_config.name!r}); "
                            "training needs one. A test-only dataset can be evaluated: --mode eval --checkpoint RUN.")
    for split in ("query", "gallery"):
        if not dataset.split(split):
            raise DataRootError(f"the {split} split of data.root={data_config.root!r} is empty.")
    h, w = data_config.height, data_config.width
    train = _split(dataset.train if need_train else [], h, w)  # evaluation never reads training images
    return ExperimentData(train, _split(dataset.query, h, w), _split(dataset.gallery, h, w),
                          int(dataset.num_train_pids))
