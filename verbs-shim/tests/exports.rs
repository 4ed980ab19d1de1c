//! The exported ABI matches the installed rdma-core library: the same 146
//! default symbols with the same version nodes, and the SONAME.

mod common;
use test_support::shim;

fn exports_of(lib: &std::path::Path) -> String {
    shim::exports_of("IBVERBS_", lib)
}

fn diff(a: &str, b: &str) -> String {
    let (sa, sb): (
        std::collections::BTreeSet<&str>,
        std::collections::BTreeSet<&str>,
    ) = (a.lines().collect(), b.lines().collect());
    let mut d = String::new();
    for l in sa.difference(&sb) {
        d += &format!("  only in the first:  {l}\n");
    }
    for l in sb.difference(&sa) {
        d += &format!("  only in the second: {l}\n");
    }
    d
}

#[test]
fn committed_list_matches_the_installed_library() {
    assert!(
        std::path::Path::new(common::SYSTEM_LIB).exists(),
        "{} missing: install libibverbs1 (scripts/test.sh does)",
        common::SYSTEM_LIB
    );
    let installed = exports_of(common::SYSTEM_LIB.as_ref());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/exports.txt")).unwrap();
    assert_eq!(
        installed.lines().count(),
        146,
        "the installed library changed: regenerate src/exports.txt"
    );
    assert!(
        installed == committed,
        "installed vs src/exports.txt (regenerate with scripts/gen-exports.sh IBVERBS_):\n{}",
        diff(&installed, &committed)
    );
}

#[test]
fn our_library_exports_exactly_the_installed_symbols() {
    let ours = exports_of(&common::shim_lib());
    let installed = exports_of(common::SYSTEM_LIB.as_ref());
    assert!(
        ours == installed,
        "ours vs installed:\n{}",
        diff(&ours, &installed)
    );
    // And nothing else: no Rust symbols, no unversioned ones; only the
    // private node of rdma_cm's API (`__softrdma_*`, for rdmacm-shim).
    let t = shim::objdump("-T", &common::shim_lib());
    let extra: Vec<&str> = t
        .lines()
        .filter(|l| {
            let private = l.contains("SOFTRDMA_RDMACM_PRIVATE") && l.contains(" __softrdma_");
            let ibverbs = l.contains("IBVERBS_");
            l.contains(" g ") && !l.contains("*UND*") && !ibverbs && !private
        })
        .collect();
    assert!(extra.is_empty(), "unexpected exports: {extra:#?}");
}

#[test]
fn soname_is_libibverbs_so_1() {
    let p = shim::objdump("-p", &common::shim_lib());
    assert!(
        p.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["SONAME", "libibverbs.so.1"]),
        "{p}"
    );
}

#[test]
fn rdma_cm_api_is_exported_privately() {
    // Every librdmacm export has its `__softrdma_` twin here, in the
    // private node, which the thin librdmacm.so.1 jumps to.
    let t = shim::objdump("-T", &common::shim_lib());
    let ours: std::collections::BTreeSet<&str> = t
        .lines()
        .filter(|l| l.contains("SOFTRDMA_RDMACM_PRIVATE") && !l.contains("*ABS*"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rdmacm-shim/src/exports.txt"
    ))
    .unwrap();
    let want: std::collections::BTreeSet<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| format!("__softrdma_{n}"))
        .collect();
    assert_eq!(want.len(), 68);
    let ours: std::collections::BTreeSet<String> = ours.into_iter().map(String::from).collect();
    assert_eq!(ours, want);
}
