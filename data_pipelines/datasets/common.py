"""Records, the dataset container and the checks every reader shares."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
SPLITS = ("train", "query", "gallery")
# Market-1501's folder per split, shared by DukeMTMC-reID, CUHK03-NP and the synthetic and partial sets.
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_LAYOUT = ", ".join(f"{f}/" for f in MARKET_FOLDERS.values())  # for messages: "bounding_box_train/, ..."
# Market-1501 / DukeMTMC-reID / CUHK03-NP names all start with "<pid>_c<camera>".
MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")

# Published statistics of what the readers return, per split: (identities, images).
# Market-1501 (Zheng et al. 2015): bounding_box_test holds 19,732 files; 3,819 are junk (pid -1)
# and are dropped, leaving 15,913 (750 test ids + the distractor id 0).
# CUHK03 counts are the 767/700 protocol of Zhong et al. 2017.
PUBLISHED_STATS = {
    "market1501": {"train": (751, 12936), "query": (750, 3368), "gallery": (751, 15913)},
    "dukemtmcreid": {"train": (702, 16522), "query": (702, 2228), "gallery": (1110, 17661)},
    "cuhk03/labeled": {"train": (767, 7368), "query": (700, 1400), "gallery": (700, 5328)},
    "cuhk03/detected": {"train": (767, 7365), "query": (700, 1400), "gallery": (700, 5332)},
    "msmt17": {"train": (1041, 32621), "query": (3060, 11659), "gallery": (3060, 82161)},
}


class Record(NamedTuple):
    """One image: file path, person id (train: relabelled 0..N-1) and 0-based camera id."""

    path: str
    pid: int
    camid: int


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset folder is missing or not laid out as distributed."""


@dataclasses.dataclass(frozen=True)
class ReIDDataset:
    """Train/query/gallery records of one dataset; ``unparsed`` lists image files whose names did not parse."""

    name: str
    root: str
    train: list
    query: list
    gallery: list
    unparsed: tuple = ()

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def split(self, name: str) -> list:
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is not one of {SPLITS}")
        return getattr(self, name)

    def stats(self) -> dict:
        """``{split: {"images": n, "identities": n, "cameras": n}}`` for train, query and gallery."""
        out = {}
        for s in SPLITS:
            recs = self.split(s)
            out[s] = {
                "images": len(recs),
                "identities": len({r.pid for r in recs}),
                "cameras": len({r.camid for r in recs}),
            }
        return out

    def summary(self) -> str:
        lines = [
            f"Dataset {self.name} ({self.root})",
            "  split    | # ids | # images | # cameras",
            "  ---------+-------+----------+----------",
        ]
        for s, st in self.stats().items():
            lines.append(f"  {s:<8} | {st['identities']:5d} | {st['images']:8d} | {st['cameras']:9d}")
        if self.unparsed:
            lines.append(
                f"  skipped {len(self.unparsed)} file(s) whose names did not parse: " + _short_list(self.unparsed)
            )
        return "\n".join(lines)


def _short_list(items: Sequence[str], limit: int = 10) -> str:
    names = [os.path.basename(x) for x in items]
    more = f" ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe_folder(path: str, limit: int = 12) -> str:
    """What a folder holds, for error messages."""
    if not os.path.exists(path):
        return "it does not exist"
    if not os.path.isdir(path):
        return "it is a file, not a folder"
    entries = sorted(os.listdir(path))
    if not entries:
        return "it is empty"
    more = f" ... (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return "it holds " + ", ".join(entries[:limit]) + more


