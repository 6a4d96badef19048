#!/usr/bin/env bash
# README's first command: on a fresh machine, installs what is missing (redis-server, the
# wasm32-wasip2 target), builds the host and the example handlers, and runs `wasmq dev`: a
# private redis-server, a host running the examples, and a stream of sample jobs, well-behaved
# and hostile, with live progress and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

bash scripts/install-deps.sh
bash guest-examples/rust/build.sh
cargo build --locked -p wasmq
exec "$CARGO_TARGET_DIR/debug/wasmq" dev "$@"
