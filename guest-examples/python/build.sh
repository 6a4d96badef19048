#!/usr/bin/env bash
# Builds the Python example handlers into components: guest-examples/python/out/<name>.wasm.
# Installs componentize-py (pinned in requirements.txt) into a venv under $WASMQ_TOOLS when it
# is missing; offline after that. Only handlers whose sources changed are rebuilt.
set -euo pipefail
cd "$(dirname "$0")"
source ../lib.sh

venv=$(pinned_venv requirements.txt)
mkdir -p out
for name in echo transform flaky workflow notify welcome leftovers; do
    if stale "out/$name.wasm" "$name.py" wasmq_http.py wasmq_sql.py "$WIT_DIR"/*.wit "$WIT_DIR"/deps/*.wit \
        requirements.txt; then
        echo "python: building out/$name.wasm" >&2
        "$venv/bin/componentize-py" --wit-path "$WIT_DIR" --world handler \
            componentize --python-path . "$name" --output "out/$name.wasm.tmp" >/dev/null
        mv "out/$name.wasm.tmp" "out/$name.wasm"
    fi
done
