#!/usr/bin/env bash
# Bulk enqueue, jobs/s: the Python and TypeScript producer SDKs beside BullMQ 6.7.0's addBulk,
# on one private redis-server, same jobs (100 B payloads), same chunk size, same run.
#   bash bench/sdk-bulk.sh                      100,000 jobs, chunks of 1,000, 3 repetitions
#   bash bench/sdk-bulk.sh --jobs 20000 --chunk 1000 --reps 1
# Every repetition runs the three producers in a rotated order against an emptied Redis; the
# table gives each one's median and its ratio to BullMQ's median of the same run. Results:
# bench/results/sdk-bulk-<UTC timestamp>.md. Needs redis-server, node + npm, python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source guest-examples/lib.sh

jobs=100000 chunk=1000 reps=3 size=100
while [ $# -gt 0 ]; do
    case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --chunk) chunk="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    *) echo "sdk-bulk: unknown argument $1" >&2; exit 2 ;;
    esac
done

# What each producer needs: the SDKs' pinned venv with the package installed from the clone,
# sdk/typescript's ioredis, BullMQ.
venv=$(pinned_venv sdk/python/requirements-test.txt)
work=$(mktemp -d)
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$work/site" ./sdk/python
[ -d sdk/typescript/node_modules/ioredis ] ||
    (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -d bench/bullmq/node_modules/bullmq ] ||
    [ bench/bullmq/package-lock.json -nt bench/bullmq/node_modules/.package-lock.json ]; then
    (cd bench/bullmq && npm ci --no-audit --no-fund --loglevel=error)
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
url="redis://127.0.0.1:$port"

run() {
    redis-cli -p "$port" flushall >/dev/null
    case "$1" in
    python) PYTHONPATH="$work/site" "$venv/bin/python" bench/sdk/bulk.py "$url" bulk "$jobs" "$chunk" "$size" ;;
    typescript) node bench/sdk/bulk.mjs "$url" bulk "$jobs" "$chunk" "$size" ;;
    bullmq) (cd bench/bullmq && node bulk.js "$port" bulk "$jobs" "$chunk" "$size") ;;
    esac
}

order=(bullmq python typescript)
for rep in $(seq "$reps"); do
    for i in 0 1 2; do
        producer=${order[$(((i + rep) % 3))]}
        echo "sdk-bulk: repetition $rep, $producer" >&2
        run "$producer" >>"$work/runs.jsonl"
    done
done

mkdir -p bench/results
out="bench/results/sdk-bulk-$(date -u +%Y%m%dT%H%M%SZ).md"
python3 - "$work/runs.jsonl" "$jobs" "$chunk" "$reps" "$(git rev-parse --short HEAD)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" >"$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
jobs, chunk, reps, commit, load = sys.argv[2:7]
rate = {}
for r in runs:
    rate.setdefault(r["sdk"], []).append(r["jobs"] / r["seconds"])
base = statistics.median(rate["bullmq"])
print(f"# Bulk enqueue, {int(jobs):,} jobs in chunks of {chunk}, {reps} repetitions")
print(f"\ncommit {commit}, load average {load}\n")
print("| producer | median jobs/s | runs (jobs/s) | vs BullMQ addBulk |")
print("|---|---|---|---|")
for sdk in ("python", "typescript", "bullmq"):
    r = rate[sdk]
    print(f"| {sdk} | {statistics.median(r):,.0f} | {', '.join(f'{x:,.0f}' for x in r)} | "
          f"{statistics.median(r) / base:.2f}x |")
PY
cat "$out"
echo "sdk-bulk: written to $out" >&2
