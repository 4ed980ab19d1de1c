//! Instruction counts of the per-packet lookups (`benches::lookup`), for
//! callgrind: `valgrind --tool=callgrind --toggle-collect='*lookup_cg::measure*'
//! target/release/lookup_cg TABLE N THREADS` — deterministic on a loaded
//! machine where wall time is not. Each thread does `ITERS` lookups.

use benches::lookup::{filled, run, Table};

const ITERS: u32 = 100_000;

#[inline(never)]
fn measure(t: &dyn Table, n: u32) -> u64 {
    run(t, n, ITERS)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (name, n, threads) = match &args[1..] {
        [name, n, threads] => (name.clone(), n.parse().unwrap(), threads.parse().unwrap()),
        _ => panic!("usage: lookup_cg TABLE N THREADS"),
    };
    let tables = filled(n);
    let t = tables
        .into_iter()
        .find(|t| t.name() == name)
        .expect("table: rwlock_hashmap, dashmap, rwlock_slots, arcswap_slots");
    let t: &dyn Table = &*t;
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| measure(t, n))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("{name} n={n} threads={threads} found={total}");
}
