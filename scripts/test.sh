#!/usr/bin/env bash
# The whole test suite (README: "Run the tests"). Installs what it needs, so
# it passes on a fresh Debian machine with Rust; CI runs it from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
step() { echo; echo "=== $*"; }
ok() { passed=$((passed + 1)); }

# Installs the Debian packages given that are missing.
install_missing_debs() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}
# tshark decodes the device's captures; iproute2 makes the two-host tests'
# network namespaces, ethtool switches their veths' segmentation offload off
# (soft-rdma/tests/between_hosts.rs).
install_missing_debs tshark iproute2 ethtool
# verbs-shim: the real verbs programs it runs (ibverbs-utils, perftest), the
# library it replaces and whose exports it checks (libibverbs1, with objdump
# from binutils), the headers of its layout test (libibverbs-dev), and the
# providers and librdmacm that perftest links.
install_missing_debs libibverbs-dev ibverbs-utils perftest ibverbs-providers librdmacm1 binutils
# UCX (ucx_info, ucx_perftest, and UCP's headers for tests/c/ucp_data.c)
# over the shim and the file-system face (verbs-shim/tests/ucx.rs).
install_missing_debs ucx-utils libucx0 libucx-dev
# Open MPI (mpicc, mpirun) over UCX over the device (verbs-shim/tests/mpi.rs).
install_missing_debs openmpi-bin libopenmpi-dev
# rdmacm-shim: the rdma_cm programs it runs (rdmacm-utils) and the headers of
# its layout test and C program (librdmacm-dev).
install_missing_debs rdmacm-utils librdmacm-dev
# libfabric's verbs provider (fi_info, fi_pingpong) and qperf over it
# (rdmacm-shim/tests/libfabric.rs).
install_missing_debs qperf libfabric-bin
# The compare harness's TCP baseline between two namespace hosts
# (benches/tests/compare.rs runs it: benches/src/compare/hosts.rs).
install_missing_debs iperf3
# tests/ (the end-to-end crate): its verbs client, the `ibverbs` crate, builds
# ibverbs-sys, which runs cmake over its bundled rdma-core (needing pkg-config
# and libnl) and bindgen (libclang).
install_missing_debs cmake libclang-dev pkg-config libnl-3-dev libnl-route-3-dev
# rdma-core's own verbs tests (pyverbs) run through the shim.
install_missing_debs python3-pyverbs
# Their ODP and parent-domain huge-page tests need reserved 2 MiB pages;
# reserve some where this machine lets us (verbs-shim/tests/pyverbs.rs then
# refuses those tests' skip).
hp=/proc/sys/vm/nr_hugepages
if [ -w "$hp" ] && [ "$(cat "$hp")" -lt 64 ]; then
    echo 64 2>/dev/null >"$hp" || echo "could not reserve huge pages: their pyverbs tests skip"
fi
# scapy recomputes ICRCs independently of ours.
python3 -c "import scapy.contrib.roce" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore scapy
# The tool checks above are then mandatory, not skipped.
export SOFTRDMA_REQUIRE_TOOLS=1

step "formatting (cargo fmt --check)"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "rustfmt is not installed: formatting not checked"
fi
ok

step "build (all targets; a warning fails the suite)"
mkdir -p target
cargo build --workspace --all-targets 2>&1 | tee target/build.log
if grep -q "^warning" target/build.log; then echo "FAILED: the build has warnings"; exit 1; fi
ok

step "lints (clippy on every target; a warning or an unsafe block without a SAFETY note fails the suite)"
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --quiet -- -D warnings -D clippy::undocumented_unsafe_blocks
else
    echo "clippy is not installed: lints not checked"
fi
ok

step "unit, integration and doc tests"
cargo test --workspace
ok

step "loom models (notifier, umem fault/commit vs invalidate)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p odp --release --lib loom
ok

step "mutation check: without set_seq, bug patterns 1 and 9 must fail"
if cargo test -p odp --test bug_patterns --features mutant-no-set-seq -- pattern_01 pattern_09 >target/mutant.log 2>&1; then
    echo "FAILED: the pattern tests passed with set_seq removed (see target/mutant.log)"
    exit 1
fi
grep -E "^test pattern_0(1|9)_.* FAILED" target/mutant.log
ok

step "ODP torture (the three guarantees under concurrent munmap/mremap/madvise/mprotect)"
cargo run --release --quiet -p odp --example torture -- --seconds "${TORTURE_SECONDS:-20}"
ok

step "soak (softrdma perf pairs under SOFTRDMA_FAULTS, verified; RSS and fds must stay constant)"
SOAK_SECONDS="${SOAK_SECONDS:-90}" bash scripts/soak.sh
ok

step "one install command: cargo install --path soft-rdma, then softrdma run alone (scripts/install-check.sh)"
bash scripts/install-check.sh
ok

step "Debian package: build, dpkg -i, softrdma run -- ibv_devinfo, dpkg -r (scripts/deb.sh --check)"
bash scripts/deb.sh --check
ok

step "benchmarks compile"
cargo bench -p benches --no-run --quiet
ok

echo
echo "suites: ${passed} passed, 0 failed"
