#!/usr/bin/env python3
"""Times SideTune's GEMM and PyTorch's matmul on the same shapes in the same run, prints the ratio.

Usage: python3 scripts/compare_gemm_torch.py [--binary .build/release/sidetune] [--threads 1,2]
         [--shapes 1024x1024x1024,...] [--seconds 0.5] [--json OUT]
Alternates, for --rounds rounds, `sidetune bench gemm --json` (which also measures the machine's
FP32 peak) and PyTorch with torch.set_num_threads(t) on every (shape, threads) row, and keeps the
best time of each side: on shared VMs a noisy neighbour can slow either side for seconds, and
alternating keeps that from landing on one side only. PyTorch is used only here, for comparison;
SideTune never needs it.
"""
import argparse, json, subprocess, sys, time

def time_torch(torch, m, n, k, trans_a, trans_b, threads, seconds):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    a = torch.rand((k, m) if trans_a else (m, k), generator=g) - 0.5
    b = torch.rand((n, k) if trans_b else (k, n), generator=g) - 0.5
    a = a.t() if trans_a else a
    b = b.t() if trans_b else b
    c = torch.empty(m, n)
    torch.matmul(a, b, out=c)  # warm-up
    best, total, runs = float("inf"), 0.0, 0
    while total < seconds or runs < 3:
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    return best

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=".build/release/sidetune")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--shapes", default=None)
    p.add_argument("--seconds", default="0.5")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the combined rows here")
    args = p.parse_args()
    cmd = [args.binary, "bench", "gemm", "--json", "--threads", args.threads, "--seconds", args.seconds]
    if args.shapes:
        cmd += ["--shapes", args.shapes]
    import torch
    ours, torch_best = None, {}
    for _ in range(args.rounds):
        run = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        if ours is None:
            ours = run
        else:
            for t, peak in run["peak_gflops"].items():
                ours["peak_gflops"][t] = max(ours["peak_gflops"][t], peak)
            for best, r in zip(ours["rows"], run["rows"]):
                if r["seconds"] < best["seconds"]:
                    best.update(seconds=r["seconds"], gflops=r["gflops"])
        for r in run["rows"]:
            key = (r["m"], r["n"], r["k"], r.get("trans_a", False), r.get("trans_b", False), r["threads"])
            tt = time_torch(torch, *key, float(args.seconds))
            torch_best[key] = min(torch_best.get(key, float("inf")), tt)
    print(f"cpu: {ours['cpu']} (family {ours.get('cpu_family')}); torch {torch.__version__}; best of {args.rounds} alternating rounds")
    for t, peak in sorted(ours["peak_gflops"].items()):
        print(f"FP32 peak, {t} thread(s): {peak:.1f} GFLOPS")
    print(f"{'m':>6} {'n':>6} {'k':>6} op {'thr':>3} {'sidetune':>9} {'%peak':>6} {'torch':>8} {'%peak':>6} {'ratio':>6}")
    rows = []
    for r in ours["rows"]:
        ta, tb = r.get("trans_a", False), r.get("trans_b", False)
        tt = torch_best[(r["m"], r["n"], r["k"], ta, tb, r["threads"])]
        tg = 2.0 * r["m"] * r["n"] * r["k"] / tt / 1e9
        peak = ours["peak_gflops"][str(r["threads"])]
        op = ("T" if ta else "N") + ("T" if tb else "N")
        ratio = r["gflops"] / tg
        print(f"{r['m']:>6} {r['n']:>6} {r['k']:>6} {op} {r['threads']:>3} {r['gflops']:>9.1f} {100*r['gflops']/peak:>5.1f}% "
              f"{tg:>8.1f} {100*tg/peak:>5.1f}% {ratio:>5.2f}x")
        rows.append(dict(r, torch_gflops=tg, ratio=ratio))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(ours, rows=rows, torch=torch.__version__), f, indent=1)

if __name__ == "__main__":
    sys.exit(main())
