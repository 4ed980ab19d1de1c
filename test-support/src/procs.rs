//! Child processes run with a deadline (a hang fails the test instead of
//! stalling the suite), and their output as text.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

/// Wait for `child` at most `limit`, then return its output (its stdout and
/// stderr must be piped, or be empty). A hang is killed and fails, showing
/// what `what` printed.
pub fn finish(what: &str, mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if t.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{what}: no exit after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    text(&out.stdout),
                    text(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Bytes a program printed, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A program's stdout then its stderr, as text.
pub fn all_text(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}
