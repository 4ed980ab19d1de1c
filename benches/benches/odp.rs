//! Benchmarks of the `odp` crate: the notifier fast paths, ODP faulting against
//! raw `MADV_POPULATE_WRITE`, registration against pinning, what the
//! userfaultfd monitor adds to `munmap`, and guarded copies against plain
//! ones. Goals and results: docs/BENCHMARKS.md.
//!
//! Every benchmark that needs fresh memory uses `iter_custom` so that `mmap`,
//! `munmap`, registration and teardown stay outside the timed span: only the
//! operation named by the benchmark is inside `Instant::now()..elapsed()`.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use odp::guarded;
use odp::notifier::{Event, Invalidate, InvalidateRange, Invalidation, Notifiers, Refused, SeqSet};
use odp::sys::populate::populate;
use odp::{Access, ImplicitUmem, Mapping, Mm, MmConfig, MmGet, Mode, Pinned, Umem};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// A fresh private anonymous read/write mapping: no page of it has been
/// touched. Dropping it is the `munmap` the munmap benchmarks time.
fn anon(len: usize) -> Mapping {
    Mapping::anon(len).unwrap_or_else(|e| panic!("mmap {len}: {e}"))
}

/// `madvise(MADV_POPULATE_WRITE)` over the whole mapping.
fn populate_write(m: &Mapping) {
    populate(m.addr(), m.len(), true).unwrap_or_else(|e| panic!("madvise(POPULATE_WRITE): {e:?}"));
}

/// The address space for every benchmark that touches real memory: one `Mm`
/// (one userfaultfd, one monitor thread), created outside any timing.
fn mm() -> MmGet {
    let mm = Mm::new(MmConfig::default());
    assert!(
        matches!(mm.source(), odp::InvalidationSource::Userfaultfd(_)),
        "benchmarks need userfaultfd: {}",
        mm.source()
    );
    mm
}

/// A subscriber that does what every real callback must: take its user lock
/// and `set_seq` under it.
struct Sub {
    lock: Mutex<()>,
}

impl Invalidate for Sub {
    fn invalidate(&self, inv: Invalidation<'_>) -> Result<SeqSet, Refused> {
        let g = self.lock.lock().unwrap();
        Ok(inv.set_seq(&g))
    }
}

fn sub() -> Arc<Sub> {
    Arc::new(Sub {
        lock: Mutex::new(()),
    })
}

fn notifier(c: &mut Criterion) {
    let mut g = c.benchmark_group("notifier");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    {
        let n = Arc::new(Notifiers::new());
        let s = sub();
        let iv = n.insert(1 << 30, PAGE, s.clone()).unwrap();
        g.bench_function("read_begin+read_retry", |b| {
            b.iter(|| {
                let seq = iv.read_begin();
                let guard = s.lock.lock().unwrap();
                black_box(iv.read_retry(&guard, seq))
            })
        });
    }

    // One page each, one page apart: interval i is [base + 2i pages, +1 page).
    let base = 1u64 << 32;
    let page_of = |i: usize| base + 2 * i as u64 * PAGE;
    let one_page = |start: u64| InvalidateRange {
        start,
        end: start + PAGE,
        event: Event::Explicit,
        blockable: true,
    };
    let populated = |count: usize| {
        let n = Arc::new(Notifiers::new());
        let s = sub();
        let ivs: Vec<_> = (0..count)
            .map(|i| n.insert(page_of(i), PAGE, s.clone()).unwrap())
            .collect();
        (n, ivs)
    };

    for &count in &[1usize, 1000, 100_000] {
        let (n, ivs) = populated(count);
        // Hit a different interval each time (a fixed stride through the
        // tree), so the timing is not one hot path down to one leaf.
        let stride = (count / 7).max(1) | 1;
        let mut k = 0usize;
        g.bench_with_input(
            BenchmarkId::new("invalidate_one_page", count),
            &count,
            |b, &count| {
                b.iter(|| {
                    k = (k + stride) % count;
                    n.invalidate(one_page(page_of(k))).unwrap();
                })
            },
        );
        drop(ivs);
    }

    // Diagnostic for the one above: the same invalidation aimed at the lowest
    // and at the highest interval. An O(log n) lookup costs the same for both;
    // a lookup that visits every interval starting below the query's end does
    // not.
    {
        const COUNT: usize = 100_000;
        let (n, ivs) = populated(COUNT);
        // The highest one takes ~0.5 ms: fewer samples keep it within 2 s.
        g.sample_size(50);
        g.bench_function(BenchmarkId::new("invalidate_lowest_page", COUNT), |b| {
            b.iter(|| n.invalidate(one_page(page_of(0))).unwrap())
        });
        g.bench_function(BenchmarkId::new("invalidate_highest_page", COUNT), |b| {
            b.iter(|| n.invalidate(one_page(page_of(COUNT - 1))).unwrap())
        });
        drop(ivs);
    }
    g.finish();
}

