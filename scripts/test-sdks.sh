#!/usr/bin/env bash
# The producer SDKs' own suites (sdk/python: pytest; sdk/typescript: node --test, with the
# cross-language test), each against private redis-servers and real `wasmq run` hosts running
# the example handlers. scripts/test.sh runs this after the Rust tests; alone, it needs what
# that has built: `bash scripts/install-deps.sh && bash guest-examples/build-all.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"
source guest-examples/lib.sh

cargo build --locked -p wasmq --bin wasmq
export WASMQ_BIN="$CARGO_TARGET_DIR/debug/wasmq"
export WASMQ_RUST_GUESTS="$PWD/guest-examples/rust/target/wasm32-wasip2/release"
export WASMQ_JS_GUESTS="$PWD/guest-examples/javascript/out"

# The Python package is installed from the clone as a user would (flit_core from the pinned
# venv, so offline), into a directory of this run's own: the venv is shared by clones.
venv=$(pinned_venv sdk/python/requirements-test.txt)
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$site" ./sdk/python
export PYTHONPATH="$site" WASMQ_PYTHON="$venv/bin/python"
(cd sdk/python && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests)

# sdk/typescript's node_modules (ioredis) is installed by scripts/install-deps.sh.
(cd sdk/typescript && node --test test/*.test.js)
