#!/usr/bin/env bash
# Builds the fuzz targets (libFuzzer + AddressSanitizer, release) and runs each for a time budget
# on a scratch copy of its seed corpus (corpus/<target>/ stays as committed), then prints one line
# per target. Exits non-zero when any target found a crash, a leak-free OOM, a timeout (> 10 s per
# input) or failed to run; the input that did it is kept in artifacts/<target>/.
#
#   Fuzz/run.sh [--seconds N] [--parallel P] [--no-build] [--keep-corpus DIR] [target ...]
#
#   --seconds N        budget per target (default 60)
#   --parallel P       targets run at once (default 1; each is one process, so P <= cores)
#   --no-build         use the binaries already in Fuzz/.build
#   --keep-corpus DIR  leave the grown corpora in DIR/<target>/ (default: a temporary folder, removed)
#   target             safetensors gguf onnx bert-config hf-config tokenizer-json vocab textdata
#                      idx checkpoint image (default: all)
set -uo pipefail
cd "$(dirname "$0")"
here=$(pwd)

all=(safetensors gguf onnx bert-config hf-config tokenizer-json vocab textdata idx checkpoint image)
seconds=60 parallel=1 build=1 keep=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --parallel) parallel=$2; shift 2 ;;
    --parallel=*) parallel=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    --keep-corpus) keep=$2; shift 2 ;;
    --keep-corpus=*) keep=${1#*=}; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -d "corpus/$t" ] || { echo "run.sh: unknown target '$t' (known: ${all[*]})" >&2; exit 2; }
done

# Instrumentation for coverage (fuzzer) and memory errors (address), in the Swift code and in the C
# targets (the image decoders' glue, gzip, kernels). One -sanitize= for swiftc: a second one
# replaces the first (two flags would leave the Swift code without coverage counters).
flags=(-c release -Xswiftc -sanitize=fuzzer,address
       -Xcc -fsanitize=fuzzer-no-link -Xcc -fsanitize=address)
if [ "$build" = 1 ]; then
  start=$(date +%s)
  mkdir -p .build
  if ! swift build "${flags[@]}" > .build/fuzz-build.log 2>&1; then
    tail -40 .build/fuzz-build.log; echo "run.sh: build failed (log: Fuzz/.build/fuzz-build.log)" >&2; exit 1
  fi
  echo "built the fuzz targets in $(( $(date +%s) - start )) s"
fi
bin=$(swift build "${flags[@]}" --show-bin-path)

scratch=$(mktemp -d /tmp/sidetune-fuzz-corpus.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
results=$scratch/results
mkdir -p "$results"

# Swift's own crash reporter would race libFuzzer's handler (and take a minute to symbolicate);
# leaks are not what these targets look for (the Swift runtime keeps caches alive on purpose).
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}

json_dict=(bert-config hf-config tokenizer-json checkpoint textdata)

run_one() {
  local t=$1 corpus=$scratch/corpus/$t artifacts=$here/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  cp -R "corpus/$t/." "$corpus/"
  local seeds; seeds=$(find "$corpus" -type f | wc -l)
  local dict=()
  for j in "${json_dict[@]}"; do [ "$j" = "$t" ] && dict=(-dict="$here/json.dict"); done
  local log=$scratch/$t.log
  "$bin/fuzz-$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict[@]}" "$corpus" > "$log" 2>&1
  local rc=$?
  local runs rate
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  local size; size=$(find "$corpus" -type f | wc -l)
  local result=ok
  if [ $rc -ne 0 ]; then
    local file; file=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    local kind; kind=$(grep -m1 -oE "ERROR: (libFuzzer|AddressSanitizer): [a-zA-Z-]+" "$log" | sed 's/ERROR: //')
    result="FAIL${kind:+ ($kind)}: ${file:-see log}"
    mkdir -p "$here/artifacts"
    cp "$log" "$here/artifacts/$t.log"
  fi
  if [ -n "$keep" ]; then mkdir -p "$keep/$t"; cp -R "$corpus/." "$keep/$t/"; fi
  printf "%-15s %5s %12s %8s %6s -> %-6s %s\n" "$t" "$seconds" "${runs:-?}" "${rate:-?}" "$seeds" "$size" "$result" \
    > "$results/$t"
  cat "$results/$t"
}

printf "%-15s %5s %12s %8s %16s %s\n" target seconds executions exec/s "corpus seeds->end" result
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
  run_one "$t" &
done
wait

find "$here/artifacts" -type d -empty -delete 2>/dev/null
failed=0
for t in "${targets[@]}"; do
  grep -q " ok$" "$results/$t" 2>/dev/null || failed=1
done
[ $failed -eq 0 ] && echo "all ${#targets[@]} target(s) ran clean" || echo "run.sh: a target failed; logs and inputs in Fuzz/artifacts/"
exit $failed
