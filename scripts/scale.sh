#!/usr/bin/env bash
# Scale between two processes (issue 21, goal 5): perftest's ib_write_bw
# through the shim with N RC QPs, server and client each a process of its
# own on this host. Prints each side's peak RSS and perftest's result line.
# Too slow and too big for the test suite (10 000 QPs: ~5 s and ~110 MiB a
# side); soft-rdma/tests/scale.rs connects and checks 10 000 QPs in one
# process instead.
#
# Usage: scripts/scale.sh [QPS [SIZE [ITERS_PER_QP]]]   # default 10000 8 5
#
# Memory per QP: run it with QPS=1 and QPS=N and divide the difference by
# N - 1. perftest itself takes 2 × max(SIZE, 4 KiB) of buffer per QP (its
# `buff_size`: a send and a receive half per QP), so with SIZE ≤ 4096
# subtract 8 KiB per QP to get the device's and the shim's share.
set -euo pipefail
cd "$(dirname "$0")/.."

qps=${1:-10000}
size=${2:-8}
iters=${3:-5}
port=$((20000 + RANDOM % 10000))
cargo build --release --quiet -p soft-rdma --bin softrdma --lib -p verbs-shim
s=target/release/softrdma
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

/usr/bin/time -f "server: peak RSS %M KiB, %e s" -o "$log/server.time" \
    timeout 300 "$s" run -- ib_write_bw -s "$size" -q "$qps" -n "$iters" -p "$port" \
    >"$log/server.out" 2>&1 &
server=$!
# The server listens once its QPs exist (10 000 of them: a moment).
for _ in $(seq 100); do
    ss -ltn "sport = :$port" | grep -q LISTEN && break
    sleep 0.1
done
/usr/bin/time -f "client: peak RSS %M KiB, %e s" -o "$log/client.time" \
    timeout 300 "$s" run -- ib_write_bw -s "$size" -q "$qps" -n "$iters" -p "$port" 127.0.0.1 \
    >"$log/client.out" 2>&1
wait "$server"
cat "$log/server.time" "$log/client.time"
grep -A1 '#bytes' "$log/client.out"
