#!/usr/bin/env bash
# Long property-based fuzzing of the parsers that take outside input (config, session ids,
# routes, Origin): the same properties CI runs 256 times each, here CASES times, stopping after
# SECONDS at most. cargo-fuzz would need a nightly toolchain, which this project cannot fetch.
# Usage: fuzz/run.sh [CASES] [SECONDS]   (defaults: 100000 cases, 600 s)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-100000}
seconds=${2:-600}
start=$(date +%s)
PROPTEST_CASES=$cases timeout "$seconds" cargo test --release --test properties -- --nocapture 2>&1 | tee /tmp/mcp-fleet-fuzz.log | grep -E "^test |test result|panicked|minimal failing"
status=${PIPESTATUS[0]}
echo "fuzz: $cases cases per property, $(( $(date +%s) - start )) s, exit $status (124 = time limit reached)"
exit "$status"
