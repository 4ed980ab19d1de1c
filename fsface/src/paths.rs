//! Which paths the face answers.

#![forbid(unsafe_code)]

/// The directories the face stands for; a path is in the face when it is one
/// of them or below one (literal absolute paths, as programs spell them).
const PREFIXES: [&[u8]; 3] = [
    b"/sys/class/infiniband",
    b"/sys/class/infiniband_verbs",
    b"/dev/infiniband",
];

/// Whether `path` names something in the face.
pub fn in_face(path: &[u8]) -> bool {
    PREFIXES
        .iter()
        .any(|p| path.starts_with(p) && (path.len() == p.len() || path[p.len()] == b'/'))
}

/// `root` followed by `path`: where `path` lives in the tree.
pub fn in_tree(root: &[u8], path: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(root.len() + path.len() + 1);
    v.extend_from_slice(root);
    v.extend_from_slice(path);
    v.push(0);
    v
}
