"""DukeMTMC-reID with the paper's settings (§4.1: "all datasets share the same settings"; Table 4)."""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "dukemtmcreid"
    c.data.root = "data/dukemtmc-reid"
    return c
