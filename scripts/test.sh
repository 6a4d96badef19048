#!/usr/bin/env bash
# The test command (README's second command; .ci/run calls exactly this).
# Installs what the tests need when it is missing, then: rustfmt, clippy, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build products live outside the clone so fresh clones (CI) reuse them; override at will.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

bash scripts/install-deps.sh

cargo fmt --all --check
(cd sdk/rust && cargo fmt --check)
(cd guest-examples/rust && cargo fmt --all --check)
cargo clippy --workspace --all-targets --locked -- -D warnings
bash guest-examples/build-all.sh
cargo test --workspace --locked
