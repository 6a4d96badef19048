#!/usr/bin/env bash
# N jobs across 3 wasmq hosts while a random host is SIGKILLed (and restarted) K times and Redis
# is SIGKILLed (and restarted from its AOF, appendfsync always) R times; then every job is
# checked: lost, completed more than once without a lease loss, attempts, time to drain.
#   bash bench/chaos.sh                                             the full size (the default)
#   bash bench/chaos.sh --jobs 10000 --kills 50 --redis-restarts 5  the same, spelled out
#   bash bench/chaos.sh --ci                                        CI's size: 300 jobs, K=3, R=1
#   more knobs: --hosts H --concurrency C --work-ms MS --lease-ms MS --deadline-s S --seed S
# Results: bench/results/chaos-<UTC timestamp>.md (+ -logs/ with every host's log). Exit code 0
# only when the run passed (0 lost, 0 unexplained duplicates, every kill and restart done).
# Needs: Rust (rustup), redis-server.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmq/target}"

for tool in redis-server cargo; do
    command -v "$tool" >/dev/null || { echo "chaos: $tool is not installed" >&2; exit 1; }
done

echo "chaos: building wasmq (release), the example handlers and the driver" >&2
bash guest-examples/rust/build.sh
cargo bench -p wasmq --bench chaos --locked --no-run

# The driver (and the redis-server and wasmq processes it starts) run in a process group of
# their own, so an interrupt here takes all of them down; the driver also kills each child
# when it is done with it or fails.
setsid cargo bench -p wasmq --bench chaos --locked -- "$@" &
driver=$!
trap 'kill -TERM -- -"$driver" 2>/dev/null || true' INT TERM
wait "$driver"
