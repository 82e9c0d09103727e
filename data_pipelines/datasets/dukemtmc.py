"""DukeMTMC-reID: Market layout, files ``PPPP_cC_fFFFFFFF.jpg``, 408 distractor ids in the gallery."""

from __future__ import annotations

from data_pipelines.datasets.common import ReIDDataset
from data_pipelines.datasets.market1501 import read_market_layout


def read_dukemtmcreid(root: str) -> ReIDDataset:
    """DukeMTMC-reID as distributed: ``root`` or ``root/DukeMTMC-reID``."""
    return read_market_layout(
        root, "dukemtmcreid", ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid"), stats_key="dukemtmcreid"
    )
