#!/usr/bin/env bash
# The test command (README's second command; .ci/run calls exactly this).
# Installs what the tests need when it is missing, then: rustfmt, clippy, the dashboard's
# type-check, the tests (all but the latency measurements of tests/isolation, a long run: see
# README).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build products live outside the clone so fresh clones (CI) reuse them; override at will.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

bash scripts/install-deps.sh

cargo fmt --all --check
(cd sdk/rust && cargo fmt --check)
(cd guest-examples/rust && cargo fmt --all --check)
(cd fuzz && cargo fmt --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
# The dashboard's JavaScript modules, type-checked (`// @ts-check`, JSDoc types of the API's
# shapes) by sdk/typescript's pinned TypeScript, which scripts/install-deps.sh installed: seconds.
node sdk/typescript/node_modules/typescript/bin/tsc -p host/src/api/dashboard/tsconfig.json
bash guest-examples/build-all.sh
# The fuzz targets, 30 s each (docs/fuzzing.md): long enough to catch a decoder or a check
# that panics on the inputs libFuzzer reaches first; `bash fuzz/run.sh 3600` is the long run.
# WASMQ_FUZZ_SECONDS=0 skips them (the instrumented build is the costly part from nothing).
fuzz_seconds="${WASMQ_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
    bash fuzz/run.sh "$fuzz_seconds"
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# The queue and worker suites again, each test against a private 3-primary Redis Cluster
# instead of one redis-server (tests/all/support/redis.rs), so both stay checked (about 90 s
# on 2 cores, the clusters' forming included).
WASMQ_TEST_REDIS=cluster cargo test --locked -p wasmq --test all -- queue:: worker:: 2>&1 |
    tee -a "$log"
# The producer SDKs' suites (pytest, node --test) against real hosts: about 2 minutes.
bash scripts/test-sdks.sh
# One closing line for the whole run (cargo ends on its last binary's, the doc tests').
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
