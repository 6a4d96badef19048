#!/usr/bin/env bash
# Builds every example handler, in every language, into components:
#   rust/target/wasm32-wasip2/release/<name>.wasm, python/out/<name>.wasm,
#   javascript/out/<name>.wasm, c/out/<name>.wasm
# Each language's build.sh installs its pinned toolchain when it is missing (see each script)
# and rebuilds only what changed, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
for lang in rust python javascript c; do
    start=$SECONDS
    bash "$lang/build.sh"
    echo "guest-examples/$lang: built in $((SECONDS - start)) s" >&2
done