def find_dataset_dir(
    root: str, required: Sequence[str], candidates: Sequence[str] = (), layout: Sequence[str] | None = None
) -> str:
    """The folder holding all of ``required``: ``root`` itself or ``root/<candidate>``. ``layout`` (default
    ``required``) is what the error message asks for."""
    root = os.path.expanduser(str(root))
    for d in [root] + [os.path.join(root, c) for c in candidates]:
        if all(os.path.exists(os.path.join(d, r)) for r in required):
            return d
    where = " or ".join([root] + [os.path.join(root, c) for c in candidates])
    raise DatasetNotFoundError(
        f"Expected a folder holding {', '.join(layout or required)} at {where}; found that {root}: "
        f"{describe_folder(root)}. Unpack the dataset as distributed (see 'Where to put each dataset' in "
        f"docs/datasets.md) or point root at the folder that holds {(layout or required)[0]}."
    )


def list_images(folder: str) -> list:
    """Image files in ``folder`` (sorted; other files such as Thumbs.db ignored)."""
    if not os.path.isdir(folder):
        raise DatasetNotFoundError(f"Expected the image folder {folder}; {describe_folder(folder)}.")
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
    )


def parse_market_folder(folder: str, pattern: re.Pattern = MARKET_NAME):
    """Returns ``([(path, pid, camid 0-based)], [unparsed paths])`` for a Market-layout folder."""
    parsed, unparsed = [], []
    for path in list_images(folder):
        m = pattern.match(os.path.basename(path))
        if m is None:
            unparsed.append(path)
            continue
        parsed.append((path, int(m.group(1)), int(m.group(2)) - 1))
    return parsed, unparsed


def relabel(items: Iterable[tuple]) -> list:
    """Train records with pids mapped to 0..N-1 in sorted order of the original pids."""
    items = list(items)
    mapping = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [Record(path, mapping[pid], camid) for path, pid, camid in items]


def make_dataset(
    name: str,
    root: str,
    train,
    query,
    gallery,
    unparsed=(),
    stats_key: str | None = None,
    where: dict | None = None,
    optional: tuple = (),
) -> ReIDDataset:
    """Relabels train, validates the splits and compares the counts with the published ones.

    ``where`` maps split → folder/file for error messages; ``stats_key`` selects the PUBLISHED_STATS row;
    splits named in ``optional`` may be empty (a test-only copy has no train split).
    """
    where = where or {}
    ds = ReIDDataset(
        name=name,
        root=str(root),
        train=relabel(train),
        query=[Record(*q) for q in query],
        gallery=[Record(*g) for g in gallery],
        unparsed=tuple(unparsed),
    )
    for s in SPLITS:
        if not ds.split(s) and s not in optional:
            raise ValueError(
                f"The {s} split of {name} is empty (read from {where.get(s, root)}): "
                f"check that the folder holds images named like 0001_c1_....jpg."
            )
    if unparsed:
        warnings.warn(
            f"{name}: {len(unparsed)} image(s) whose names or list entries do not parse were skipped: "
            + _short_list(unparsed),
            stacklevel=3,
        )
    gallery_pids = {r.pid for r in ds.gallery}
    missing = sorted({r.pid for r in ds.query} - gallery_pids)
    if missing:
        warnings.warn(
            f"{name}: {len(missing)} query identities have no image in the gallery and cannot be "
            f"matched (evaluation skips them): {missing[:10]}",
            stacklevel=3,
        )
    if stats_key is not None:
        check_published(ds, stats_key)
    return ds


def check_published(ds: ReIDDataset, key: str) -> bool:
    """Warns (and returns False) when the counts differ from PUBLISHED_STATS[key]."""
    expected = PUBLISHED_STATS[key]
    got = {s: (v["identities"], v["images"]) for s, v in ds.stats().items()}
    diff = [
        f"{s}: {got[s][0]} ids / {got[s][1]} images (published {expected[s][0]} / {expected[s][1]})"
        for s in SPLITS
        if got[s] != expected[s]
    ]
    if diff:
        warnings.warn(
            f"{ds.name} at {ds.root} differs from the published statistics: "
            + "; ".join(diff)
            + ". The copy may be incomplete or modified.",
            stacklevel=3,
        )
    return not diff
