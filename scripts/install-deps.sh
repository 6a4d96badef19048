#!/usr/bin/env bash
# Installs what building and testing wasmq needs on a fresh Debian machine, skipping what is
# already there: redis-server (tests start private instances), the wasm32-wasip2 Rust target,
# rustfmt and clippy.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# Debian's package starts a system redis on 6379; wasmq's tests never use it, and neither
# should anything here depend on it.

installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
components=$(rustup component list --installed)
grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
grep -q '^clippy' <<<"$components" || rustup component add clippy
