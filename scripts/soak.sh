#!/usr/bin/env bash
# Soak: long-lived `softrdma perf` processes under injected faults must not
# leak. Eight client/server pairs (write_bw, read_bw, send_bw, atomic_bw,
# each pinned and --odp) run at once, two processes each, with
# SOFTRDMA_FAULTS on both sides and --verify, each pair repeating its test on
# the same devices, QPs and MRs for SOAK_SECONDS (`perf --duration`). Every
# SOAK_SAMPLE seconds the script records each process's VmRSS and open file
# descriptors. After the warm-up it fails if
#   - a process's fd count changes at all, or
#   - a process's RSS rises above its first post-warm-up sample by more than
#     SOAK_RSS_SLACK_KIB (default 2 MiB),
# or if any process fails (a verification mismatch, an error completion, no
# progress for 10 s). Prints a table of the samples per process.
#
# Usage: scripts/soak.sh                       # 5 minutes (SOAK_SECONDS=300)
#        SOAK_SECONDS=90 scripts/soak.sh       # what scripts/test.sh runs
# Environment: SOAK_SECONDS (300), SOAK_SAMPLE (5), SOAK_WARMUP (a fifth of
# the run, at least 15 s), SOAK_RSS_SLACK_KIB (2048), SOAK_PORT (first TCP
# port, 18600; 8 are used), SOAK_FAULTS (the issue's mix), SOAK_LOG_DIR
# (target/soak), SOFTRDMA_BIN (default: build and use target/release/softrdma).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL=${SOAK_SECONDS:-300}
SAMPLE=${SOAK_SAMPLE:-5}
WARMUP=${SOAK_WARMUP:-$(( SECONDS_TOTAL / 5 > 15 ? SECONDS_TOTAL / 5 : 15 ))}
SLACK_KIB=${SOAK_RSS_SLACK_KIB:-2048}
PORT0=${SOAK_PORT:-18600}
FAULTS=${SOAK_FAULTS:-drop=0.05,dup=0.01,reorder=0.02,corrupt=0.001}
LOG=${SOAK_LOG_DIR:-target/soak}

if [ "$WARMUP" -ge "$SECONDS_TOTAL" ]; then
    echo "soak: SOAK_WARMUP ($WARMUP s) must be shorter than SOAK_SECONDS ($SECONDS_TOTAL s)" >&2
    exit 2
fi
if [ -z "${SOFTRDMA_BIN:-}" ]; then
    cargo build --release --quiet -p soft-rdma --bin softrdma
    SOFTRDMA_BIN=target/release/softrdma
fi
rm -rf "$LOG"
mkdir -p "$LOG"

# name, then the perf arguments. Small windows (-t 2): go-back-N resends the
# whole window after each loss. Rounds are short so each is verified often.
MIX=(
    "write_pinned   write_bw  -s 65536 -n 400 -t 2"
    "write_odp      write_bw  -s 65536 -n 400 -t 2 --odp"
    "read_pinned    read_bw   -s 65536 -n 400 -t 2"
    "read_odp       read_bw   -s 65536 -n 400 -t 2 --odp"
    "send_pinned    send_bw   -s 65536 -n 400 -t 2"
    "send_odp       send_bw   -s 65536 -n 400 -t 2 --odp"
    "atomic_pinned  atomic_bw -n 2000 -t 16"
    "atomic_odp     atomic_bw -n 2000 -t 16 --odp"
)

names=() pids=() roles=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

echo "soak: ${#MIX[@]} pairs for ${SECONDS_TOTAL} s, SOFTRDMA_FAULTS=$FAULTS, samples every ${SAMPLE} s, warm-up ${WARMUP} s, RSS slack ${SLACK_KIB} KiB; logs in $LOG"
i=0
for m in "${MIX[@]}"; do
    read -r name test args <<<"$m"
    port=$((PORT0 + i))
    i=$((i + 1))
    # shellcheck disable=SC2086
    SOFTRDMA_FAULTS=$FAULTS "$SOFTRDMA_BIN" perf "$test" $args --verify --stats --duration "$SECONDS_TOTAL" \
        --server -p "$port" >"$LOG/$name.server.out" 2>"$LOG/$name.server.err" &
    names+=("$name") pids+=($!) roles+=(server)
    for _ in $(seq 100); do
        grep -q "Waiting for client" "$LOG/$name.server.out" 2>/dev/null && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    SOFTRDMA_FAULTS=$FAULTS "$SOFTRDMA_BIN" perf "$test" $args --verify --stats --duration "$SECONDS_TOTAL" \
        --client 127.0.0.1 -p "$port" >"$LOG/$name.client.out" 2>"$LOG/$name.client.err" &
    names+=("$name") pids+=($!) roles+=(client)
