"""TFDS builders for the re-ID datasets: splits train / query / gallery stored as array_record, no TensorFlow.

Each example: ``image`` (the encoded file bytes, re-encoded as PNG only when not already RGB), ``pid`` (train:
relabelled 0..N-1), ``camid`` (0-based), ``file_name``. The readers in ``data_pipelines.datasets`` do the
parsing, so a TFDS copy holds exactly what ``get_dataset`` returns. Build (``tfds build`` itself imports
TensorFlow, so use this module's CLI):

    python -m data_pipelines.tfds_builders market1501 --manual_dir ~/data/market1501 --data_dir ~/tfds
    python -m data_pipelines.tfds_builders cuhk03 --config detected --manual_dir ... --data_dir ...

Read back with ``tfds.data_source`` (random access), ``split_images`` (decoded and resized on read) or
``load_split`` (decoded, resized uint8 arrays). ``prepare`` builds a copy on first use and rebuilds it when the
source files change: how ``data.source = "tfds"`` (gldfa_jax.experiment_data) reads a dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import warnings

import numpy as np
from absl import logging
from PIL import Image

from data_pipelines.datasets import default_options, get_dataset
from data_pipelines.datasets.common import MARKET_LAYOUT, SPLITS
from data_pipelines.images import LazyImages, to_rgb
from data_pipelines.optional import require

tfds = require("tensorflow_datasets", "tfds", "Reading data through TFDS")

_LAYOUT = "Unpack the release so that {where}. Pass that folder as --manual_dir (download_config.manual_dir)."


def encoded_rgb(path: str):
    """The file's bytes if it is an RGB JPEG/PNG, else a lossless RGB PNG; None if unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode == "RGB" and img.format in ("JPEG", "PNG"):
                return data
            buf = io.BytesIO()
            to_rgb(img).save(buf, format="PNG")
            return buf.getvalue()
    except Exception:  # unreadable / truncated / empty: skipped and reported once per split
        return None


class ReIDBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder: ``READER`` names the ``get_dataset`` entry, configs map to its options."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release: train/query/gallery, encoded images, pid, camid, file name.",
        "1.1.0": "Examples in the reader's order (no shuffling), so index i is the folder pipeline's image i.",
    }
    READER = ""
    CONFIG_OPTIONS: dict = {}
    # Manual-download datasets have no checksum file; without this TFDS looks one up next to the module
    # through importlib_resources, which etils does not always install.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip(),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "pid": tfds.features.Scalar(dtype=np.int64),
                    "camid": tfds.features.Scalar(dtype=np.int64),
                    "file_name": tfds.features.Text(),
                }
            ),
            # The P×K sampler's index batches and the evaluation's ranking ties follow the image order: keep the
            # reader's, so a run from this copy sees what a run from the folder sees.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        options = self.CONFIG_OPTIONS.get(self.builder_config.name, {}) if self.builder_config else {}
        ds = get_dataset(self.READER, str(dl_manager.manual_dir), **options)
        return {s: self._generate_examples(ds.split(s)) for s in SPLITS}

    def _generate_examples(self, records):
        skipped = []
        for i, rec in enumerate(records):
            data = encoded_rgb(rec.path)
            if data is None:
                skipped.append(rec.path)
                continue
            yield (
                f"{i:08d}",
                {
                    "image": data,
                    "pid": rec.pid,
                    "camid": rec.camid,
                    "file_name": rec.path.replace("\\", "/").rsplit("/", 1)[-1],
                },
            )
        if skipped:
            warnings.warn(f"{self.name}: skipped {len(skipped)} unreadable image(s): {skipped[:20]}", stacklevel=2)


def _variant_configs():
    return [tfds.core.BuilderConfig(name=v, description=f"{v} boxes") for v in ("labeled", "detected")]


class Market1501(ReIDBuilder):
    """Market-1501 (Zheng et al., ICCV 2015); junk (pid -1) dropped, distractors (pid 0) in the gallery."""

    READER = "market1501"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(
        where=f"manual_dir/Market-1501-v15.09.15/ (or manual_dir itself) holds {MARKET_LAYOUT}"
    )


