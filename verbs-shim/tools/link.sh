#!/bin/sh
# Builds the shim and makes target/<profile>/libibverbs.so.1 (a symlink to
# Cargo's libibverbs.so), then prints the directory to put first on
# LD_LIBRARY_PATH:
#
#   LD_LIBRARY_PATH=$(verbs-shim/tools/link.sh --release) ibv_devinfo
#
# The tests do the same in tests/common/mod.rs (lib_dir).
set -eu
cd "$(dirname "$0")/../.."
profile=debug
[ "${1:-}" = "--release" ] && profile=release
cargo build -q -p verbs-shim ${1:+"$1"}
dir="${CARGO_TARGET_DIR:-target}/$profile"
ln -sf libibverbs.so "$dir/libibverbs.so.1"
cd "$dir" && pwd
