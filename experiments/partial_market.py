"""Partial-Market (§4.2, Table 3): Market-1501 with vertical erasing/cropping, written by
`python -m data_pipelines.partial --src data/market1501 --out data/partial_market`."""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "market_layout"
    c.data.root = "data/partial_market"
    return c
