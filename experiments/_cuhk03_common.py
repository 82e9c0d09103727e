"""Shared CUHK03 setting: the two box variants differ only in `data.options.variant`.

The paper's CUHK03 numbers (Table 4: mAP with R-1, compared with PCB, MGN, HA-CNN on the same split) are those of
the 767/700 split (Zhong et al. 2017), which ranks a multi-shot gallery like Market-1501, so eval.protocol keeps
"market1501". CUHK03's original protocol (Li et al. 2014) is an opt-in:
--config.data.options.split=classic --config.eval.protocol=cuhk03_single_shot (one of its 20 test splits of
100 identities, data.options.split_id).
"""

import ml_collections

from experiments import base


def get_config(variant: str) -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "cuhk03"
    c.data.root = "data/cuhk03"
    # Passed to data_pipelines.datasets.get_dataset(name, root, **options); split and split_id are listed so that
    # the command line can set them (read_cuhk03's defaults).
    c.data.options = ml_collections.ConfigDict({"variant": variant, "split": "new", "split_id": 0})
    return c
