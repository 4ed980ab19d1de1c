#!/usr/bin/env bash
# The Debian package: softrdma in /usr/bin, the shims in /usr/lib/softrdma/
# (private: programs get them only through `softrdma run`, which finds them
# there; never over the system's libibverbs.so.1 or librdmacm.so.1).
# Built with dpkg-deb, which every Debian has, rather than cargo-deb: that
# would be one more tool to build (a few minutes of a 2-core machine) for a
# package of four files and a control file.
#
# Usage: scripts/deb.sh            # prints the path of the .deb (target/deb/)
#        scripts/deb.sh --check    # and installs it (root), runs
#                                  # `softrdma run -- ibv_devinfo` from it and
#                                  # removes it, checking the system library
set -euo pipefail
cd "$(dirname "$0")/.."

arch=$(dpkg --print-architecture)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' soft-rdma/Cargo.toml | head -1)
# The shims come from the same build, beside softrdma: no bundle needed.
# --lib as well: with only --bin, cargo builds no library of the other packages.
cargo build --release --quiet --locked -p soft-rdma --bin softrdma --lib -p verbs-shim -p rdmacm-shim -p softrdma-fsface
rel=target/release
stage=target/deb/softrdma_${version}_${arch}
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/softrdma" "$stage/usr/share/doc/softrdma"
install -m 0755 "$rel/softrdma" "$stage/usr/bin/softrdma"
install -m 0644 "$rel/libibverbs.so" "$stage/usr/lib/softrdma/libibverbs.so.1"
install -m 0644 "$rel/librdmacm.so" "$stage/usr/lib/softrdma/librdmacm.so.1"
install -m 0644 "$rel/libsoftrdma_fsface.so" "$stage/usr/lib/softrdma/libsoftrdma_fsface.so"
strip --strip-debug "$stage/usr/bin/softrdma" "$stage"/usr/lib/softrdma/*.so*
install -m 0644 README.md "$stage/usr/share/doc/softrdma/README.md"
printf 'softrdma: %s\nLicense: MIT OR Apache-2.0\n' "$(sed -n 's/^description = "\(.*\)"/\1/p' soft-rdma/Cargo.toml | head -1)" \
    >"$stage/usr/share/doc/softrdma/copyright"
cat >"$stage/DEBIAN/control" <<EOF
Package: softrdma
Version: $version
Architecture: $arch
Maintainer: soft-rdma-odp developers <soft-rdma@localhost>
Section: net
Priority: optional
Depends: libc6
Recommends: ibverbs-utils, perftest
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: userspace RoCEv2 RDMA device with On-Demand Paging
 softrdma runs unmodified verbs programs on a software RoCEv2 device
 (softrdma run -- ib_write_bw ...) with its own libibverbs.so.1 and
 librdmacm.so.1, kept in /usr/lib/softrdma: the system's libraries are
 left alone. Also softrdma devinfo, softrdma perf and softrdma stats.
EOF
deb=target/deb/softrdma_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"

[ "${1:-}" = --check ] || exit 0
fail() { echo "deb check: FAILED: $*" >&2; exit 1; }
# awk reads to the end: exiting at the first match would leave ldconfig a
# closed pipe (SIGPIPE, which pipefail and set -e turn into the script's
# exit 141 — as one suite run did).
sys=$(ldconfig -p | awk '/libibverbs.so.1 / && !found {print $NF; found = 1}')
before=$(sha256sum "$sys")
dpkg -i "$deb" >/dev/null
trap 'dpkg -r softrdma >/dev/null 2>&1 || true' EXIT
dpkg -L softrdma | grep -vE '^/(\.|usr|usr/bin|usr/lib|usr/share|usr/share/doc)$' | grep -vE '^/usr/(bin/softrdma|lib/softrdma(/.*)?|share/doc/softrdma(/.*)?)$' &&
    fail "the package installs files outside its private places"
out=$(cd / && env -u SOFTRDMA_SHIM_DIR -u LD_LIBRARY_PATH /usr/bin/softrdma run -- ibv_devinfo)
grep -q "hca_id:.*softrdma0" <<<"$out" || fail "softrdma run -- ibv_devinfo: $out"
echo "installed: $(grep hca_id <<<"$out") via $(cd / && /usr/bin/softrdma run -- sh -c 'echo ${LD_LIBRARY_PATH%%:*}')"
[ "$(sha256sum "$sys")" = "$before" ] || fail "the system's $sys changed"
dpkg -r softrdma >/dev/null
trap - EXIT
[ ! -e /usr/bin/softrdma ] && [ ! -e /usr/lib/softrdma ] || fail "dpkg -r left files behind"
echo "deb check: ok (installed, ran, removed; $sys untouched)"
