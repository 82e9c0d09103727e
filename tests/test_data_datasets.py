"""Dataset readers on fixture folders per dataset and on the real CUHK03 sample."""

import os
import warnings

import numpy as np
import pytest

from data_pipelines.datasets import (
    PUBLISHED_STATS,
    DatasetNotFoundError,
    Record,
    ReIDDataset,
    available_datasets,
    check_published,
    get_dataset,
)

from helpers.data import CUHK03_SAMPLE, market_tree, small_market, write_image


def _naive_relabel(pids):
    return {p: i for i, p in enumerate(sorted(set(pids)))}


def test_registry_names():
    assert set(available_datasets()) >= {"market1501", "dukemtmcreid", "cuhk03", "cuhk03_np", "msmt17", "market_layout"}
    with pytest.raises(ValueError, match="not a known dataset"):
        get_dataset("market", "/nowhere")
    with pytest.raises(ValueError, match="variant"):
        get_dataset("market1501", "/nowhere", variant="labeled")


def test_market1501_junk_distractors_relabel(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    small_market(str(root))
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"x")  # not an image: ignored
    write_image(str(root / "query" / "badname.jpg"))  # an image that does not parse
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = get_dataset("market1501", str(tmp_path))
    messages = " ".join(str(w.message) for w in caught)
    assert "badname.jpg" in messages  # listed, not silently dropped
    assert "published statistics" in messages  # a 7-image "Market-1501" is not the real one
    assert isinstance(ds, ReIDDataset) and all(isinstance(r, Record) for r in ds.train)
    assert [os.path.basename(p) for p in ds.unparsed] == ["badname.jpg"]
    # train: junk dropped, pids 2, 7, 9 → 0, 1, 2; camera c1 → 0
    mapping = _naive_relabel([2, 7, 9])
    expected = sorted(
        (f, mapping[int(f[:4])], int(f.split("_c")[1][0]) - 1)
        for f in os.listdir(root / "bounding_box_train")
        if f.endswith(".jpg") and not f.startswith("-1")
    )
    got = sorted((os.path.basename(r.path), r.pid, r.camid) for r in ds.train)
    assert got == expected and ds.num_train_pids == 3 and ds.num_train_cams == 3
    assert sorted({r.pid for r in ds.query}) == [11, 12]
    assert sorted(r.pid for r in ds.gallery) == [0, 0, 11, 11, 12]  # distractors kept, junk gone
    assert ds.stats()["gallery"] == {"images": 5, "identities": 3, "cameras": 2}
    assert "train" in ds.summary() and "badname.jpg" in ds.summary()


