"""Partial-Duke (§4.2, Table 3): DukeMTMC-reID with vertical erasing/cropping, written by
`python -m data_pipelines.partial --src data/dukemtmc-reid --out data/partial_duke`."""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "market_layout"
    c.data.root = "data/partial_duke"
    return c
