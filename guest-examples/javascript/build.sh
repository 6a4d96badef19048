#!/usr/bin/env bash
# Builds the JavaScript example handlers into components: guest-examples/javascript/out/<name>.wasm.
# Installs componentize-js and jco (pinned by package-lock.json) with `npm ci` into
# $WASMQ_TOOLS when they are missing; offline after that. Only handlers whose sources changed
# are rebuilt.
set -euo pipefail
cd "$(dirname "$0")"
source ../lib.sh

# node_modules is kept outside the clone, one per lock file, so fresh clones reuse it; the
# handlers import nothing from it (only the host's `wasmq:job/context` and `wasi:config/store`).
hash=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
modules="$WASMQ_TOOLS/npm-$hash"
if [ ! -f "$modules/.complete" ]; then
    echo "installing componentize-js and jco (npm ci, into $modules)" >&2
    rm -rf "$modules"
    mkdir -p "$modules"
    cp package.json package-lock.json "$modules/"
    (cd "$modules" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$modules/.complete"
fi

mkdir -p out
# `notify` and `welcome` use fetch(), so they are built with componentize-js's http support
# left on (the component imports wasi:http, which the host links for every handler). The
# others make no requests and leave it out, which keeps them smaller and faster to start.
for name in echo transform flaky notify welcome leftovers; do
    if stale "out/$name.wasm" "$name.js" "$WIT_DIR"/*.wit "$WIT_DIR"/deps/*.wit package-lock.json; then
        echo "javascript: building out/$name.wasm" >&2
        disable=(--disable http fetch-event)
        case "$name" in notify | welcome) disable=() ;; esac
        "$modules/node_modules/.bin/componentize-js" "$name.js" --wit "$WIT_DIR" \
            --world-name handler "${disable[@]}" --out "out/$name.wasm.tmp" >/dev/null
        mv "out/$name.wasm.tmp" "out/$name.wasm"
    fi
done
