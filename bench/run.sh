#!/usr/bin/env bash
# wasmq beside BullMQ 6.7.0 on one private redis-server, same workloads, same run.
#   bash bench/run.sh            full run (3 repetitions of everything; see bench/README.md)
#   bash bench/run.sh --quick    smoke run: N=2,000 at C=1 and 50, 200 latency samples, memory; 1 rep
#   bash bench/run.sh --only throughput,latency,memory,depth,work,race   a subset (with or without --quick)
#   bash bench/run.sh --max-n 20000   leaves out the N=100,000 throughput runs
# Results: bench/results/<UTC timestamp>.md (+ .json, + -logs/ with each worker's stderr).
# Needs: Rust (rustup), redis-server, Node 20 + npm (the npm registry, for `npm ci` once).
# Not run in CI: its figures depend on the machine and its load.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

for tool in redis-server node npm cargo; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

echo "bench: building wasmq (release), the example handlers and the bench's stamp handler" >&2
cargo build --release -p wasmq --locked
bash guest-examples/rust/build.sh
# The JavaScript `transform` handler of the real-work jobs (installs componentize-js once).
bash guest-examples/javascript/build.sh
(cd bench/guest && CARGO_TARGET_DIR="$PWD/target" \
    cargo build --release --target wasm32-wasip2 --locked)
if [ ! -d bench/bullmq/node_modules/bullmq ] || \
   [ bench/bullmq/package-lock.json -nt bench/bullmq/node_modules/.package-lock.json ]; then
    (cd bench/bullmq && npm ci --no-audit --no-fund)
fi
cargo bench -p wasmq --bench vs_bullmq --locked --no-run

# The driver (and the redis-server, wasmq and node processes it starts) run in a process group
# of their own, so an interrupt here takes all of them down; the driver also kills each child
# when it is done with it or fails.
setsid cargo bench -p wasmq --bench vs_bullmq --locked -- "$@" &
driver=$!
trap 'kill -TERM -- -"$driver" 2>/dev/null || true' INT TERM
wait "$driver"
