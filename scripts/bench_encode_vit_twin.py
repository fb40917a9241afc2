#!/usr/bin/env python3
"""Times SideTune's frozen ViT-S/14 encoder and onnxruntime on the same work in the same run,
prints both and the ratio.

Usage: python3 scripts/bench_encode_vit_twin.py --onnx PATH/vit_s_focus.onnx
         [--binary .build/release/sidetune] [--batch 32] [--size 224] [--iterations 3] [--threads 2]
         [--json OUT]

Runs `sidetune bench encode --model vit-s14 --json` first, then onnxruntime (CPU provider,
intra-op threads = --threads, all graph optimisations) on the backbone part of the same ONNX file:
the graph cut at the final LayerNorm with the 13 taps as extra outputs (what SideTune computes;
the saliency head is not run). One warm-up, then --iterations passes on seeded normal pixels of
batch x 3 x size x size; both report the best pass. onnxruntime is used only here, for comparison.

--torch also times a PyTorch twin: transformers' Dinov2Model with the ONNX file's weights (every
projection, LayerNorm, bias, layer scale, the patch embedding, the class token, and the position
table as the graph interpolates it for --size), checked against onnxruntime's output, in f32 and
under torch.autocast("cpu", dtype=torch.bfloat16). --rounds alternates every engine that many
times; each figure is the best pass over all rounds.
"""
import argparse, json, os, subprocess, sys, tempfile, time

def backbone_model(path, extra=()):
    import onnx
    m = onnx.load(path)
    by_name = {n.name: n for n in m.graph.node}
    outs = [by_name["/backbone/embeddings/Add"].output[0]]
    i = 0
    while f"/backbone/encoder/layer.{i}/Add_1" in by_name:
        outs.append(by_name[f"/backbone/encoder/layer.{i}/Add_1"].output[0])
        i += 1
    outs.append(by_name["/backbone/layernorm/Add_1"].output[0])
    tmp = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False).name
    onnx.utils.extract_model(path, tmp, ["input_image"], outs + list(extra))
    return tmp, outs

POSITIONS = "/backbone/embeddings/Concat_6_output_0"  # the class and patch position table, interpolated

def torch_twin(onnx_path, positions, threads):
    """Dinov2Model (transformers) holding the ONNX file's weights."""
    import numpy as np, onnx, torch
    from onnx import numpy_helper
    from transformers import Dinov2Config, Dinov2Model
    m = onnx.load(onnx_path)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    layers = 0
    while f"backbone.encoder.layer.{layers}.norm1.weight" in inits:
        layers += 1
    d = inits["backbone.embeddings.cls_token"].shape[-1]
    ffn = inits["backbone.encoder.layer.0.mlp.fc1.bias"].shape[0]
    patch = inits["backbone.embeddings.patch_embeddings.projection.weight"].shape[-1]
    side = int(round((positions.shape[1] - 1) ** 0.5)) * patch
    cfg = Dinov2Config(hidden_size=d, num_hidden_layers=layers, num_attention_heads=d // 64, intermediate_size=ffn,
                       mlp_ratio=ffn // d, patch_size=patch, image_size=side, layerscale_value=1.0, layer_norm_eps=1e-6,
                       hidden_act="gelu", attn_implementation="sdpa")
    model = Dinov2Model(cfg).eval()
    # Projections are MatMul nodes named after the module ("/backbone/encoder/layer.0/mlp/fc1/MatMul"),
    # their weights [in, out] initializers.
    for n in m.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and n.name.startswith("/backbone/"):
            key = n.name[len("/backbone/"):-len("/MatMul")].replace("/", ".") + ".weight"
            inits["backbone." + key] = inits[n.input[1]].T
    # transformers 5 names the attention projections q_proj ... o_proj; the export used 4.x's names.
    renamed = {"attention.q_proj.": "attention.attention.query.", "attention.k_proj.": "attention.attention.key.",
               "attention.v_proj.": "attention.attention.value.", "attention.o_proj.": "attention.output.dense."}
    def onnx_name(key):
        for new, old in renamed.items():
            key = key.replace(new, old)
        return "backbone." + key
    state = {k: torch.from_numpy(inits[onnx_name(k)].copy()) for k in model.state_dict() if onnx_name(k) in inits}
    state["embeddings.position_embeddings"] = torch.from_numpy(positions.copy())
    missing = [k for k in model.state_dict() if k not in state and k != "embeddings.mask_token"]
    if missing:
        sys.exit(f"torch twin: no ONNX weight for {missing[:4]}")
    model.load_state_dict(state, strict=False)
    torch.set_num_threads(threads)
    return model

