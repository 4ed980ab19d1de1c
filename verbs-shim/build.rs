//! Turns `src/exports.txt` (generated from the installed libibverbs.so.1 by
//! `scripts/gen-exports.sh`) into
//! - `$OUT_DIR/libibverbs.map`: the version script with rdma-core's version
//!   nodes (IBVERBS_1.0 … 1.14, each inheriting the previous, and
//!   IBVERBS_PRIVATE_34), and
//! - `$OUT_DIR/exports.rs`: one `global_asm!` that gives every exported
//!   function a two-instruction-free trampoline (`jmp` to the Rust function
//!   `shim_NAME`, named with a `sym` operand so it needs no `#[no_mangle]`)
//!   bound to `NAME@@VERSION` with `.symver`, and defines the data objects.
//!   A missing `shim_NAME` is a compile error.
//!
//! The trampoline is needed because `.symver NAME@@V` must name a symbol
//! defined in the same object, and rustc puts functions in codegen units of
//! its choosing.
use std::fmt::Write as _;
use std::path::PathBuf;

/// rdma-core 44's version nodes in definition order, with their parents.
const NODES: &[(&str, Option<&str>)] = &[
    ("IBVERBS_1.0", None),
    ("IBVERBS_1.1", Some("IBVERBS_1.0")),
    ("IBVERBS_1.5", Some("IBVERBS_1.1")),
    ("IBVERBS_1.6", Some("IBVERBS_1.5")),
    ("IBVERBS_1.7", Some("IBVERBS_1.6")),
    ("IBVERBS_1.8", Some("IBVERBS_1.7")),
    ("IBVERBS_1.9", Some("IBVERBS_1.8")),
    ("IBVERBS_1.10", Some("IBVERBS_1.9")),
    ("IBVERBS_1.11", Some("IBVERBS_1.10")),
    ("IBVERBS_1.12", Some("IBVERBS_1.11")),
    ("IBVERBS_1.13", Some("IBVERBS_1.12")),
    ("IBVERBS_1.14", Some("IBVERBS_1.13")),
    ("IBVERBS_PRIVATE_34", None),
    // librdmacm's API for our thin librdmacm.so.1 (`rdmacm-shim/`), whose
    // exports jump here: `__softrdma_NAME` is the Rust `shim_NAME`.
    ("SOFTRDMA_RDMACM_PRIVATE", None),
];

/// The private names' prefix (`src/rdmacm/exports.txt`).
const PRIVATE_PREFIX: &str = "__softrdma_";

fn main() {
    println!("cargo:rerun-if-changed=src/exports.txt");
    println!("cargo:rerun-if-changed=src/rdmacm/exports.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut list = std::fs::read_to_string("src/exports.txt").expect("src/exports.txt");
    list += &std::fs::read_to_string("src/rdmacm/exports.txt").expect("src/rdmacm/exports.txt");
    let mut map = String::new();
    let mut asm = String::new();
    let exports: Vec<(&str, &str, &str)> = list
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "VERSION NAME KIND: {l}");
            (f[0], f[1], f[2])
        })
        .collect();
    for (node, parent) in NODES {
        writeln!(map, "{node} {{").unwrap();
        let names: Vec<&str> = exports
            .iter()
            .filter(|(v, _, _)| v == node)
            .map(|(_, n, _)| *n)
            .collect();
        if !names.is_empty() {
            writeln!(map, "  global:").unwrap();
            for n in names {
                writeln!(map, "    {n};").unwrap();
            }
        }
        match parent {
            Some(p) => writeln!(map, "}} {p};").unwrap(),
            None => writeln!(map, "}};").unwrap(),
        }
    }
    let mut operands = String::new();
    asm.push_str("core::arch::global_asm!(\n");
    for (ver, name, kind) in &exports {
        assert!(
            NODES.iter().any(|(n, _)| n == ver),
            "unknown version node {ver}"
        );
        let local = format!("__softrdma_export_{name}");
        match *kind {
            "F" => {
                writeln!(
                    asm,
                    "    \".pushsection .text.{local},\\\"ax\\\",@progbits\","
                )
                .unwrap();
                writeln!(asm, "    \".globl {local}\", \".type {local},@function\",").unwrap();
                writeln!(asm, "    \"{local}: jmp {{{name}}}\", \".size {local}, .-{local}\", \".popsection\",").unwrap();
                let rust = name.strip_prefix(PRIVATE_PREFIX).unwrap_or(name);
                writeln!(operands, "    {name} = sym shim_{rust},").unwrap();
            }
            "O" => {
                // A one-byte zero-initialised object (`bool` in C).
                writeln!(asm, "    \".pushsection .bss.{local},\\\"aw\\\",@nobits\",").unwrap();
                writeln!(
                    asm,
                    "    \".globl {local}\", \".type {local},@object\", \".size {local}, 1\","
                )
                .unwrap();
                writeln!(asm, "    \"{local}: .zero 1\", \".popsection\",").unwrap();
            }
            k => panic!("unknown kind {k} for {name}"),
        }
        writeln!(asm, "    \".symver {local}, {name}@@{ver}\",").unwrap();
    }
    asm.push_str(&operands);
    asm.push_str(");\n");
    std::fs::write(out.join("libibverbs.map"), map).unwrap();
    std::fs::write(out.join("exports.rs"), asm).unwrap();
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libibverbs.so.1");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.join("libibverbs.map").display()
    );
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
}
