"""MSMT17 with the paper's settings (§4.1; Table 5)."""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "msmt17"
    c.data.root = "data/msmt17"
    return c
