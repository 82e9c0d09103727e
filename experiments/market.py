"""Market-1501 with the paper's settings (§4.1; Table 4)."""

from experiments import base


def get_config():
    c = base.get_config()  # §4.1 defaults are Market-1501's already
    c.data.name = "market1501"
    c.data.root = "data/market1501"
    return c
