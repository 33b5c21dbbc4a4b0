#!/usr/bin/env bash
# Runs every fuzz target briefly from the seed corpora: a smoke test for the fuzzers
# themselves (CI does not run it). Needs cargo-fuzz and a nightly toolchain.
# Usage: fuzz/smoke.sh [seconds per target, default 10]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-10}
"$here/seed.sh" >/dev/null
cd "$here/.."
for t in yaml_manifest template kustomize_patch semver webhook; do
    echo "== $t"
    cargo +nightly fuzz run -s none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
        grep -E 'stat::number_of_executed_units|Done|ERROR|panicked|SUMMARY' || true
done
