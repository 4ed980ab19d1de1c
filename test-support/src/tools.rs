//! External tools a test uses (perftest, ibverbs-utils, tshark, scapy, `ip
//! netns`). Where one is missing the test is skipped with a note — unless
//! `SOFTRDMA_REQUIRE_TOOLS` is set (scripts/test.sh installs the tools and
//! sets it), where a missing tool fails the test: the suite never passes
//! without having run the check.

use std::process::Command;

/// The variable that makes a missing tool a failure.
pub const REQUIRE_VAR: &str = "SOFTRDMA_REQUIRE_TOOLS";

/// Whether missing tools fail (`SOFTRDMA_REQUIRE_TOOLS` set, to anything).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some()
}

/// `what` is unavailable (`why`): fail if tools are [`required`], otherwise
/// print a note saying the check is skipped.
pub fn unavailable(what: &str, why: &str) {
    assert!(
        !required(),
        "{what} is required ({REQUIRE_VAR} is set) but unavailable: {why} \
         (scripts/test.sh installs the tools)"
    );
    eprintln!("SKIP: {what} is unavailable ({why}); scripts/test.sh installs it");
}

/// Whether program `prog` is on `PATH` (see [`unavailable`] for a missing one).
pub fn have(prog: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    if !found {
        unavailable(prog, "not on PATH");
    }
    found
}

/// Whether `cmd probe…` runs and exits 0 — e.g. `python3 -c "import
/// scapy.contrib.roce"` (see [`unavailable`] for one that does not).
pub fn works(cmd: &str, probe: &[&str]) -> bool {
    let r = Command::new(cmd).args(probe).output();
    let why = match &r {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!(
            "`{cmd} {}` exited {}: {}",
            probe.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("{cmd}: {e}"),
    };
    unavailable(cmd, &why);
    false
}

/// Whether the C compiler (`$CC`, else `cc`) finds `header` — e.g.
/// `infiniband/verbs.h` from Debian's `package` (libibverbs-dev); see
/// [`unavailable`] for one it does not find. A machine with only Rust has the
/// compiler (Rust links with it) but none of these headers.
pub fn have_header(header: &str, package: &str) -> bool {
    use std::io::Write;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let child = Command::new(&cc)
        .args(["-E", "-x", "c", "-o", "/dev/null", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let found = child.is_ok_and(|mut c| {
        let fed = c
            .stdin
            .take()
            .is_some_and(|mut i| writeln!(i, "#include <{header}>").is_ok());
        c.wait().is_ok_and(|s| s.success()) && fed
    });
    if !found {
        unavailable(package, &format!("{cc} finds no <{header}>"));
    }
    found
}
