#!/usr/bin/env bash
# Builds the C example handlers into components: guest-examples/c/out/<name>.wasm.
#
# The toolchain, each piece installed when missing and offline after that:
# - Debian's clang 19, lld 19, compiler-rt for wasm32 and wasi-libc (apt);
# - wasm-tools, prebuilt, from PyPI (pinned in requirements.txt, in a venv under $WASMQ_TOOLS);
# - tools/ (a small Rust binary, built once into $WASMQ_TOOLS, about 1.5 minutes on 2 cores):
#   wit-bindgen 0.63.0's C generator and wasmtime 48.0.8's WASI preview1 reactor adapter.
# Then per handler: clang to a core module, and `wasm-tools component new` with the adapter
# to a component.
set -euo pipefail
cd "$(dirname "$0")"
source ../lib.sh

apt_install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
venv=$(pinned_venv requirements.txt)

# Its own target dir: a CARGO_TARGET_DIR set for the host must not receive it. A no-op when
# nothing changed.
tools_target="$WASMQ_TOOLS/c-tools-target"
if stale "$tools_target/release/wasmq-c-tools" tools/Cargo.toml tools/Cargo.lock tools/src/main.rs; then
    echo "building tools/ (wit-bindgen's C generator, the WASI adapter)" >&2
    env -u CARGO_TARGET_DIR cargo build --quiet --locked --release \
        --manifest-path tools/Cargo.toml --target-dir "$tools_target"
    touch "$tools_target/release/wasmq-c-tools"
fi
tools="$tools_target/release/wasmq-c-tools"

mkdir -p out/gen
adapter=out/wasi_snapshot_preview1.reactor.wasm
if stale "$adapter" "$tools"; then
    "$tools" adapter "$adapter"
fi
if stale out/gen/handler.h "$tools" "$WIT_DIR"/*.wit "$WIT_DIR"/deps/*.wit "$WIT_DIR"/deps/*/*.wit; then
    "$tools" bindings "$WIT_DIR" handler out/gen
fi

common=(wasmq.c wasmq.h json.c json.h wasmq_http.c wasmq_http.h out/gen/handler.h "$adapter"
    requirements.txt)
for name in echo transform flaky notify; do
    if stale "out/$name.wasm" "$name.c" "${common[@]}"; then
        echo "c: building out/$name.wasm" >&2
        # wasmq_http.c (the wasi:http client) only for the handlers that make requests.
        http=()
        [ "$name" = notify ] && http=(wasmq_http.c)
        clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
            -I. -Iout/gen -o "out/$name.core.wasm" \
            "$name.c" wasmq.c json.c "${http[@]}" out/gen/handler.c out/gen/handler_component_type.o
        "$venv/bin/wasm-tools" component new "out/$name.core.wasm" \
            --adapt "wasi_snapshot_preview1=$adapter" -o "out/$name.wasm"
        rm "out/$name.core.wasm"
    fi
done
