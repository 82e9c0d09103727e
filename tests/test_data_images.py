"""Decode-once image loading: colour modes, resizing, unreadable files, the real CUHK03 sample, the on-disk cache."""

import os
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

from data_pipelines.augment import augment_batch, augment_params, eval_transform
from data_pipelines.datasets import Record, get_dataset
from data_pipelines.images import LazyImages, decode_image, load_images
from gldfa_jax.config import get_config

from helpers.data import CUHK03_SAMPLE, write_image


def _save(path, arr, mode=None, **kw):
    img = Image.fromarray(arr)
    if mode:
        img = img.convert(mode)
    img.save(path, **kw)
    return str(path)


def test_colour_modes_become_rgb(tmp_path):
    colour = np.array([200, 40, 90], np.uint8)
    flat = np.broadcast_to(colour, (10, 6, 3)).copy()
    paths = {
        "rgb": _save(tmp_path / "a.png", flat),
        "gray": _save(tmp_path / "b.png", flat, "L"),
        "cmyk": _save(tmp_path / "c.jpg", flat, "CMYK", quality=100),
        "rgba": _save(tmp_path / "d.png", flat, "RGBA"),
        "palette": _save(tmp_path / "e.png", flat, "P"),
        "gray16": str(tmp_path / "f.png"),
    }
    Image.fromarray(np.full((10, 6), 40000, np.uint16)).save(paths["gray16"])
    imgs, kept = load_images([Record(p, 0, 0) for p in paths.values()], 20, 12, progress=False)
    assert imgs.shape == (6, 20, 12, 3) and imgs.dtype == np.uint8 and len(kept) == 6
    gray_value = 0.299 * 200 + 0.587 * 40 + 0.114 * 90  # ITU-R 601 luma, PIL's "L"
    np.testing.assert_allclose(imgs[0], np.broadcast_to(colour, (20, 12, 3)), atol=1)  # resize keeps a flat colour
    np.testing.assert_allclose(imgs[1], gray_value, atol=1.5)
    np.testing.assert_allclose(imgs[2].reshape(-1, 3).mean(0), colour, atol=6)  # CMYK JPEG round trip
    np.testing.assert_allclose(imgs[3], np.broadcast_to(colour, (20, 12, 3)), atol=1)
    assert np.abs(imgs[4].astype(int) - colour).max() <= 40  # palette quantisation
    np.testing.assert_allclose(imgs[5], 40000 / 256, atol=1)


def test_bilinear_resize_of_a_ramp(tmp_path):
    ramp = np.repeat(np.linspace(0, 255, 8).astype(np.uint8)[None, :, None], 4, 0).repeat(3, 2)
    out = decode_image(_save(tmp_path / "r.png", ramp), 4, 16)
    assert (np.diff(out[0, :, 0].astype(int)) >= 0).all()  # monotone, no ringing
    assert out[0, 0, 0] <= 16 and out[0, -1, 0] >= 239


def test_unreadable_files_skipped_with_one_warning(tmp_path):
    good = _save(tmp_path / "good.jpg", np.zeros((8, 4, 3), np.uint8))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    full = (tmp_path / "good.jpg").read_bytes()
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(full[: len(full) // 2])
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    recs = [Record(str(p), i, 0) for i, p in enumerate([good, empty, truncated, text, tmp_path / "missing.jpg"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        imgs, kept = load_images(recs, 8, 4, progress=False)
    assert [r.pid for r in kept] == [0] and imgs.shape == (1, 8, 4, 3)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "skipped 4" in msg and all(n in msg for n in ("empty.jpg", "trunc.jpg", "text.jpg", "missing.jpg"))
    with pytest.raises(ValueError, match="none of the 2 images"), pytest.warns(UserWarning, match="skipped 2"):
        load_images(recs[1:3], 8, 4, progress=False)
    with pytest.raises(ValueError, match="height=0"):
        load_images(recs, 0, 4)


@pytest.mark.skipif(not os.path.isdir(CUHK03_SAMPLE), reason="real CUHK03 sample not present")
def test_real_images_through_the_pipeline():
    ds = get_dataset("market_layout", CUHK03_SAMPLE)
    recs = ds.train[:40] + ds.query[:8]
    sizes = {Image.open(r.path).size for r in recs}
    assert len(sizes) > 5  # varying sizes, as in the original data
    imgs, kept = load_images(recs, 64, 32, progress=False)
    assert imgs.shape == (48, 64, 32, 3) and kept == recs
    assert imgs.std() > 20  # real content, not blank
    cfg = augment_params(get_config().data)
    train = np.asarray(augment_batch(jax.random.PRNGKey(0), imgs[:32], cfg))
    assert train.shape == (32, 64, 32, 3) and np.isfinite(train).all()
    test = np.asarray(eval_transform(imgs[32:], cfg))
    np.testing.assert_array_equal(test, np.asarray(eval_transform(imgs[32:], cfg)))


def _world(tmp_path, n=12):
    """n small random images of varying sizes + their Records."""
    return [
        Record(write_image(str(tmp_path / "src" / f"{i:02d}.png"), seed=i, size=(10 + i, 6 + i % 3)), i, i % 2)
        for i in range(n)
    ]


def test_lazy_images_match_load_images_for_every_index(tmp_path):
    recs = _world(tmp_path)
    ref, _ = load_images(recs, 16, 8, progress=False)
    fetched = []

    def fetch(idx):
        fetched.append(list(idx))
        return [open(recs[i].path, "rb").read() for i in idx]  # encoded bytes, as a TFDS source holds them

    lazy = LazyImages(fetch, len(recs), 16, 8, num_workers=3)
    assert (lazy.shape, lazy.dtype, lazy.ndim, lazy.nbytes, len(lazy)) == (
        ref.shape,
        ref.dtype,
        ref.ndim,
        ref.nbytes,
        len(ref),
    )
    for key in (
        0,
        5,
        -1,
        np.int64(7),
        slice(2, 9),
        slice(None),
        slice(10, 40),
        slice(8, 3),
        slice(1, 11, 3),
        np.array([11, 0, 0, 4, 11, 3]),
        np.array([[1, 2], [2, -2]]),
        [3, 1],
        np.array([], np.int64),
    ):
        np.testing.assert_array_equal(lazy[key], ref[key], err_msg=f"key {key!r}")
        assert lazy[key].dtype == np.uint8
    assert [11, 0, 0, 4, 11, 3] in fetched  # only the rows asked for are read
    np.testing.assert_array_equal(np.asarray(lazy), ref)
    np.testing.assert_array_equal(lazy.load(progress=False, chunk=5), ref)
    for bad, err in ((12, IndexError), (np.array([0, -13]), IndexError), (np.array([0.5]), TypeError)):
        with pytest.raises(err):
            lazy[bad]
    with pytest.raises(ValueError, match="copy=False"):
        np.asarray(lazy, copy=False)
