//! The layering of soft-rdma's library, checked on its source: each
//! top-level module refers only to modules of lower layers (so there is no
//! cycle), the QP's roles do not refer to each other, and `unsafe` appears
//! only in the modules allowed to hold it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom up. A module may use any module of a lower layer and
/// none of its own layer or above.
const LAYERS: &[&[&str]] = &[
    &["log", "limits", "sync"],
    &["types"],
    &["sys", "shm", "wire"],
    &["transport"],
    &["resources"],
    &["qp"],
    &["device"],
    &["verbs"],
];

/// Items the crate root re-exports, by the module that defines them.
const ROOT_ITEMS: &[(&str, &str)] = &[("lock", "sync")];

/// The files that may contain `unsafe`: the syscall, ring and shared-mapping
/// modules (and the crate root, which only names the rule).
const UNSAFE_ALLOWED: &[&str] = &[
    "lib.rs",
    "sys.rs",
    "shm.rs",
    "transport/sys.rs",
    "transport/ring.rs",
];

/// Modules that must carry `#![forbid(unsafe_code)]` for all below them.
const FORBIDDING: &[&str] = &[
    "types.rs",
    "limits.rs",
    "sync.rs",
    "log.rs",
    "verbs/mod.rs",
    "device/mod.rs",
    "qp/mod.rs",
    "resources/mod.rs",
    "wire/mod.rs",
    "transport/addr.rs",
    "transport/faults.rs",
    "transport/loopback.rs",
    "transport/multicast.rs",
    "transport/pcap.rs",
    "transport/same_host.rs",
    "transport/udp.rs",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file (not the `softrdma` binary), relative to src/.
fn library_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "bin" {
                    walk(&p, out);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&src(), &mut out);
    out.into_iter()
        .map(|p| p.strip_prefix(src()).unwrap().to_owned())
        .collect()
}

/// The top-level module a file belongs to (`None`: the crate root).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    if rel.components().count() > 1 {
        Some(first)
    } else if first == "lib.rs" {
        None
    } else {
        Some(first.trim_end_matches(".rs").to_owned())
    }
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add it to LAYERS"))
}

/// Source text without comments (so that prose naming a module or `unsafe`
/// does not count).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file refers to as `crate::NAME`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // e.g. `$crate::`
        }
        let name: String = code[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let name = ROOT_ITEMS
            .iter()
            .find(|(item, _)| *item == name)
            .map_or(name.clone(), |(_, m)| m.to_string());
        out.insert(name);
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let mut violations = Vec::new();
    for rel in library_files() {
        let Some(module) = module_of(&rel) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(src().join(&rel)).unwrap());
        for used in crate_refs(&text) {
            if used != module && layer(&used) >= layer(&module) {
                violations.push(format!(
                    "{}: `{module}` (layer {}) uses `{used}` (layer {})",
                    rel.display(),
                    layer(&module),
                    layer(&used)
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_qp_roles_do_not_use_each_other() {
    let roles = ["requester", "responder", "completer"];
    for role in roles {
        let text = code(&std::fs::read_to_string(src().join(format!("qp/{role}.rs"))).unwrap());
        for other in roles.iter().filter(|o| **o != role) {
            assert!(
                !text.contains(&format!("{other}::")) && !text.contains(&format!("super::{other}")),
                "qp/{role}.rs uses qp/{other}.rs: roles talk through qp/mod.rs"
            );
        }
    }
}

#[test]
fn unsafe_only_where_allowed() {
    let mut found = Vec::new();
    for rel in library_files() {
        let text = code(&std::fs::read_to_string(src().join(&rel)).unwrap());
        let uses = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == "unsafe");
        let name = rel.to_str().unwrap().to_owned();
        if uses && !UNSAFE_ALLOWED.contains(&name.as_str()) {
            found.push(name);
        }
    }
    assert!(
        found.is_empty(),
        "`unsafe` outside the allowed modules: {found:?}"
    );
    for f in FORBIDDING {
        let text = std::fs::read_to_string(src().join(f)).unwrap();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{f} must forbid unsafe code"
        );
    }
}

/// The check itself: a reference upward is found (so the test above can fail).
#[test]
fn an_upward_reference_is_caught() {
    let refs = crate_refs(&code(
        "use crate::device::DeviceInner; // crate::verbs\nlet x = $crate::log;",
    ));
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["device"]);
    assert!(layer("device") >= layer("qp"));
}
