#!/usr/bin/env bash
# Runs the bad-input tests (Tests/SideTuneCLITests/BadInputTests.swift) and prints their table:
# input, the message sidetune printed (first lines, temporary paths shortened), exit code.
# docs/reliability.md holds its output:  scripts/bad_inputs_table.sh > /tmp/table.md
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(mktemp)
trap 'rm -f "$table"' EXIT
swift build -c release --build-tests >&2
SIDETUNE_BAD_INPUT_TABLE="$table" swift test -c release --skip-build --filter BadInputTests >&2
echo "| input | message | exit code |"
echo "|---|---|---|"
# Test scratch folders differ run to run: one placeholder for them.
sed -E 's#\$TMP/sidetune-tests-[0-9]+/[a-z-]+-[0-9A-F-]{36}#DIR#g' "$table"
