#!/usr/bin/env python3
"""Golden files for SideTune's image decoding and preprocessing, made with Pillow (the reference
most image pipelines use): small images stored every way the decoders handle, the pixels Pillow
decodes from each (EXIF orientation applied, alpha dropped as convert() does), and the centre-crop
preprocessing of each at 28 px (shorter side to 32, Pillow's bicubic, centre crop, ImageNet
normalisation). Writes Tests/SideTuneDataTests/Goldens/images/.

    pip install pillow numpy && python3 scripts/make_image_goldens.py
"""
import json
import os

import numpy as np
from PIL import Image, ImageOps

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "SideTuneDataTests", "Goldens", "images")
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 28


def scene(w, h, seed):
    """A smooth colour picture with edges (gradients and a disc), so that JPEG and resampling matter."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / (3 + seed)) * np.cos(y / 5)
    g = 255 * x / max(w - 1, 1)
    b = np.where((x - w / 2) ** 2 + (y - h / 3) ** 2 < (min(w, h) / 4) ** 2, 230, 40) + rng.integers(0, 20, (h, w))
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))


def reference_pixels(path):
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("I;16", "I"):
        arr = (np.asarray(img, np.uint32) >> 8).astype(np.uint8)  # 16 bits cut to 8, as libpng's strip_16
        return arr[..., None]
    img = img.convert("L" if img.mode in ("L", "LA", "1") else "RGB")
    arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def centre_crop(path):
    img = ImageOps.exif_transpose(Image.open(path))
    img = img.convert("RGB") if img.mode not in ("I;16", "I") else Image.fromarray((np.asarray(img, np.uint32) >> 8).astype(np.uint8)).convert("RGB")
    w, h = img.size
    side = round(SIZE * 256 / 224)
    rw, rh = (side, max(side, round(h * side / w))) if w <= h else (max(side, round(w * side / h)), side)
    img = img.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - SIZE) // 2, (rh - SIZE) // 2
    arr = np.asarray(img.crop((left, top, left + SIZE, top + SIZE)), np.float32) / 255
    return ((arr - MEAN) / STD).transpose(2, 0, 1)


def main():
    os.makedirs(OUT, exist_ok=True)
    base = scene(40, 30, 1)
    grey = base.convert("L")
    cases = {
        "rgb.jpg": lambda p: base.save(p, quality=92),
        "grey.jpg": lambda p: grey.save(p, quality=92),
        "exif6.jpg": lambda p: base.transpose(Image.Transpose.ROTATE_90).save(p, quality=92, exif=exif(6)),
        "exif3.jpg": lambda p: base.transpose(Image.Transpose.ROTATE_180).save(p, quality=92, exif=exif(3)),
        "progressive.jpg": lambda p: base.save(p, quality=85, progressive=True),
        "rgb.png": lambda p: base.save(p),
        "grey.png": lambda p: grey.save(p),
        "palette.png": lambda p: base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(p),
        "rgba.png": lambda p: with_alpha(base).save(p),
        "grey16.png": lambda p: Image.fromarray(np.asarray(grey, np.uint16) * 257).save(p),
        "tall.png": lambda p: scene(18, 50, 2).save(p),
    }
    manifest = {}
    for name, write in cases.items():
        path = os.path.join(OUT, name)
        write(path)
        pixels = reference_pixels(path)
        pixels.tofile(path + ".pixels")
        centre_crop(path).astype("<f4").tofile(path + ".crop28")
        manifest[name] = {"height": pixels.shape[0], "width": pixels.shape[1], "channels": pixels.shape[2]}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {len(cases)} images and their Pillow references to {os.path.normpath(OUT)}")


def exif(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e


def with_alpha(img):
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(img.size))
    return rgba


if __name__ == "__main__":
    main()
