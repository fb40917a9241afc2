#!/usr/bin/env python3
"""Decoding and preprocessing image files, SideTune against Pillow on the same files in one run.

    pip install pillow numpy
    python3 scripts/bench_decode.py [--folder DIR] [--size 224] [--threads 2] [--swift .build/release/sidetune]

Without --folder, builds a photo set first: scikit-image's sample photos (the wheel is fetched with
`pip download scikit-image --no-deps`; astronaut, chelsea, coffee, motorcycles, rocket, ...) cut
into 300 pictures of ImageNet-like sizes (random crops of 300-600 px sides), two thirds JPEG
(quality 90), one third PNG. Both engines then decode every file, convert to RGB, resize the
shorter side to size*256/224 with antialiased bicubic, crop the centre size x size and normalise
with ImageNet's mean and std into float32, on --threads threads (Pillow in a thread pool: it
releases the GIL while decoding and resizing). Prints images/s for Pillow, for Pillow with JPEG
draft mode (decoding at a reduced size in the DCT, as SideTune does), for SideTune, and the ratios.
"""
import argparse
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
from PIL import Image, ImageOps

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg",
          "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "grass.png", "gravel.png", "brick.png"]


def photo_set(out, count=300, seed=0):
    wheel_dir = tempfile.mkdtemp()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "scikit-image", "-d", wheel_dir, "-q"], check=True)
    wheel = zipfile.ZipFile(glob.glob(os.path.join(wheel_dir, "*.whl"))[0])
    sources = []
    for name in PHOTOS:
        with wheel.open("skimage/data/" + name) as f:
            sources.append(Image.open(f).convert("RGB"))
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = rng.integers(300, 601), rng.integers(300, 601)
        scale = max(w / src.width, h / src.height, 1.0)
        img = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.BICUBIC) if scale > 1 else src
        x, y = rng.integers(0, img.width - w + 1), rng.integers(0, img.height - h + 1)
        crop = img.crop((x, y, x + w, y + h))
        if i % 3 == 2:
            crop.save(os.path.join(out, f"photo_{i:04d}.png"))
        else:
            crop.save(os.path.join(out, f"photo_{i:04d}.jpg"), quality=90)
    return out


def pillow_prepare(path, size, draft):
    img = Image.open(path)
    side = round(size * 256 / 224)
    if draft and img.format == "JPEG":
        img.draft("RGB", (side, side))
    img = ImageOps.exif_transpose(img).convert("RGB")
    w, h = img.size
    rw, rh = (side, max(side, round(h * side / w))) if w <= h else (max(side, round(w * side / h)), side)
    img = img.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255
    return ((arr - MEAN) / STD).transpose(2, 0, 1)


def time_pillow(paths, size, threads, rounds, draft):
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(0, len(paths), 32):
                np.stack(list(pool.map(lambda p: pillow_prepare(p, size, draft), paths[i:i + 32])))
            best = min(best, time.perf_counter() - t0)
    return len(paths) / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--swift", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "sidetune"))
    a = ap.parse_args()
    folder = a.folder or photo_set(tempfile.mkdtemp(prefix="sidetune-photos-"))
    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))
    print(f"{len(paths)} images in {folder}, {a.size} px, {a.threads} threads, best of {a.rounds} rounds")
    rows = {}
    for name, draft in [("pillow", False), ("pillow-draft", True)]:
        rows[name] = time_pillow(paths, a.size, a.threads, a.rounds, draft)
    out = subprocess.run([a.swift, "bench", "images", "--folder", folder, "--size", str(a.size), "--threads", str(a.threads),
                          "--rounds", str(a.rounds), "--json"], check=True, capture_output=True, text=True).stdout
    rows["sidetune"] = json.loads(out)["images_per_second"]
    for name, rate in rows.items():
        print(f"{name:14s} {rate:8.1f} images/s")
    print(f"sidetune / pillow: {rows['sidetune'] / rows['pillow']:.2f}x; sidetune / pillow with draft: "
          f"{rows['sidetune'] / rows['pillow-draft']:.2f}x")


if __name__ == "__main__":
    main()
