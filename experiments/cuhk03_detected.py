"""CUHK03 detector boxes, 767/700 protocol (§4.1 settings; Table 4)."""

from experiments import _cuhk03_common


def get_config():
    return _cuhk03_common.get_config("detected")