fn fault(c: &mut Criterion) {
    const LEN: usize = 2 * MIB;
    let mm = mm();
    let mut g = c.benchmark_group("fault");
    g.throughput(Throughput::Bytes(LEN as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));

    g.bench_function("2MiB_umem", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(LEN);
                let u = Umem::new(&mm, m.addr() as u64, LEN as u64, true).unwrap();
                let t = Instant::now();
                drop(
                    u.map(m.addr() as u64, LEN as u64, Access::Write, Mode::Fault)
                        .unwrap(),
                );
                total += t.elapsed();
                assert_eq!(u.region().mapped_pages(), LEN / PAGE as usize);
                drop(u);
                drop(m);
            }
            mm.sync_invalidations();
            total
        })
    });

    g.bench_function("2MiB_raw_populate_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(LEN);
                let t = Instant::now();
                populate_write(&m);
                total += t.elapsed();
                drop(m);
            }
            total
        })
    });
    g.finish();
}

fn register(c: &mut Criterion) {
    let mm = mm();
    let mut g = c.benchmark_group("register_1GiB");
    g.sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300));

    g.sample_size(30).measurement_time(Duration::from_secs(2));
    g.bench_function("odp", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(GIB);
                let t = Instant::now();
                let u = Umem::new(&mm, m.addr() as u64, GIB as u64, true).unwrap();
                total += t.elapsed();
                drop(u);
                drop(m);
            }
            total
        })
    });

    let mut reported = false;
    // ~0.6 s a registration: the minimum of 10 flat samples, one iteration each.
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("pinned", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(GIB);
                let t = Instant::now();
                let p = Pinned::new(&mm, m.addr() as u64, GIB as u64, true).unwrap();
                total += t.elapsed();
                if !reported {
                    eprintln!(
                        "register_1GiB/pinned: mlock {}",
                        if p.is_locked() {
                            "succeeded"
                        } else {
                            "refused (populated only)"
                        }
                    );
                    reported = true;
                }
                drop(p);
                drop(m);
            }
            total
        })
    });
    g.finish();
}

fn munmap(c: &mut Criterion) {
    const LEN: usize = 64 * MIB;
    let mm = mm();
    let mut g = c.benchmark_group("munmap_64MiB");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));

    g.bench_function("registered", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(LEN);
                let u = Umem::new(&mm, m.addr() as u64, LEN as u64, true).unwrap();
                drop(
                    u.map(m.addr() as u64, LEN as u64, Access::Write, Mode::Fault)
                        .unwrap(),
                );
                let t = Instant::now();
                drop(m);
                total += t.elapsed();
                mm.sync_invalidations();
                assert_eq!(u.region().mapped_pages(), 0, "the munmap reached the umem");
                drop(u);
            }
            total
        })
    });

    g.bench_function("unregistered", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let m = anon(LEN);
                populate_write(&m);
                let t = Instant::now();
                drop(m);
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// `guarded::copy_out` (the only way the device writes application memory)
/// against a plain `copy_nonoverlapping`: 64 MiB into resident memory (the
/// copy loop's bandwidth), and small copies (the per-call cost of the guard).
fn guarded_copy(c: &mut Criterion) {
    const LEN: usize = 64 * MIB;
    let m = anon(LEN);
    populate_write(&m); // resident: copies are timed, not page faults
    let src: Vec<u8> = (0..LEN)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect();
    let dst = m.as_ptr();
    let copy_out = |src: &[u8]| {
        // SAFETY: `dst` starts a resident, writable mapping of LEN bytes that
        // this bench owns and nothing else accesses; `src.len()` <= LEN.
        unsafe { guarded::copy_out(black_box(dst), src) }.expect("guarded copy_out")
    };

    let mut g = c.benchmark_group("copy_out_64MiB");
    g.throughput(Throughput::Bytes(LEN as u64))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("guarded", |b| b.iter(|| copy_out(black_box(&src))));
    g.bench_function("copy_nonoverlapping", |b| {
        b.iter(|| {
            // SAFETY: as for `copy_out`, and `src` is a Rust buffer of LEN
            // bytes that cannot overlap the mapping.
            unsafe { std::ptr::copy_nonoverlapping(black_box(&src).as_ptr(), black_box(dst), LEN) }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("copy_out_small");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for n in [8usize, 16, 31, 32, 48, 63, 64, 256, 4096] {
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| copy_out(black_box(&src[..n])))
        });
    }
    g.finish();
    drop(m);
}

/// Not a criterion benchmark: one printed figure, the per-page state of an
/// implicit umem after every page of 1 GiB was faulted through it.
fn implicit_footprint(_: &mut Criterion) {
    let mm = mm();
    let m = anon(GIB);
    let imp = ImplicitUmem::new(&mm, true);
    let t = Instant::now();
    let mut va = m.addr() as u64;
    while va < m.addr() as u64 + GIB as u64 {
        imp.with_map(va, 1, Access::Write, Mode::Fault, |_g| Ok(()))
            .unwrap();
        va += PAGE;
    }
    let took = t.elapsed();
    let fp = imp.footprint();
    eprintln!(
        "implicit/footprint_1GiB_touched: {} bytes ({:.1} KiB) in {} children, {:.3} bytes/page; \
         faulting one page per with_map took {:.2} s ({:.2} us/page)",
        fp,
        fp as f64 / 1024.0,
        imp.children(),
        fp as f64 / (GIB as f64 / PAGE as f64),
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / (GIB as f64 / PAGE as f64),
    );
    drop(imp);
    drop(m);
}

criterion_group!(
    benches,
    notifier,
    fault,
    register,
    munmap,
    guarded_copy,
    implicit_footprint
);
criterion_main!(benches);
