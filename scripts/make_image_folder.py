#!/usr/bin/env python3
"""Writes an image-folder data set (one subfolder per class, train/ val/ test/ splits) of JPEG and
PNG files from Fashion-MNIST's own images, the way people keep photos: for `sidetune train --data
FOLDER`, eval and predict, and for the decoding benchmark.

    python3 scripts/make_image_folder.py OUT [--per-class 100] [--size 0] [--fashion DIR]

Images alternate between JPEG (quality 90) and PNG. A share of them are stored in other ways a
decoder must handle: RGB, palette PNGs, RGBA PNGs (alpha dropped), 16-bit grey PNGs, and JPEGs
stored rotated with an EXIF orientation tag that turns them upright again. --size N upscales to
N x N (bicubic) so files are photo-sized. Needs numpy and Pillow (pip install pillow numpy).
"""
import argparse
import gzip
import os
import struct

import numpy as np
from PIL import Image

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = struct.unpack(">" + "I" * (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def find(folder, stem):
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise SystemExit(f"{folder}: no {stem}(.gz)")


def exif_rotated(img):
    """The image stored rotated 90 degrees clockwise with EXIF orientation 8 (rotate 90 counter-
    clockwise to display): a reader that ignores the tag sees it sideways."""
    stored = img.transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    return stored, exif


def save(img, path, i):
    """Stores image number i in one of the ways a decoder must handle."""
    variant = i % 10
    if variant in (0, 2, 4, 6):
        img.save(path + ".jpg", quality=90)
    elif variant == 8:
        stored, exif = exif_rotated(img)
        stored.save(path + ".jpg", quality=90, exif=exif)
    elif variant == 1:
        img.convert("RGB").save(path + ".png")
    elif variant == 3:
        img.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path + ".png")
    elif variant == 5:
        rgba = img.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(path + ".png")
    elif variant == 7:
        Image.fromarray(np.asarray(img, np.uint16) * 257).save(path + ".png")
    else:
        img.save(path + ".png")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=100, help="training images per class (validation, test: a quarter each)")
    ap.add_argument("--size", type=int, default=0, help="upscale to SIZE x SIZE (0: keep 28 x 28)")
    ap.add_argument("--fashion", default=os.environ.get("SIDETUNE_FASHION_DIR"), help="folder of the Fashion-MNIST IDX files")
    a = ap.parse_args()
    if not a.fashion:
        raise SystemExit("set --fashion or SIDETUNE_FASHION_DIR (sidetune fetch fashion-mnist-1k)")
    train_x, train_y = idx(find(a.fashion, "train-images-idx3-ubyte")), idx(find(a.fashion, "train-labels-idx1-ubyte"))
    test_x, test_y = idx(find(a.fashion, "t10k-images-idx3-ubyte")), idx(find(a.fashion, "t10k-labels-idx1-ubyte"))
    quarter = max(1, a.per_class // 4)
    plan = [("train", train_x, train_y, 0, a.per_class), ("val", train_x, train_y, a.per_class, quarter),
            ("test", test_x, test_y, 0, quarter)]
    written = 0
    for split, xs, ys, skip, count in plan:
        for c, name in enumerate(CLASSES):
            folder = os.path.join(a.out, split, name)
            os.makedirs(folder, exist_ok=True)
            members = np.flatnonzero(ys == c)[skip:skip + count]
            for k, i in enumerate(members):
                img = Image.fromarray(xs[i])
                if a.size:
                    img = img.resize((a.size, a.size), Image.Resampling.BICUBIC)
                save(img, os.path.join(folder, f"{split}_{i:05d}"), k)
                written += 1
    print(f"wrote {written} images of {len(CLASSES)} classes to {a.out} (train/, val/, test/)")


if __name__ == "__main__":
    main()