done

# Samples: one line per process and time: t index rss_kib fds
samples="$LOG/samples.txt"
: >"$samples"
start=$(date +%s)
while :; do
    t=$(( $(date +%s) - start ))
    alive=0
    for k in "${!pids[@]}"; do
        p=${pids[$k]}
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l || true)
        # A zombie has no RSS line: it has finished. No open fds: it is
        # exiting (every live process here holds its streams and sockets),
        # its memory half torn down. Past the run's length a process is
        # closing its devices (one was sampled at 62 s of 60 with 5 of its
        # 14 fds left): alive, but not a sample of a running process.
        if [ -n "$rss" ] && [ "${fds:-0}" -gt 0 ]; then
            alive=$((alive + 1))
            if [ "$t" -lt "$SECONDS_TOTAL" ]; then
                echo "$t $k $rss $fds" >>"$samples"
            fi
        fi
    done
    [ "$alive" -eq 0 ] && break
    if [ "$t" -gt $((SECONDS_TOTAL + 120)) ]; then
        echo "soak: FAILED: processes still running 120 s after the end of the run"
        exit 1
    fi
    sleep "$SAMPLE"
done

failed=0
statuses=()
for k in "${!pids[@]}"; do
    if wait "${pids[$k]}"; then statuses+=(0); else statuses+=($?); failed=1; fi
done
trap - EXIT

# The table: per process, the first sample after the warm-up, the highest
# and the last, RSS in KiB and fds; the verdict.
echo
printf "%-14s %-6s %7s %6s %9s %8s %8s %9s %9s %9s %7s %5s %5s %5s  %s\n" \
    test role pid rounds "pkts sent" retrans samples "rss@warm" "rss max" "rss last" growth "fd@w" "fd mx" "fd mn" verdict
for k in "${!pids[@]}"; do
    name=${names[$k]} role=${roles[$k]}
    out="$LOG/$name.$role.out"
    rounds=$(sed -n 's/^Rounds: \([0-9]*\) in.*/\1/p' "$out" | tail -1)
    pkts=$(awk '$1 == "sent_pkts" {print $2}' "$out" | tail -1)
    retrans=$(awk '$1 == "retransmits" {print $2}' "$out" | tail -1)
    read -r n base max last fdb fdmax fdmin < <(awk -v k="$k" -v w="$WARMUP" '
        $2 == k && $1 >= w {
            n++; if (n == 1) { base = $3; fdb = $4; max = $3; fdmax = $4; fdmin = $4 }
            if ($3 > max) max = $3; if ($4 > fdmax) fdmax = $4; if ($4 < fdmin) fdmin = $4
            last = $3
        }
        END { if (n == 0) print 0, 0, 0, 0, 0, 0, 0; else print n, base, max, last, fdb, fdmax, fdmin }' "$samples")
    growth=$((max - base))
    verdict=ok
    if [ "${statuses[$k]}" -ne 0 ]; then
        verdict="FAILED: exit ${statuses[$k]} (see $LOG/$name.$role.err)"
    elif [ "$n" -lt 2 ]; then
        verdict="FAILED: fewer than 2 samples after the warm-up"
    elif [ "$fdmax" -ne "$fdmin" ]; then
        verdict="FAILED: open fds changed ($fdmin..$fdmax)"
    elif [ "$growth" -gt "$SLACK_KIB" ]; then
        verdict="FAILED: RSS grew $growth KiB (> $SLACK_KIB)"
    fi
    [ "$verdict" = ok ] || failed=1
    printf "%-14s %-6s %7s %6s %9s %8s %8s %9s %9s %9s %7s %5s %5s %5s  %s\n" \
        "$name" "$role" "${pids[$k]}" "${rounds:-?}" "${pkts:-?}" "${retrans:-?}" "$n" "$base" "$max" "$last" "$growth" "$fdb" "$fdmax" "$fdmin" "$verdict"
done
echo "(RSS in KiB; samples every ${SAMPLE} s after a ${WARMUP} s warm-up; all samples in $samples: t index rss fds)"
for k in "${!pids[@]}"; do
    if [ "${statuses[$k]}" -ne 0 ]; then
        echo "--- ${names[$k]} ${roles[$k]}: last lines of its error output"
        tail -5 "$LOG/${names[$k]}.${roles[$k]}.err"
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "soak: FAILED"
    exit 1
fi
echo "soak: OK (${SECONDS_TOTAL} s, ${#pids[@]} processes, fds constant, RSS within ${SLACK_KIB} KiB after the warm-up)"
