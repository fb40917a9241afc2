#!/usr/bin/env bash
# Test accuracy and seconds/step of the side methods with the frozen backbone's products in f32
# and in bf16 (--backbone-precision), on the README's tasks, for several seeds; f32 and bf16 runs
# alternate so both see the same machine (LST and LAST on MiniLM, LST on the ViT at 84 px, QST
# on SmolLM2). Prints a Markdown table (docs/measurements.md holds it).
#   scripts/backbone_precision_accuracy.sh [SEEDS...]     (default: 1 2 3)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/sidetune
[ -x "$bin" ] || swift build -c release --product sidetune >&2
seeds=("${@:-1 2 3}")
[ $# -eq 0 ] && seeds=(1 2 3)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
text=(--train-limit 2000 --eval-limit 500 --epochs 3 --max-length 64 --fisher-examples 256)
vit=(--model vit-s14 --data fashion-mnist-1k --image-size 84 --epochs 3)
llm=(--model smollm2 --train-limit 160 --eval-limit 200 --batch-size 16 --epochs 2 --max-length 64)
run() { # name precision seed args...
  local name=$1 p=$2 s=$3; shift 3
  "$bin" train "$@" --seed "$s" --backbone-precision "$p" --report "$out/$name-$p-$s.json" > "$out/$name-$p-$s.log" 2>&1 \
    || { echo "failed: $name $p seed $s (log: $out/$name-$p-$s.log)" >&2; tail -5 "$out/$name-$p-$s.log" >&2; exit 1; }
}
for s in "${seeds[@]}"; do
  for p in f32 bf16; do
    echo "seed $s, $p" >&2
    run lst "$p" "$s" --method lst "${text[@]}"
    run last "$p" "$s" --method last "${text[@]}"
    run vit-lst "$p" "$s" --method lst "${vit[@]}"
    run qst "$p" "$s" --method qst "${llm[@]}"
  done
done
python3 - "$out" "${seeds[@]}" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
print("| method | seeds | f32 test accuracy | bf16 test accuracy | difference (points) | s/step f32 | s/step bf16 | ratio |")
print("|---|---|---|---|---|---|---|---|")
for m in ["lst", "last", "vit-lst", "qst"]:
    r = {p: [json.load(open(f"{out}/{m}-{p}-{s}.json")) for s in seeds] for p in ["f32", "bf16"]}
    acc = {p: [100 * x["accuracy"] for x in r[p]] for p in r}
    step = {p: statistics.median(x["seconds_per_step"] for x in r[p]) for p in r}
    fmt = lambda v: ", ".join(f"{a:.2f}" for a in v) + f" (mean {statistics.mean(v):.2f})"
    diff = statistics.mean(acc["bf16"]) - statistics.mean(acc["f32"])
    print(f"| {m} | {' '.join(seeds)} | {fmt(acc['f32'])} | {fmt(acc['bf16'])} | {diff:+.2f} | {step['f32']:.3f} | "
          f"{step['bf16']:.3f} | {step['bf16'] / step['f32']:.2f} |")
PY
