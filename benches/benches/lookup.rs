//! The per-packet QP/key lookup candidates (`benches::lookup`): today's
//! `RwLock<HashMap>`, `dashmap`, a slot vector under a `RwLock`, and a
//! lock-free array of `ArcSwapOption`, at 1, 1 000 and 10 000 entries, on
//! one thread and on two at once. Figures and the decision:
//! docs/BENCHMARKS.md ("Per-packet lookups").

use benches::lookup::{filled, run};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const BATCH: u32 = 1000;

fn lookups(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("lookup_{threads}t"));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .throughput(Throughput::Elements(u64::from(BATCH)));
        for n in [1u32, 1000, 10_000] {
            for t in filled(n) {
                let t = &*t;
                // With two threads, the second looks up the same table
                // all through the measurement (the contention a second
                // receive or poll thread brings); the first is timed.
                let stop = AtomicBool::new(false);
                std::thread::scope(|s| {
                    if threads == 2 {
                        s.spawn(|| {
                            while !stop.load(Ordering::Relaxed) {
                                black_box(run(t, n, BATCH));
                            }
                        });
                    }
                    g.bench_with_input(BenchmarkId::new(t.name(), n), &n, |b, &n| {
                        b.iter(|| black_box(run(t, n, BATCH)))
                    });
                    stop.store(true, Ordering::Relaxed);
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
