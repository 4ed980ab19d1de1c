#!/bin/sh
# Regenerates src/exports.txt: every default (@@) symbol the installed
# librdmacm.so.1 exports, one "VERSION NAME KIND" per line (KIND: F function,
# O data object), sorted. build.rs turns it into the version script and the
# trampolines; tests/exports.rs checks it against the installed library.
#
#   rdmacm-shim/tools/gen-exports.sh [/path/to/librdmacm.so.1] > rdmacm-shim/src/exports.txt
set -eu
lib="${1:-/usr/lib/x86_64-linux-gnu/librdmacm.so.1}"
objdump -T "$lib" | awk '
    $NF ~ /^[A-Za-z_]/ && $(NF-1) ~ /^RDMACM_/ && $0 !~ /\*ABS\*/ && $0 !~ /\*UND\*/ {
        kind = ($0 ~ / DO /) ? "O" : "F"
        print $(NF-1), $NF, kind
    }' | LC_ALL=C sort -u
