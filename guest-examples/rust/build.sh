#!/usr/bin/env bash
# Builds every Rust example handler into a component:
#   guest-examples/rust/target/wasm32-wasip2/release/<name>.wasm
# Installs the wasm32-wasip2 target when it is missing. Offline once the crates are fetched.
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
# The host build may point CARGO_TARGET_DIR elsewhere; guests always land here, where the
# tests and `wasmq dev` look for them.
CARGO_TARGET_DIR="$PWD/target" cargo build --release --target wasm32-wasip2 --locked "$@"
