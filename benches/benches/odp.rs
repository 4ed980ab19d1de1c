//! Benchmarks of the `odp` crate: the notifier fast paths, ODP faulting against
//! raw `MADV_POPULATE_WRITE`, registration against pinning, and what the
//! userfaultfd monitor adds to `munmap`. Goals and results: docs/BENCHMARKS.md.
//!
//! Every benchmark that needs fresh memory uses `iter_custom` so that `mmap`,
//! `munmap`, registration and teardown stay outside the timed span: only the
//! operation named by the benchmark is inside `Instant::now()..elapsed()`.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use odp::notifier::{Event, Invalidate, InvalidateRange, Invalidation, Notifiers, Refused, SeqSet};
use odp::{Access, ImplicitUmem, Mm, MmConfig, MmGet, Mode, Pinned, Umem};
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The only unsafe code of this file: anonymous mappings owned by the bench.
mod mem {
    use std::ptr;

    /// A private anonymous read/write mapping, unmapped on drop unless
    /// [`Anon::munmap`] already did.
    pub struct Anon {
        pub addr: u64,
        pub len: usize,
        mapped: bool,
    }

    impl Anon {
        /// A fresh mapping: no page of it has been touched.
        pub fn new(len: usize) -> Anon {
            // SAFETY: a kernel-chosen (non-fixed) anonymous mapping aliases no
            // existing memory; nothing Rust-owned is affected.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(
                p,
                libc::MAP_FAILED,
                "mmap {len}: {}",
                std::io::Error::last_os_error()
            );
            Anon {
                addr: p as u64,
                len,
                mapped: true,
            }
        }

        /// `madvise(MADV_POPULATE_WRITE)` over the whole mapping.
        pub fn populate_write(&self) {
            // SAFETY: populating only faults pages in (as a write touch would)
            // in memory this bench owns; no Rust reference points into it.
            let r = unsafe {
                libc::madvise(
                    self.addr as *mut libc::c_void,
                    self.len,
                    libc::MADV_POPULATE_WRITE,
                )
            };
            assert_eq!(
                r,
                0,
                "madvise(POPULATE_WRITE): {}",
                std::io::Error::last_os_error()
            );
        }

        /// Unmap now (the timed operation of the munmap benchmarks).
        pub fn munmap(&mut self) {
            assert!(self.mapped);
            // SAFETY: unmaps memory this bench mapped; no Rust reference
            // points into it, and `mapped` prevents a second unmap.
            let r = unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
            assert_eq!(r, 0, "munmap: {}", std::io::Error::last_os_error());
            self.mapped = false;
        }
    }

    impl Drop for Anon {
        fn drop(&mut self) {
            if self.mapped {
                self.munmap();
            }
        }
    }
}
use mem::Anon;

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
                let m = Anon::new(LEN);
                let u = Umem::new(&mm, m.addr, LEN as u64, true).unwrap();
                let t = Instant::now();
                drop(
                    u.map(m.addr, LEN as u64, Access::Write, Mode::Fault)
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
                let m = Anon::new(LEN);
                let t = Instant::now();
                m.populate_write();
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
                let m = Anon::new(GIB);
                let t = Instant::now();
                let u = Umem::new(&mm, m.addr, GIB as u64, true).unwrap();
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
                let m = Anon::new(GIB);
                let t = Instant::now();
                let p = Pinned::new(m.addr, GIB as u64, true).unwrap();
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
                let mut m = Anon::new(LEN);
                let u = Umem::new(&mm, m.addr, LEN as u64, true).unwrap();
                drop(
                    u.map(m.addr, LEN as u64, Access::Write, Mode::Fault)
                        .unwrap(),
                );
                let t = Instant::now();
                m.munmap();
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
                let mut m = Anon::new(LEN);
                m.populate_write();
                let t = Instant::now();
                m.munmap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

/// Not a criterion benchmark: one printed figure, the per-page state of an
/// implicit umem after every page of 1 GiB was faulted through it.
fn implicit_footprint(_: &mut Criterion) {
    let mm = mm();
    let m = Anon::new(GIB);
    let imp = ImplicitUmem::new(&mm, true);
    let t = Instant::now();
    let mut va = m.addr;
    while va < m.addr + GIB as u64 {
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
    implicit_footprint
);
criterion_main!(benches);
