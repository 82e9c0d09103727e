"""Re-encode a Market-layout folder of person crops small enough to travel to the GPU machine (64 MiB a call,
weights and code included), for benchmarks/imagenet_study.py.

    python -m benchmarks.pack_crops --src ../shared/data/cuhk03_real --out data/cuhk03_real_packed [--quality 75]

Same folders and file names (so identities and cameras parse as before: `<pid>_c<camera>...`), each image
re-encoded as JPEG at its own size or at most --max-size (384x128, the study's largest run), per axis, whichever is
smaller: never upsampled, because the trainer resizes every image to the run's size on decode anyway (bilinear,
per axis, gldfa_jax.experiment_data), so a larger pack would only carry bytes that the decode throws away.

The real CUHK03 crops (about 100×290 px, stored near JPEG quality 95) are all smaller than 384×128, so only the
quality shrinks them: 89.5 MiB of files as given; measured on every 20th crop, quality 90 -> 66 MiB, 85 -> 51,
80 -> 46, 75 -> 40 (mean absolute pixel error 3.2 of 255). The default, 75, leaves room beside the 14 MB
MobileNetV2 weights and the code. Afterwards the packed folder is read back with the project's reader and must
hold the same identities and cameras per split as the source.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import shutil
import sys

from PIL import Image

from data_pipelines.datasets.common import MARKET_FOLDERS, list_images, parse_market_folder
from data_pipelines.images import to_rgb

JPEG_EXTENSIONS = (".jpg", ".jpeg")


def parse_size(text: str, flag: str = "--max-size") -> tuple[int, int]:
    """'384x128' -> (384, 128): height × width, as the paper writes image sizes."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag}={text!r} is not HEIGHTxWIDTH; use e.g. {flag}=384x128.") from None
    if height < 1 or width < 1:
        raise ValueError(f"{flag}={text!r} must be positive; use e.g. {flag}=384x128.")
    return height, width


def packed_size(size: tuple[int, int], max_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) as PIL gives it -> the packed (width, height): each axis clamped, never enlarged. Per axis,
    because the trainer stretches each axis to the run's size on its own."""
    (width, height), (max_height, max_width) = size, max_size
    return min(width, max_width), min(height, max_height)


def packed_name(name: str) -> str:
    """The source name, with a non-JPEG extension (.png, .bmp) turned into .jpg: the pid and camera prefix stays."""
    stem, ext = os.path.splitext(name)
    return name if ext.lower() in JPEG_EXTENSIONS else stem + ".jpg"


def encode(path: str, max_size: tuple[int, int], quality: int) -> tuple[bytes, tuple, tuple]:
    """One image as JPEG bytes, with its source and packed (width, height)."""
    with Image.open(path) as img:
        img = to_rgb(img)
        source = img.size
        target = packed_size(source, max_size)
        if target != source:
            img = img.resize(target, Image.BILINEAR)  # the trainer's own filter (data_pipelines.images)
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality, optimize=True)  # optimize: smaller Huffman tables, lossless
    return buffer.getvalue(), source, target


def pack(src: str, out: str, max_size: tuple[int, int] = (384, 128), quality: int = 75) -> dict:
    """Writes the packed copy of `src` into `out`; returns {"images", "bytes", "resized", "splits"}."""
    if not 1 <= quality <= 95:
        raise ValueError(f"--quality={quality} is outside 1..95 (Pillow's useful JPEG range); the default is 75.")
    folders = {split: os.path.join(src, folder) for split, folder in MARKET_FOLDERS.items()}
    if not any(os.path.isdir(f) for f in folders.values()):
        raise ValueError(
            f"--src={src!r} holds none of {', '.join(MARKET_FOLDERS.values())}; give a Market-layout folder, "
            f"e.g. --src ../shared/data/cuhk03_real."
        )
    if os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"--out={out!r} exists and is not empty; remove it first or choose another --out.")
    totals = {"images": 0, "bytes": 0, "resized": 0, "splits": {}}
    for split, folder in folders.items():
        if not os.path.isdir(folder):
            continue
        target_dir = os.path.join(out, MARKET_FOLDERS[split])
        os.makedirs(target_dir, exist_ok=True)
        paths = list_images(folder)
        names = [packed_name(os.path.basename(p)) for p in paths]
        clashes = [n for n, c in collections.Counter(names).items() if c > 1]
        if clashes:
            raise ValueError(f"{folder}: {clashes[:3]} would each be written twice (a .png beside a .jpg of one name).")
        for path, name in zip(paths, names):
            data, source, target = encode(path, max_size, quality)
            with open(os.path.join(target_dir, name), "wb") as f:
                f.write(data)
            totals["images"] += 1
            totals["bytes"] += len(data)
            totals["resized"] += target != source
        totals["splits"][split] = len(paths)
    readme = os.path.join(src, "README.txt")
    if os.path.isfile(readme):
        shutil.copy(readme, os.path.join(out, "README.txt"))  # the dataset's terms travel with its images
    with open(os.path.join(out, "PACKED.txt"), "w") as f:
        f.write(
            f"Packed from {src} by benchmarks/pack_crops.py: JPEG quality {quality}, at most "
            f"{max_size[0]}x{max_size[1]} (height x width) per axis, never enlarged; {totals['resized']} of "
            f"{totals['images']} images were shrunk.\n"
        )
    return totals


def identities_and_cameras(root: str) -> dict:
    """{split: Counter of (pid, camera)} as the project's reader parses the names."""
    out = {}
    for split, folder in MARKET_FOLDERS.items():
        items, _ = parse_market_folder(os.path.join(root, folder))
        out[split] = collections.Counter((pid, cam) for _, pid, cam in items)
    return out


def folder_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="a Market-layout folder (bounding_box_train/, query/, ...)")
    parser.add_argument("--out", required=True, help="the packed copy, e.g. data/cuhk03_real_packed (git-ignored)")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality, 1..95 (default 75: ~40 MiB)")
    parser.add_argument("--max-size", default="384x128", help="HEIGHTxWIDTH no packed image exceeds, per axis")
    parser.add_argument("--max-mib", type=float, default=45.0, help="fail when the pack is larger than this")
    args = parser.parse_args(argv)
    try:
        totals = pack(args.src, args.out, parse_size(args.max_size), args.quality)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if identities_and_cameras(args.src) != identities_and_cameras(args.out):
        print(f"error: {args.out} parses to other identities or cameras than {args.src}.", file=sys.stderr)
        return 1
    mib = folder_bytes(args.out) / 2**20
    splits = ", ".join(f"{s} {n}" for s, n in totals["splits"].items())
    print(
        f"{args.out}: {totals['images']} images ({splits}), {mib:.1f} MiB at JPEG quality {args.quality} "
        f"({totals['resized']} shrunk to at most {args.max_size}); identities and cameras match {args.src}."
    )
    if mib > args.max_mib:
        print(
            f"error: the pack is {mib:.1f} MiB, over --max-mib={args.max_mib:g} (the device carries 64 MiB in all, "
            f"weights and code included); rerun with a lower --quality into an empty --out.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
