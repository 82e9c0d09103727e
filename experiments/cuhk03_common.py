"""Shared CUHK03 setting: the two box variants differ only in `data.options.variant`."""
import ml_collections

from experiments import base


def get_config(variant: str) -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "cuhk03"
    c.data.root = "data/cuhk03"
    # Passed to data_pipelines.datasets.get_dataset(name, root, **options).
    c.data.options = ml_collections.ConfigDict({"variant": variant})
    return c
