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
"""
import argparse, json, os, subprocess, sys, tempfile, time

def backbone_model(path):
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
    onnx.utils.extract_model(path, tmp, ["input_image"], outs)
    return tmp, outs

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
        sess.run(outs, {"input_image": x})
        times.append(time.perf_counter() - t0)
    return times, ort.__version__

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
    a = p.parse_args()

    def sidetune(precision):
        cmd = [a.binary, "bench", "encode", "--model", "vit-s14", "--onnx", a.onnx, "--batch", str(a.batch),
               "--size", str(a.size), "--iterations", str(a.iterations), "--threads", str(a.threads), "--json",
               "--precision", precision]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    ours = sidetune("f32")
    ours_bf16 = sidetune("bf16") if a.bf16 else None

    path, outs = backbone_model(a.onnx)
    try:
        times, version = time_ort(path, outs, a.batch, a.size, a.iterations, a.threads)
    finally:
        os.unlink(path)
    twin_ips = a.batch / min(times)
    ratio = ours["images_per_second"] / twin_ips
    print(f"ViT-S/14 encode, batch {a.batch} at {a.size}x{a.size}, {a.threads} thread(s), {ours['cpu']}")
    print(f"  SideTune     : {ours['images_per_second']:7.2f} images/s  passes {', '.join(f'{s:.3f}' for s in ours['seconds'])} s"
          f"  ({ours['effective_gflops']:.1f} GFLOPS, peak {ours['peak_gflops']:.1f}; peak RSS {ours['peak_rss_bytes'] / 2**20:.0f} MiB)")
    print(f"  onnxruntime {version}: {twin_ips:7.2f} images/s  passes {', '.join(f'{s:.3f}' for s in times)} s")
    print(f"  ratio SideTune / onnxruntime = {ratio:.2f}")
    if ours_bf16:
        b = ours_bf16["images_per_second"]
        print(f"  SideTune bf16: {b:7.2f} images/s  passes {', '.join(f'{s:.3f}' for s in ours_bf16['seconds'])} s"
              f"  ({ours_bf16['effective_gflops']:.1f} GFLOPS)")
        print(f"  ratio SideTune bf16 / SideTune f32 = {b / ours['images_per_second']:.2f}, "
              f"SideTune bf16 / onnxruntime f32 = {b / twin_ips:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"sidetune": ours, "onnxruntime": {"version": version, "seconds": times, "images_per_second": twin_ips},
                       "ratio": ratio}, f, indent=1)

if __name__ == "__main__":
    main()
