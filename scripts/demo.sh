#!/usr/bin/env bash
# README's first command: on a fresh machine, installs what is missing, builds the host and the
# example handlers, and runs a few jobs through the sandbox with `wasmq exec`: a well-behaved
# one and the hostile ones, each stopped and classified.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

bash scripts/install-deps.sh
bash guest-examples/rust/build.sh
cargo build --locked -p wasmq
wasmq="$CARGO_TARGET_DIR/debug/wasmq"
guests=guest-examples/rust/target/wasm32-wasip2/release

run() {
    local guest=$1; shift
    printf '\n$ wasmq exec %s.wasm %s\n' "$guest" "$*"
    set +e
    "$wasmq" exec "$guests/$guest.wasm" "$@"
    local code=$?
    set -e
    printf '\n(exit code %d)\n' "$code"
}

run echo --payload '{"hello":"wasmq"}' --json
run retry
run infinite_loop --timeout 500ms
run memory_bomb --memory 32MiB --json
run deep_recursion
run stdout_flood --json --timeout 30s | cut -c1-400