def time_torch(model, batch, size, iterations, bf16):
    import numpy as np, torch
    x = torch.from_numpy(np.random.default_rng(42).standard_normal((batch, 3, size, size), dtype=np.float32))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(pixel_values=x)  # warm-up
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            out = model(pixel_values=x).last_hidden_state
            times.append(time.perf_counter() - t0)
    return times, out.float().numpy()

def time_ort(model_path, outs, batch, size, iterations, threads):
    import numpy as np, onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model_path, o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(42).standard_normal((batch, 3, size, size), dtype=np.float32)
    sess.run(outs, {"input_image": x})  # warm-up
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        got = sess.run(outs, {"input_image": x})
        times.append(time.perf_counter() - t0)
    return times, ort.__version__, dict(zip(outs, got))

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True)
    p.add_argument("--binary", default=".build/release/sidetune")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--bf16", action="store_true",
                   help="also time SideTune with bf16 products (--precision bf16; onnxruntime's CPU provider has no "
                        "bf16 mode for this f32 graph)")
    p.add_argument("--torch", action="store_true", help="also time a PyTorch twin with the same weights (f32, and "
                   "bf16 autocast with --bf16)")
    p.add_argument("--rounds", type=int, default=1, help="alternate the engines this many times")
    a = p.parse_args()

    def sidetune(precision):
        cmd = [a.binary, "bench", "encode", "--model", "vit-s14", "--onnx", a.onnx, "--batch", str(a.batch),
               "--size", str(a.size), "--iterations", str(a.iterations), "--threads", str(a.threads), "--json",
               "--precision", precision]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])

    path, outs = backbone_model(a.onnx, [POSITIONS] if a.torch else [])
    last = outs[-1]
    runs = {k: [] for k in ["sidetune", "sidetune_bf16", "onnxruntime", "torch", "torch_bf16"]}
    twin, version, check = None, None, []
    try:
        for r in range(a.rounds):
            runs["sidetune"].append(sidetune("f32")["images_per_second"])
            if a.bf16:
                runs["sidetune_bf16"].append(sidetune("bf16")["images_per_second"])
            times, version, got = time_ort(path, outs + ([POSITIONS] if a.torch else []), a.batch, a.size,
                                           a.iterations, a.threads)
            runs["onnxruntime"].append(a.batch / min(times))
            if a.torch:
                import torch, transformers
                if twin is None:
                    twin = torch_twin(a.onnx, got[POSITIONS], a.threads)
                for key, bf16 in [("torch", False), ("torch_bf16", True)]:
                    t, out = time_torch(twin, a.batch, a.size, a.iterations, bf16)
                    runs[key].append(a.batch / min(t))
                    ref = got[last]
                    check.append((key, float(abs(out - ref).max() / abs(ref).max())))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items() if v), file=sys.stderr)
    finally:
        os.unlink(path)
    best = {k: max(v) for k, v in runs.items() if v}
    print(f"ViT-S/14 encode, batch {a.batch} at {a.size}x{a.size}, {a.threads} thread(s), best of {a.rounds} "
          f"alternated round(s) of {a.iterations} passes, images/s:")
    names = {"sidetune": "SideTune f32", "sidetune_bf16": "SideTune bf16", "onnxruntime": f"onnxruntime {version} f32",
             "torch": "PyTorch twin f32", "torch_bf16": "PyTorch twin bf16 autocast"}
    for k, v in best.items():
        print(f"  {names[k]:28s} {v:7.2f}  (rounds: {', '.join(f'{x:.2f}' for x in runs[k])})")
    ratios = {"sidetune_vs_onnxruntime": best["sidetune"] / best["onnxruntime"]}
    if a.bf16:
        ratios["sidetune_bf16_vs_sidetune_f32"] = best["sidetune_bf16"] / best["sidetune"]
        ratios["sidetune_bf16_vs_onnxruntime_f32"] = best["sidetune_bf16"] / best["onnxruntime"]
        per_round = [b / f for b, f in zip(runs["sidetune_bf16"], runs["sidetune"])]
        ratios["sidetune_bf16_vs_f32_per_round"] = per_round
    if a.torch:
        ratios["sidetune_vs_torch_f32"] = best["sidetune"] / best["torch"]
        if a.bf16:
            ratios["sidetune_bf16_vs_torch_bf16"] = best["sidetune_bf16"] / best["torch_bf16"]
        worst = {}
        for key, err in check:
            worst[key] = max(worst.get(key, 0), err)
        print("  PyTorch twin against onnxruntime, max |difference| / max |output|: "
              + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()) + f" (transformers {transformers.__version__}, "
              f"torch {torch.__version__})")
    for k, v in ratios.items():
        print(f"  {k}: " + (", ".join(f"{x:.2f}" for x in v) if isinstance(v, list) else f"{v:.2f}"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "best": best, "ratios": ratios}, f, indent=1)

if __name__ == "__main__":
    main()
