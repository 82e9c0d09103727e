"""Dataset registry: ``get_dataset(name, root, **options) -> ReIDDataset``.

Names: market1501, dukemtmcreid, cuhk03 (variant, split, split_id, extract_dir), cuhk03_np (variant),
msmt17 (include_val), market_layout (any folder in Market-1501 layout; synthetic and partial sets).
"""

from __future__ import annotations

import inspect

from data_pipelines.datasets.common import PUBLISHED_STATS, DatasetNotFoundError, Record, ReIDDataset, check_published
from data_pipelines.datasets.cuhk03 import read_cuhk03, read_cuhk03_np
from data_pipelines.datasets.dukemtmc import read_dukemtmcreid
from data_pipelines.datasets.market1501 import read_market1501, read_market_layout
from data_pipelines.datasets.msmt17 import read_msmt17

_READERS = {
    "market1501": read_market1501,
    "dukemtmcreid": read_dukemtmcreid,
    "cuhk03": read_cuhk03,
    "cuhk03_np": read_cuhk03_np,
    "msmt17": read_msmt17,
    "market_layout": lambda root: read_market_layout(root),
}

__all__ = [
    "Record",
    "ReIDDataset",
    "DatasetNotFoundError",
    "PUBLISHED_STATS",
    "get_dataset",
    "available_datasets",
    "default_options",
    "check_published",
]


def available_datasets() -> tuple:
    return tuple(_READERS)


def default_options(name: str) -> dict:
    """The options dataset ``name`` accepts, with their default values."""
    if name not in _READERS:
        raise ValueError(f"name={name!r} is not a known dataset; choose one of {available_datasets()}")
    return {k: p.default for k, p in inspect.signature(_READERS[name]).parameters.items() if k != "root"}


def get_dataset(name: str, root: str, **options) -> ReIDDataset:
    """Reads dataset ``name`` from ``root`` (the folder as distributed)."""
    allowed = list(default_options(name))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"option(s) {unknown} are not accepted by dataset {name!r}; it accepts {allowed or 'none'}")
    return _READERS[name](root, **options)
