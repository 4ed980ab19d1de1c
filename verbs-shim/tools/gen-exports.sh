#!/bin/sh
# Regenerates src/exports.txt: every default (@@) symbol the installed
# libibverbs.so.1 exports, one "VERSION NAME KIND" per line (KIND: F function,
# O data object), sorted. build.rs turns it into the version script and the
# .symver bindings; tests/exports.rs checks it against the installed library.
#
#   verbs-shim/tools/gen-exports.sh [/path/to/libibverbs.so.1] > verbs-shim/src/exports.txt
set -eu
lib="${1:-/usr/lib/x86_64-linux-gnu/libibverbs.so.1}"
# objdump -T columns: ADDR FLAGS... SECTION SIZE VERSION NAME; a hidden
# (non-default) version is printed in parentheses and is skipped; the version
# definitions themselves live in *ABS*.
objdump -T "$lib" | awk '
    $NF ~ /^[A-Za-z_]/ && $(NF-1) ~ /^IBVERBS_/ && $0 !~ /\*ABS\*/ && $0 !~ /\*UND\*/ {
        kind = ($0 ~ / DO /) ? "O" : "F"
        print $(NF-1), $NF, kind
    }' | LC_ALL=C sort -u
