"""CUHK03 detector boxes, new 767/700 protocol (§4.1 settings; Table 5)."""
from experiments import cuhk03_common


def get_config():
    return cuhk03_common.get_config("detected")
