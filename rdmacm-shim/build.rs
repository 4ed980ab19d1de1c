//! Turns `src/exports.txt` (the installed librdmacm.so.1's default symbols,
//! `scripts/gen-exports.sh`) into a version script with rdma-core's nodes
//! (RDMACM_1.0 … 1.3, each inheriting the previous) and one trampoline per
//! `NAME@@VERSION`: `jmp __softrdma_NAME@PLT`, the private export of our
//! libibverbs.so.1 (`verbs-shim/src/rdmacm/`) that implements it.
//!
//! So this library holds no Rust objects of its own: the CM, the ids and
//! the QPs live in libibverbs.so.1 beside the device they use. It names
//! libibverbs.so.1 as NEEDED (the installed one is the link-time stand-in
//! for its SONAME); the loader finds ours first on `LD_LIBRARY_PATH`.
use std::fmt::Write as _;
use std::path::PathBuf;

const NODES: &[(&str, Option<&str>)] = &[
    ("RDMACM_1.0", None),
    ("RDMACM_1.1", Some("RDMACM_1.0")),
    ("RDMACM_1.2", Some("RDMACM_1.1")),
    ("RDMACM_1.3", Some("RDMACM_1.2")),
];

/// The installed libibverbs.so.1: only its SONAME is used, for NEEDED.
const VERBS: &str = "/usr/lib/x86_64-linux-gnu/libibverbs.so.1";

fn main() {
    println!("cargo:rerun-if-changed=src/exports.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let list = std::fs::read_to_string("src/exports.txt").expect("src/exports.txt");
    let exports: Vec<(&str, &str)> = list
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() == 3 && f[2] == "F", "VERSION NAME F: {l}");
            assert!(NODES.iter().any(|(n, _)| *n == f[0]), "unknown node {l}");
            (f[0], f[1])
        })
        .collect();
    let mut map = String::new();
    for (node, parent) in NODES {
        writeln!(map, "{node} {{").unwrap();
        writeln!(map, "  global:").unwrap();
        for (_, n) in exports.iter().filter(|(v, _)| v == node) {
            writeln!(map, "    {n};").unwrap();
        }
        if parent.is_none() {
            writeln!(map, "  local: *;").unwrap();
        }
        match parent {
            Some(p) => writeln!(map, "}} {p};").unwrap(),
            None => writeln!(map, "}};").unwrap(),
        }
    }
    let mut asm = String::from("core::arch::global_asm!(\n");
    for (ver, name) in &exports {
        let local = format!("__softrdmacm_export_{name}");
        writeln!(
            asm,
            "    \".pushsection .text.{local},\\\"ax\\\",@progbits\","
        )
        .unwrap();
        writeln!(asm, "    \".globl {local}\", \".type {local},@function\",").unwrap();
        writeln!(
            asm,
            "    \"{local}: jmp __softrdma_{name}@PLT\", \".size {local}, .-{local}\", \".popsection\","
        )
        .unwrap();
        writeln!(asm, "    \".symver {local}, {name}@@{ver}\",").unwrap();
    }
    asm.push_str(");\n");
    std::fs::write(out.join("librdmacm.map"), map).unwrap();
    std::fs::write(out.join("exports.rs"), asm).unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librdmacm.so.1");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.join("librdmacm.map").display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-cdylib-link-arg={VERBS}");
}