class Dukemtmcreid(ReIDBuilder):
    """DukeMTMC-reID (Zheng et al., ICCV 2017)."""

    READER = "dukemtmcreid"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(
        where=f"manual_dir/DukeMTMC-reID/ (or manual_dir itself) holds {MARKET_LAYOUT}"
    )


class Cuhk03(ReIDBuilder):
    """CUHK03 (Li et al., CVPR 2014) with the 767/700 protocol (Zhong et al., CVPR 2017); needs h5py."""

    READER = "cuhk03"
    BUILDER_CONFIGS = _variant_configs()
    CONFIG_OPTIONS = {"labeled": {"variant": "labeled"}, "detected": {"variant": "detected"}}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(
        where="manual_dir (or manual_dir/cuhk03_release/) holds cuhk-03.mat, and manual_dir holds "
        "cuhk03_new_protocol_config_labeled.mat and cuhk03_new_protocol_config_detected.mat; images are "
        "extracted once into manual_dir/cuhk03_extracted/"
    )


class Cuhk03Np(ReIDBuilder):
    """CUHK03-NP: the 767/700 protocol released as folders in Market layout."""

    READER = "cuhk03_np"
    BUILDER_CONFIGS = _variant_configs()
    CONFIG_OPTIONS = Cuhk03.CONFIG_OPTIONS
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(
        where=f"manual_dir/labeled/ and manual_dir/detected/ (or manual_dir/cuhk03-np/...) hold {MARKET_LAYOUT}"
    )


class Msmt17(ReIDBuilder):
    """MSMT17 (Wei et al., CVPR 2018), V1 or V2; train = list_train + list_val."""

    READER = "msmt17"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(
        where="manual_dir/MSMT17_V1/ (train/, test/) or manual_dir/MSMT17_V2/ (mask_train_v2/, mask_test_v2/) "
        "holds list_train.txt, list_val.txt, list_query.txt, list_gallery.txt"
    )


class MarketLayout(ReIDBuilder):
    """Any dataset in Market-1501 layout (synthetic world, Partial-Market/Duke, custom data)."""

    READER = "market_layout"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _LAYOUT.format(where=f"manual_dir holds {MARKET_LAYOUT}")


BUILDERS = {cls.READER: cls for cls in (Market1501, Dukemtmcreid, Cuhk03, Cuhk03Np, Msmt17, MarketLayout)}


def _builder(name: str, data_dir: str, config: str | None):
    if name not in BUILDERS:
        raise ValueError(f"name={name!r} has no TFDS builder; choose one of {list(BUILDERS)}")
    cls = BUILDERS[name]
    if cls.BUILDER_CONFIGS and config is None:
        config = cls.BUILDER_CONFIGS[0].name
    if config is not None and config not in [c.name for c in cls.BUILDER_CONFIGS]:
        raise ValueError(
            f"config={config!r} is not one of {[c.name for c in cls.BUILDER_CONFIGS] or 'none'} for {name}"
        )
    return cls(data_dir=data_dir, config=config, file_format="array_record")


