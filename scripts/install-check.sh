#!/usr/bin/env bash
# One install command: `cargo install --path soft-rdma` into a temporary root
# gives a softrdma that runs verbs programs with nothing else (the shims it
# carries, written to a private per-user cache; ARCHITECTURE.md "Installing").
# From a directory with no target/, with a fresh HOME:
#   - `softrdma run -- ibv_devinfo` shows softrdma0, and the cache is 0700
#     with the three libraries, ours and writable by nobody else;
#   - an ib_write_bw pair runs (perftest's result row checked);
#   - a tampered cached library is noticed, replaced, and the run works;
#   - a cache directory others may write to is refused (not used).
# Slow (a release build of the stack, twice: the outer build and the nested
# one of the shims), so a step of scripts/test.sh, not a unit test.
# Usage: scripts/install-check.sh   (INSTALL_CHECK_PORT: TCP port, 20931)
set -euo pipefail
cd "$(dirname "$0")/.."
ws=$PWD
port=${INSTALL_CHECK_PORT:-20931}
tmp=$(mktemp -d /tmp/softrdma-install.XXXXXX)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "install-check: FAILED: $*" >&2; exit 1; }

# The lock file's versions; cargo's own temporary target directory.
cargo install --quiet --locked --path "$ws/soft-rdma" --root "$tmp/root"
sr=$tmp/root/bin/softrdma
[ -z "$(ls "$tmp/root/bin" | grep -v '^softrdma$')" ] || fail "installed more than softrdma: $(ls "$tmp/root/bin")"

mkdir -p "$tmp/run" "$tmp/home" "$tmp/runtime"
chmod 0700 "$tmp/runtime"
cd "$tmp/run"
unset XDG_CACHE_HOME SOFTRDMA_SHIM_DIR LD_LIBRARY_PATH LD_PRELOAD
export HOME=$tmp/home XDG_RUNTIME_DIR=$tmp/runtime

out=$("$sr" run -- ibv_devinfo)
grep -q "hca_id:.*softrdma0" <<<"$out" || fail "ibv_devinfo through the installed softrdma: $out"
echo "ibv_devinfo: $(grep hca_id <<<"$out")"
cache=$(ls -d "$HOME"/.cache/softrdma/*/)
cache=${cache%/}
for d in "$HOME/.cache" "$HOME/.cache/softrdma" "$cache"; do
    [ "$(stat -c %a "$d")" = 700 ] || fail "$d has mode $(stat -c %a "$d"), not 700"
done
for f in libibverbs.so.1 librdmacm.so.1 libsoftrdma_fsface.so; do
    [ -f "$cache/$f" ] || fail "no $f in $cache"
    [ "$(stat -c %u "$cache/$f")" = "$(id -u)" ] || fail "$cache/$f is not ours"
    [ $(( 0$(stat -c %a "$cache/$f") & 022 )) = 0 ] || fail "$cache/$f is writable by others"
done
echo "cache: $cache ($(ls "$cache" | tr '\n' ' '))"

# An ib_write_bw pair, both sides through the installed softrdma.
"$sr" run -- ib_write_bw -s 65536 -n 2000 -p "$port" >"$tmp/server.log" 2>&1 &
srv=$!
for _ in $(seq 100); do
    ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.1
done
timeout 60 "$sr" run -- ib_write_bw -s 65536 -n 2000 -p "$port" 127.0.0.1 >"$tmp/client.log" 2>&1 ||
    fail "ib_write_bw client: $(cat "$tmp/client.log")"
wait "$srv" || fail "ib_write_bw server: $(cat "$tmp/server.log")"
srv=
row=$(grep -E '^ *65536 +2000 ' "$tmp/client.log") || fail "no 65536-byte result row: $(cat "$tmp/client.log")"
echo "ib_write_bw: $row"

# Tampered: noticed, replaced with the carried bytes, and the run works.
cp "$cache/libibverbs.so.1" "$tmp/good"
chmod u+w "$cache/libibverbs.so.1"
printf 'planted' | dd of="$cache/libibverbs.so.1" bs=1 seek=4096 conv=notrunc status=none
"$sr" run -- ibv_devices >"$tmp/tamper.log" 2>&1 || fail "run after tampering: $(cat "$tmp/tamper.log")"
grep -q "replaced by this softrdma's copy" "$tmp/tamper.log" || fail "tampering not reported: $(cat "$tmp/tamper.log")"
grep -q softrdma0 "$tmp/tamper.log" || fail "ibv_devices after tampering: $(cat "$tmp/tamper.log")"
cmp -s "$tmp/good" "$cache/libibverbs.so.1" || fail "the tampered library was not replaced"
echo "tampered library: reported and replaced"

# A cache directory others could write to is never used.
chmod 0770 "$cache"
used=$("$sr" run -- sh -c 'echo "$LD_LIBRARY_PATH"')
chmod 0700 "$cache"
case "$used" in
    "$XDG_RUNTIME_DIR/softrdma/"*) ;;
    *) fail "used ${used%%:*}, not the next candidate, while $cache was group-writable" ;;
esac
echo "group-writable cache refused; used ${used%%:*} instead"
echo "install-check: ok"
