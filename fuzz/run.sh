#!/usr/bin/env bash
# Fuzzes the host: builds the targets of fuzz/ with cargo-fuzz (libFuzzer) and runs each for a
# bounded time. `bash fuzz/run.sh [seconds per target] [target...]`: 60 s each by default,
# every target unless named. scripts/test.sh (what CI runs) calls it with a short time; a long
# run is e.g. `bash fuzz/run.sh 3600`. A crash stops the run with a non-zero exit, the input
# saved under fuzz/artifacts/<target>/ (replay it with `bash fuzz/run.sh repro <target> <file>`);
# it then becomes a regression test in the host's own test suite.
#
# Targets (fuzz/fuzz_targets/, each file says what it checks):
#   job_decode       Job::from_hash and Fetched::decode: job hashes and fetch replies
#   enqueue_options  the enqueue body of the HTTP API and `wasmq enqueue`'s command line
#   handler_upload   Runtime::load on uploads, and a run of each one it accepts
#
# Environment: WASMQ_FUZZ_TARGET_DIR, where builds and the growing corpus live (default
# $HOME/.cache/wasmq/target-fuzz, outside the clone, so fresh clones reuse them).
set -euo pipefail
cd "$(dirname "$0")"

dir="${WASMQ_FUZZ_TARGET_DIR:-$HOME/.cache/wasmq/target-fuzz}"
# Not the host build's directory (scripts/test.sh exports that one): the instrumented build
# has other flags, and installing cargo-fuzz builds there too.
export CARGO_TARGET_DIR="$dir"

# cargo-fuzz, pinned, kept with wasmq's other tools outside the clone.
CARGO_FUZZ_VERSION=0.13.2
tools="$HOME/.cache/wasmq/tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools" --quiet
fi

# Only stable Rust is needed. cargo-fuzz's default AddressSanitizer needs the nightly-only
# -Zsanitizer; `-s none` leaves it out, and every other flag cargo-fuzz passes (the sancov
# passes, -Cllvm-args, --cfg fuzzing) is stable. The code under test is safe Rust, so ASan
# would add little; what the targets look for are panics (debug assertions on: overflow
# checks too) and broken properties. cargo-fuzz builds with one codegen unit per crate for
# speed at run time; 16 build wasmtime and Cranelift several times faster, which matters
# more for runs of a minute.
build=(-s none --debug-assertions --codegen-units 16 --target-dir "$dir")
all=(job_decode enqueue_options handler_upload)

max_len() {
    case "$1" in
        handler_upload) echo 65536 ;;
        *) echo 4096 ;;
    esac
}

if [ "${1:-}" = repro ]; then
    target="$2"
    cargo fuzz run "${build[@]}" "$target" "$3"
    exit
fi

seconds="${1:-60}"
shift || true
# libFuzzer takes -max_total_time=0 as "no limit".
if ! [ "$seconds" -ge 1 ] 2>/dev/null; then
    echo "fuzz/run.sh: seconds per target must be a whole number, at least 1" >&2
    exit 2
fi
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi

# cargo-fuzz has no --locked: fail here instead if fuzz/Cargo.lock would change.
cargo metadata --locked --format-version 1 >/dev/null
started=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz: built in $(($(date +%s) - started)) s"

for target in "${targets[@]}"; do
    # New inputs go to the first corpus directory, outside the clone; the committed seeds
    # (fuzz/seeds/<target>) are read only.
    corpus="$dir/corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    echo "fuzz: $target for ${seconds} s"
    dict=()
    [ -f "dicts/$target.dict" ] && dict=(-dict="dicts/$target.dict")
    cargo fuzz run "${build[@]}" "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -timeout=20 "${dict[@]}" \
        -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
        grep -v '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)\|NEW_FUNC' || {
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    }
done
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, no crash"