def build(name: str, manual_dir: str, data_dir: str, config: str | None = None):
    """Prepares the array_record TFDS copy of dataset ``name`` from ``manual_dir`` into ``data_dir``."""
    builder = _builder(name, data_dir, config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def data_source(name: str, data_dir: str, config: str | None = None) -> dict:
    """``{split: random-access source}`` of a built copy; items are dicts with an undecoded ``image``."""
    builder = _builder(name, data_dir, config)
    return builder.as_data_source(decoders={"image": tfds.decode.SkipDecoding()})


def builder_config(name: str, options: dict) -> str | None:
    """The builder config that reads dataset ``name`` as ``get_dataset(name, root, **options)`` does (None for
    builders without configs); ValueError when no config does."""
    if name not in BUILDERS:
        raise ValueError(f"name={name!r} has no TFDS builder; choose one of {list(BUILDERS)}")
    cls = BUILDERS[name]
    defaults = default_options(name)
    wanted = {**defaults, **options}
    candidates = [c.name for c in cls.BUILDER_CONFIGS] or [None]
    for config in candidates:
        if wanted == {**defaults, **cls.CONFIG_OPTIONS.get(config, {})}:
            return config
    raise ValueError(
        f"data.options={options} of dataset {name!r} has no TFDS builder config (they read "
        f"{[cls.CONFIG_OPTIONS.get(c, {}) for c in candidates]}); use data.source='folder' for these options."
    )


def files_fingerprint(paths) -> str:
    """sha256 of the files' paths, sizes and mtimes: changes whenever a prepared copy of them must."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(json.dumps([os.fspath(p), st.st_size, st.st_mtime_ns]).encode())
        except OSError:  # a missing file is skipped when building; its appearance must invalidate the copy
            h.update(json.dumps([os.fspath(p), -1, -1]).encode())
    return h.hexdigest()


def prepare(name: str, manual_dir: str, data_dir: str, config: str | None, fingerprint: str) -> dict:
    """``data_source`` of the copy of ``manual_dir`` in ``data_dir``, built first when absent or when it was built
    from files with another ``fingerprint`` (``files_fingerprint`` of the dataset's images)."""
    builder = _builder(name, data_dir, config)
    stamp = os.path.join(builder.data_dir, "gldfa_source_fingerprint.json")
    if os.path.isdir(builder.data_dir):
        try:
            with open(stamp) as f:
                built_from = json.load(f)["fingerprint"]
        except (OSError, ValueError, KeyError):
            built_from = None
        if built_from != fingerprint:
            logging.warning(
                "TFDS copy %s is stale (the files in %s changed): rebuilding it", builder.data_dir, manual_dir
            )
            shutil.rmtree(builder.data_dir)
            builder = _builder(name, data_dir, config)
    if not os.path.isdir(builder.data_dir):
        logging.info("preparing the TFDS copy of %s (%s) in %s", manual_dir, name, builder.data_dir)
        builder = build(name, manual_dir, data_dir, config)
        with open(stamp, "w") as f:
            json.dump({"fingerprint": fingerprint, "manual_dir": os.path.abspath(manual_dir)}, f)
    return builder.as_data_source(decoders={"image": tfds.decode.SkipDecoding()})


def split_images(source, height: int, width: int, chunk: int = 4096) -> tuple:
    """A split's (LazyImages [N, height, width, 3] decoded on read, pids int64 [N], camids int64 [N])."""
    pids, camids = np.empty(len(source), np.int64), np.empty(len(source), np.int64)
    for start in range(0, len(source), chunk):  # labels only; the image bytes of a chunk are dropped at once
        for i, ex in enumerate(source.__getitems__(list(range(start, min(start + chunk, len(source))))), start):
            pids[i], camids[i] = ex["pid"], ex["camid"]
    images = LazyImages(lambda idx: [ex["image"] for ex in source.__getitems__(idx)], len(source), height, width)
    return images, pids, camids


def load_split(name: str, split: str, data_dir: str, height: int, width: int, config: str | None = None):
    """A built split decoded and resized: (uint8 [N, H, W, 3], pids int64 [N], camids int64 [N], file names)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    source = data_source(name, data_dir, config)[split]
    images, pids, camids = split_images(source, height, width)
    names = [ex["file_name"] for ex in source.__getitems__(list(range(len(source))))]
    return images.load(progress=False), pids, camids, [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m data_pipelines.tfds_builders",
        description="Build the array_record TFDS copy of a re-ID dataset (no TensorFlow).",
    )
    ap.add_argument("name", choices=list(BUILDERS))
    ap.add_argument("--manual_dir", required=True, help="the dataset as distributed")
    ap.add_argument("--data_dir", required=True, help="TFDS data folder to write")
    ap.add_argument("--config", help="labeled | detected (cuhk03, cuhk03_np)")
    a = ap.parse_args(argv)
    try:
        builder = build(a.name, a.manual_dir, a.data_dir, a.config)
    except (ValueError, ImportError, AssertionError) as e:
        ap.error(str(e))
    for split, info in builder.info.splits.items():
        print(f"{split:<8} {info.num_examples:8d} examples")
    print(f"written to {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
