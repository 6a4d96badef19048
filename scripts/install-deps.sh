#!/usr/bin/env bash
# Installs what building and testing wasmq needs on a fresh Debian machine, skipping what is
# already there: redis-server and PostgreSQL (tests start private instances), the
# wasm32-wasip2 Rust target, rustfmt and clippy, Chromium with playwright-core for the
# dashboard's browser tests, and the Python tools of tests/tools (a pinned venv under
# $WASMQ_TOOLS).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# The Redis TLS tests (tests/all/tls.rs) make their CA and certificates with the openssl CLI.
if ! command -v openssl >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
# The Postgres tests (tests/all/sql.rs) start private servers with Debian's binaries
# (/usr/lib/postgresql/<version>/bin); the system cluster the package starts is not used.
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
# Debian's package starts a system redis on 6379; wasmq's tests never use it, and neither
# should anything here depend on it.

installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
components=$(rustup component list --installed)
grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
grep -q '^clippy' <<<"$components" || rustup component add clippy

# The dashboard's browser tests (tests/browser, run by tests/all/dashboard.rs): Debian's
# Chromium, and playwright-core as pinned by tests/browser/package-lock.json, installed with
# the machine's Node.js (`npm ci` again only when the lock file changed).
if ! command -v chromium >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
browser_tests="$(dirname "$0")/../tests/browser"
lock_hash=$(sha256sum "$browser_tests/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$browser_tests/node_modules/.wasmq-lock" 2>/dev/null)" != "$lock_hash" ]; then
    (cd "$browser_tests" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$browser_tests/node_modules/.wasmq-lock"
fi

# Python tools the tests drive (tests/tools/requirements.txt): a venv named after the file's
# hash, which the tests find the same way.
source "$(dirname "$0")/../guest-examples/lib.sh"
pinned_venv "$(dirname "$0")/../tests/tools/requirements.txt" >/dev/null

# The producer SDKs' test dependencies (scripts/test-sdks.sh): a pinned venv for sdk/python
# (redis-py, pytest, flit_core to build the package offline), and sdk/typescript's ioredis and
# TypeScript (which also type-checks the dashboard in scripts/test.sh) as pinned by its
# package-lock.json (`npm ci` again only when the lock file changed).
pinned_venv "$(dirname "$0")/../sdk/python/requirements-test.txt" >/dev/null
sdk_ts="$(dirname "$0")/../sdk/typescript"
lock_hash=$(sha256sum "$sdk_ts/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$sdk_ts/node_modules/.wasmq-lock" 2>/dev/null)" != "$lock_hash" ]; then
    (cd "$sdk_ts" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$sdk_ts/node_modules/.wasmq-lock"
fi