def test_dukemtmc_names(tmp_path):
    pattern = "{pid:04d}_c{cam}_f{idx:07d}.jpg"
    small_market(str(tmp_path / "DukeMTMC-reID"), pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = get_dataset("dukemtmcreid", str(tmp_path))
    assert ds.num_train_pids == 3 and len(ds.train) == 7
    assert sorted({r.camid for r in ds.gallery}) == [0, 1]


def test_market_layout_has_no_published_check(tmp_path):
    small_market(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a custom dataset must not be compared with Market's numbers
        ds = get_dataset("market_layout", str(tmp_path))
    assert len(ds.query) == 2


def test_missing_and_wrong_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        get_dataset("market1501", str(tmp_path / "absent"))
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="bounding_box_train.*holds images"):
        get_dataset("market_layout", str(tmp_path))


def test_empty_split_and_unmatched_query(tmp_path):
    market_tree(
        str(tmp_path / "a"),
        {"bounding_box_train": ["0001_c1_00.jpg"], "query": [], "bounding_box_test": ["0002_c2_00.jpg"]},
    )
    (tmp_path / "a" / "query").mkdir()
    with pytest.raises(ValueError, match="query split .* is empty"):
        get_dataset("market_layout", str(tmp_path / "a"))
    market_tree(
        str(tmp_path / "b"),
        {
            "bounding_box_train": ["0001_c1_00.jpg"],
            "query": ["0003_c1_00.jpg"],
            "bounding_box_test": ["0002_c2_00.jpg"],
        },
    )
    with pytest.warns(UserWarning, match="no image in the gallery.*3"):
        get_dataset("market_layout", str(tmp_path / "b"))


def test_check_published_compares_counts():
    def fake(split_counts):
        recs = {s: [Record(f"{s}{i}", i % ids, 0) for i in range(n)] for s, (ids, n) in split_counts.items()}
        return ReIDDataset("market1501", "/x", recs["train"], recs["query"], recs["gallery"])

    good = fake(PUBLISHED_STATS["market1501"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_published(good, "market1501")
    bad = fake({**PUBLISHED_STATS["market1501"], "query": (750, 3000)})
    with pytest.warns(UserWarning, match="query: 750 ids / 3000 images"):
        assert not check_published(bad, "market1501")


def test_cuhk03_np(tmp_path):
    small_market(str(tmp_path / "cuhk03-np" / "detected"), "{pid:04d}_c{cam}_{idx}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = get_dataset("cuhk03_np", str(tmp_path), variant="detected")
    assert ds.name == "cuhk03_np/detected" and ds.num_train_pids == 3
    with pytest.raises(ValueError, match="variant"):
        get_dataset("cuhk03_np", str(tmp_path), variant="both")


def _write_cuhk03_mat(path, h5py):
    """A MATLAB-v7.3-like cuhk-03.mat: 2 camera pairs (3 and 2 ids), images 0,1 (view 1) and 5,6 (view 2)."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def store(arr):
            counter[0] += 1
            return refs.create_dataset(str(counter[0]), data=arr).ref

        for variant in ("labeled", "detected"):
            pair_refs = []
            for pair, n_pids in enumerate((3, 2)):
                cells = np.empty((10, n_pids), dtype=h5py.ref_dtype)  # MATLAB [n_pids x 10], stored transposed
                for pid in range(n_pids):
                    for img in range(10):
                        if img in (0, 1, 5, 6):
                            val = 40 * pair + 10 * pid + img
                            arr = np.full((3, 6, 12), val, np.uint8)  # MATLAB [12 x 6 x 3] stored transposed
                        else:
                            arr = np.zeros(2, np.uint64)  # MATLAB's empty cell
                        cells[img, pid] = store(arr)
                pair_refs.append(store(cells))
            f.create_dataset(variant, data=np.array([pair_refs], dtype=h5py.ref_dtype))
        sets = [np.array([[1, 2], [2, 1]], float).T, np.array([[1, 1]], float).T]
        f.create_dataset("testsets", data=np.array([[store(s) for s in sets]], dtype=h5py.ref_dtype))


def test_cuhk03_mat_new_and_classic(tmp_path):
    h5py = pytest.importorskip("h5py")
    scipy_io = pytest.importorskip("scipy.io")
    release = tmp_path / "cuhk03_release"
    release.mkdir()
    _write_cuhk03_mat(str(release / "cuhk-03.mat"), h5py)
    files, labels = [], []
    for pair, n_pids, base in ((1, 3, 0), (2, 2, 3)):
        for pid in range(1, n_pids + 1):
            for view, imgs in ((1, (1, 2)), (2, (6, 7))):
                for img in imgs:
                    files.append(f"{pair}_{pid:03d}_{view}_{img:02d}.png")
                    labels.append(base + pid)
    labels = np.array(labels)
    idx = np.arange(len(files)) + 1  # MATLAB 1-based
    train = idx[labels <= 3]
    query = idx[(labels > 3) & np.isin([int(f[-6:-4]) for f in files], [1, 6])]
    gallery = np.setdiff1d(idx[labels > 3], query)
    scipy_io.savemat(
        str(tmp_path / "cuhk03_new_protocol_config_labeled.mat"),
        {
            "filelist": np.array(files, dtype=object)[:, None],
            "labels": labels[:, None],
            "train_idx": train[:, None],
            "query_idx": query[:, None],
            "gallery_idx": gallery[:, None],
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = get_dataset("cuhk03", str(tmp_path), variant="labeled")
    assert ds.stats()["train"] == {"images": 12, "identities": 3, "cameras": 2}
    assert ds.stats()["query"] == {"images": 4, "identities": 2, "cameras": 2}
    assert sorted(r.pid for r in ds.gallery) == [4, 4, 5, 5]
    assert {r.camid for r in ds.query} == {2, 3}  # pair 2 → cameras 2 (view 1) and 3 (view 2)
    # the extracted crop is the MATLAB image, transposed back to [H, W, 3]
    from PIL import Image

    rec = next(r for r in ds.query if os.path.basename(r.path) == "2_001_2_06.png")
    arr = np.asarray(Image.open(rec.path))
    assert arr.shape == (12, 6, 3) and (arr == 40 * 1 + 10 * 0 + 5).all()

    classic = get_dataset("cuhk03", str(tmp_path), variant="labeled", split="classic", split_id=0)
    assert classic.num_train_pids == 3 and len(classic.train) == 12
    assert {os.path.basename(r.path)[2:8] for r in classic.query} == {"002_1_", "001_1_"}
    assert all(os.path.basename(r.path).split("_")[2] == "2" for r in classic.gallery)
    with pytest.raises(ValueError, match="split_id=5"):
        get_dataset("cuhk03", str(tmp_path), split="classic", split_id=5)
    with pytest.raises(DatasetNotFoundError, match="cuhk03_new_protocol_config_detected.mat"):
        get_dataset("cuhk03", str(tmp_path), variant="detected")


def _msmt_tree(base, train_dir, test_dir):
    lists = {
        "list_train.txt": [(train_dir, 0, 1, 2), (train_dir, 1, 3, 2)],
        "list_val.txt": [(train_dir, 1, 3, 1)],
        "list_query.txt": [(test_dir, 0, 2, 1), (test_dir, 1, 5, 1)],
        "list_gallery.txt": [(test_dir, 0, 4, 2), (test_dir, 1, 15, 1)],
    }
    for list_name, entries in lists.items():
        lines, k = [], 0
        for folder, label, cam, count in entries:
            for _ in range(count):
                k += 1
                rel = f"{label:04d}/{label:04d}_{k:03d}_{cam:02d}_0303morning_0015_{list_name[5]}.jpg"
                write_image(os.path.join(base, folder, rel), seed=k)
                lines.append(f"{rel} {label}")
        with open(os.path.join(base, list_name), "w") as f:
            f.write("\n".join(lines + ["garbage line without label"]) + "\n")


@pytest.mark.parametrize("version,dirs", [("V1", ("train", "test")), ("V2", ("mask_train_v2", "mask_test_v2"))])
def test_msmt17(tmp_path, version, dirs):
    base = tmp_path / f"MSMT17_{version}"
    _msmt_tree(str(base), *dirs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = get_dataset("msmt17", str(tmp_path))
    assert ds.name == f"msmt17/{version}"
    assert ds.stats()["train"] == {"images": 5, "identities": 2, "cameras": 2}
    assert sorted(r.camid for r in ds.gallery) == [3, 3, 14]
    assert all(os.path.exists(r.path) for r in ds.train + ds.query + ds.gallery)
    assert len(ds.unparsed) == 4 and any("garbage" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="garbage"):
        no_val = get_dataset("msmt17", str(tmp_path), include_val=False)
    assert len(no_val.train) == 4


@pytest.mark.skipif(not os.path.isdir(CUHK03_SAMPLE), reason="real CUHK03 sample not present")
def test_real_cuhk03_sample():
    ds = get_dataset("market_layout", CUHK03_SAMPLE)
    st = ds.stats()
    assert st["train"] == {"images": 492, "identities": 50, "cameras": 2}
    assert st["query"] == {"images": 100, "identities": 50, "cameras": 2}
    assert st["gallery"]["identities"] == 50 and st["gallery"]["images"] == 346
    assert sorted({r.pid for r in ds.train}) == list(range(50))
    assert {r.pid for r in ds.query} == {r.pid for r in ds.gallery}
