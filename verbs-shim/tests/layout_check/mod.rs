//! What the two layout tests share: the C compiler's view of the sizes and
//! offsets the Rust bindings claim.

/// `(Rust measurements, C printfs)` of `struct { fields }`: each struct's
/// size and the offsets of the fields named (`a.b` for a member's member),
/// for [`compare_with_c`].
macro_rules! layouts {
    ($($t:ident { $($f:ident $(. $g:ident)*),* })*) => {{
        let mut v: Vec<(String, usize)> = Vec::new();
        let mut c = String::new();
        $(
            v.push((format!("sizeof {}", stringify!($t)), std::mem::size_of::<$t>()));
            c += &format!("  printf(\"sizeof {0} %zu\\n\", sizeof(struct {0}));\n", stringify!($t));
            $(
                let name = concat!(stringify!($f) $(, ".", stringify!($g))*);
                v.push((format!("offsetof {}.{}", stringify!($t), name), std::mem::offset_of!($t, $f $(. $g)*)));
                c += &format!("  printf(\"offsetof {0}.{1} %zu\\n\", offsetof(struct {0}, {1}));\n", stringify!($t), name);
            )*
        )*
        (v, c)
    }};
}

/// Compiles and runs a C program that includes `header` and runs `body` (one
/// `printf` per measurement, `"NAME VALUE"`), and fails on any line that
/// differs from `rust`'s (`needs`: the Debian package with the header).
/// Returns the Rust lines, for the caller's own guards; `None` (the test
/// skips) where the header is not installed.
pub fn compare_with_c(
    tag: &str,
    header: &str,
    needs: &str,
    body: &str,
    rust: &[(String, usize)],
) -> Option<Vec<String>> {
    if !test_support::tools::have_header(header, needs) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("verbs-shim-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(
        &src,
        format!(
            "#include <stddef.h>\n#include <stdio.h>\n#include <{header}>\nint main(void) {{\n{body}  return 0;\n}}\n"
        ),
    )
    .unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = std::process::Command::new(&cc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(
        st.success(),
        "{cc} failed on {} (needs {needs})",
        src.display()
    );
    let out = std::process::Command::new(&exe).output().unwrap();
    let c: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let r: Vec<String> = rust.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = std::fs::remove_dir_all(&dir);
    let bad: Vec<String> = c
        .iter()
        .zip(&r)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("C: {a}  Rust: {b}"))
        .collect();
    assert_eq!(c.len(), r.len());
    assert!(bad.is_empty(), "layout differences:\n{}", bad.join("\n"));
    Some(r)
}
