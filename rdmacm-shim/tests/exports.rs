//! The exported ABI matches the installed rdma-core librdmacm: the same 68
//! default symbols with the same version nodes (RDMACM_1.0 … 1.3), the
//! SONAME, libibverbs.so.1 as NEEDED, and — checked with the dynamic loader
//! — a program's rdma_* calls reach our libibverbs.so.1.

mod common;
use test_support::shim;

fn exports_of(lib: &std::path::Path) -> String {
    shim::exports_of("RDMACM_", lib)
}

#[test]
fn committed_list_matches_the_installed_library() {
    let installed = exports_of(common::SYSTEM_LIB.as_ref());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/exports.txt")).unwrap();
    assert_eq!(
        installed.lines().count(),
        68,
        "the installed library changed: regenerate src/exports.txt"
    );
    assert_eq!(installed, committed);
}

#[test]
fn our_library_exports_exactly_the_installed_symbols() {
    let ours = exports_of(&common::our_lib());
    let installed = exports_of(common::SYSTEM_LIB.as_ref());
    assert_eq!(ours, installed);
    let t = shim::objdump("-T", &common::our_lib());
    let extra: Vec<&str> = t
        .lines()
        .filter(|l| l.contains(" g ") && !l.contains("*UND*") && !l.contains("RDMACM_"))
        .collect();
    assert!(extra.is_empty(), "unexpected exports: {extra:#?}");
}

#[test]
fn soname_and_needed() {
    let p = shim::objdump("-p", &common::our_lib());
    let has = |k: &str, v: &str| {
        p.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [k, v])
    };
    assert!(has("SONAME", "librdmacm.so.1"), "{p}");
    assert!(has("NEEDED", "libibverbs.so.1"), "{p}");
}

#[test]
fn the_loader_binds_rdma_calls_to_our_libraries() {
    // rping with no server: its first calls are enough to see the bindings.
    let out = common::program(
        "rping",
        &["-c", "-a", "127.0.0.1", "-p", "20887", "-C", "1"],
    )
    .env("LD_DEBUG", "bindings")
    .output()
    .expect("rping (rdmacm-utils)");
    let t = String::from_utf8_lossy(&out.stderr).into_owned();
    let dir = common::lib_dir().display().to_string();
    let bound = |from: &str, to: &str, sym: &str| {
        t.lines().any(|l| {
            l.contains(&format!("binding file {from}"))
                && l.contains(&format!("to {to}"))
                && l.contains(&format!("`{sym}'"))
        })
    };
    assert!(
        bound(
            "rping",
            &format!("{dir}/librdmacm.so.1"),
            "rdma_create_event_channel"
        ),
        "rping's rdma_create_event_channel is not ours:\n{t}"
    );
    assert!(
        bound(
            &format!("{dir}/librdmacm.so.1"),
            &format!("{dir}/libibverbs.so.1"),
            "__softrdma_rdma_create_id"
        ),
        "librdmacm.so.1 does not reach our libibverbs.so.1:\n{t}"
    );
}
