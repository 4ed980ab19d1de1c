#!/bin/sh
# Every default (@@) symbol a shared library exports in version nodes named
# PREFIX*, one "VERSION NAME KIND" per line (KIND: F function, O data
# object), sorted: what a shim's src/exports.txt holds. Each shim's build.rs
# turns that list into its version script; its tests/exports.rs checks it
# against the installed library. Regenerate with
#
#   scripts/gen-exports.sh IBVERBS_ /usr/lib/x86_64-linux-gnu/libibverbs.so.1 > verbs-shim/src/exports.txt
#   scripts/gen-exports.sh RDMACM_ /usr/lib/x86_64-linux-gnu/librdmacm.so.1 > rdmacm-shim/src/exports.txt
set -eu
[ $# -eq 2 ] || { echo "usage: $0 VERSION_PREFIX LIBRARY" >&2; exit 2; }
prefix="$1"
lib="$2"
# objdump -T columns: ADDR FLAGS... SECTION SIZE VERSION NAME; a hidden
# (non-default) version is printed in parentheses and is skipped; the version
# definitions themselves live in *ABS*.
objdump -T "$lib" | awk -v prefix="$prefix" '
    $NF ~ /^[A-Za-z_]/ && index($(NF-1), prefix) == 1 && $0 !~ /\*ABS\*/ && $0 !~ /\*UND\*/ {
        kind = ($0 ~ / DO /) ? "O" : "F"
        print $(NF-1), $NF, kind
    }' | LC_ALL=C sort -u
