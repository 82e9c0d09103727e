"""``python -m data_pipelines.info``: summary table, --json object, layout recognition, clear errors."""

import json
import os
import subprocess
import sys

import pytest

from helpers.data import CUHK03_SAMPLE, small_market

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _info(*args):
    return subprocess.run(
        [sys.executable, "-m", "data_pipelines.info", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_info_json_and_table(tmp_path):
    small_market(str(tmp_path / "Market-1501-v15.09.15"))
    r = _info(str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "train": {"images": 7, "identities": 3, "cameras": 3},
        "query": {"images": 2, "identities": 2, "cameras": 2},
        "gallery": {"images": 5, "identities": 3, "cameras": 2},
    }
    assert "published statistics" in r.stderr  # recognised as Market-1501 and compared with its numbers
    r = _info(str(tmp_path / "Market-1501-v15.09.15"))
    assert r.returncode == 0 and "gallery" in r.stdout and "# ids" in r.stdout


def test_info_recognises_cuhk03_np(tmp_path):
    small_market(str(tmp_path / "cuhk03-np" / "detected"))
    r = _info(str(tmp_path), "--json", "--variant", "detected")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["train"]["identities"] == 3


def test_info_errors(tmp_path):
    r = _info(str(tmp_path / "absent"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    (tmp_path / "stuff").mkdir()
    r = _info(str(tmp_path))
    assert r.returncode == 2 and "not a dataset layout" in r.stderr and "stuff" in r.stderr
    r = _info(str(tmp_path), "--dataset", "msmt17")
    assert r.returncode == 2 and "list_train.txt" in r.stderr


@pytest.mark.skipif(not os.path.isdir(CUHK03_SAMPLE), reason="real CUHK03 sample not present")
def test_info_on_real_sample():
    r = _info(CUHK03_SAMPLE, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["train"] == {"images": 492, "identities": 50, "cameras": 2}
