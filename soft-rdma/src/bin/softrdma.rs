//! `softrdma`: device information, perftest-style benchmarks, and running
//! unmodified verbs programs on the soft device.
fn main() {
    eprintln!("softrdma: not yet implemented");
    std::process::exit(2);
}
