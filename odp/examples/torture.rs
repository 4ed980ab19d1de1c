//! ODP torture: device threads fault/commit/write generation-tagged records
//! into explicit and implicit umems while application threads munmap, mmap
//! over, mremap, madvise(DONTNEED) and mprotect the same memory.
//!
//! `cargo run --release -p odp --example torture -- --seconds N [--device-threads D] [--app-threads A]`
//!
//! Checks (a violation of any is counted):
//! * guarantee 1 — the process never crashes (it would not reach the summary);
//! * guarantee 2 — each slot has an epoch the application bumps to an odd value
//!   *before* an operation and to the next even value after it *returned*.
//!   Devices read the epoch while holding their guard and write records
//!   `[tag, !tag ^ MAGIC]`. In a mapping created after an unmap/discard/move
//!   returned, a record whose tag predates that operation's start was written
//!   by an access that started before the operation and landed after it
//!   returned. (`mmap(MAP_FIXED)` over a slot makes the new mapping visible
//!   before the call returns, so there the bound is one step weaker.)
//! * guarantee 3 — a write that succeeded although the slot was a hole for the
//!   whole access.
//!
//! Prints exactly one line:
//! `torture: accesses=N faults=N invalidations=N access_errors=N violations=N`
//! and exits 0 only if violations=0 and the other counts but access_errors are > 0.

use odp::{ImplicitUmem, Mm, MmConfig, Umem};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const SLOT_PAGES: usize = 16;
const SLOT: usize = SLOT_PAGES * PAGE;
const SLOTS: usize = 16;
const MAGIC: u64 = 0x0dd0_5eed_7047_7e57;
/// Slot state value meaning "unmapped right now" (ORed with the epoch).
const HOLE: u64 = 1 << 63;

/// The application's side: raw memory operations (the only unsafe here).
mod app {
    use super::PAGE;
    use odp::{MapOptions, Mapping, Prot};

    /// A fresh mapping far below everything else (16 TiB up, 1 GiB apart):
    /// the kernel allocates top-down and so never reuses the holes we punch
    /// here — another thread's stack landing in one would be clobbered by
    /// MAP_FIXED and would receive ODP writes (ODP follows the VA). That is
    /// also why the `unsafe` hole punching below is sound.
    pub fn reserve(len: usize) -> Mapping {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0x1000_0000_0000);
        loop {
            let want = NEXT.fetch_add(1 << 30, Ordering::Relaxed);
            // MAP_FIXED_NOREPLACE: never replaces an existing mapping.
            if let Ok(m) = MapOptions::new().at(want).map(len) {
                return m;
            }
        }
    }
    /// `mmap(MAP_FIXED)` fresh memory over `[off, off + len)` of `m`.
    pub fn map_fixed(m: &Mapping, off: usize, len: usize) {
        // SAFETY: replaces memory this program owns (a slot or scratch area,
        // mapped or a hole nothing else can fill, see `reserve`); no Rust
        // reference points into it (devices use guarded access).
        unsafe { m.replace(off, len, Prot::ReadWrite) }.expect("mmap(MAP_FIXED)");
    }
    /// `munmap` of `[off, off + len)` of `m` (errors ignored).
    pub fn munmap(m: &Mapping, off: usize, len: usize) {
        // SAFETY: unmaps a slot or scratch area this program owns and no Rust
        // reference points into; the hole stays free (see `reserve`).
        let _ = unsafe { m.unmap(off, len) };
    }
    /// Move a slot onto `to`; false if the kernel refused (a slot spanning
    /// several mappings, e.g. half re-protected, cannot be moved).
    pub fn mremap_to(from: u64, len: usize, to: u64) -> bool {
        // SAFETY: moves a slot onto this thread's own scratch area.
        let p = unsafe {
            libc::mremap(
                from as *mut libc::c_void,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        p as u64 == to
    }
    pub fn dontneed(addr: u64, len: usize) {
        // SAFETY: discards pages of a slot this program owns.
        unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
    pub fn protect(addr: u64, len: usize, prot: i32) {
        // SAFETY: changes protection of a slot this program owns.
        unsafe { libc::mprotect(addr as *mut libc::c_void, len, prot) };
    }
    /// Read word `i` of a slot (mapped and readable: the owning thread says so).
    pub fn word(addr: u64, i: usize) -> u64 {
        debug_assert!(i * 8 < super::SLOT && PAGE > 0);
        // SAFETY: the caller (the slot's owner) keeps it mapped and readable.
        unsafe { std::ptr::read_volatile((addr as *const u64).add(i)) }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Shared {
    arena: odp::Mapping,
    /// Per slot: epoch (even = stable, odd = an operation in progress), or HOLE|epoch.
    state: Vec<AtomicU64>,
    stop: AtomicBool,
    accesses: AtomicU64,
    access_errors: AtomicU64,
    violations: AtomicU64,
    mremap_refused: AtomicU64,
}

impl Shared {
    fn slot(&self, k: usize) -> u64 {
        (self.arena.addr() + k * SLOT) as u64
    }
}

fn violation(sh: &Shared, what: String) {
    if sh.violations.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("torture: VIOLATION: {what}");
    }
}

fn device(sh: Arc<Shared>, explicit: Arc<Umem>, implicit: Arc<ImplicitUmem>, seed: u64) {
    let mut rng = Rng(seed);
    while !sh.stop.load(Ordering::Relaxed) {
        let k = rng.below(SLOTS as u64) as usize;
        let base = sh.slot(k);
        let rec_off = rng.below((SLOT / 16) as u64) * 16;
        let va = base + rec_off;
        let before = sh.state[k].load(Ordering::Acquire);
        let use_implicit = rng.below(2) == 0;
        let kind = rng.below(8);
        // The access: fault, commit, and write a record tagged with the epoch
        // read *under the guard*.
        let r = if kind == 0 {
            // Atomics exercise the same path (tag-free word at the slot end).
            let w = base + SLOT as u64 - 8;
            if use_implicit {
                implicit.fetch_and_add(w, 1).map(drop)
            } else {
                explicit.fetch_and_add(w, 1).map(drop)
            }
        } else {
            let f = |g: &mut odp::UmemGuard<'_>| {
                let tag = sh.state[k].load(Ordering::Acquire) & !HOLE;
                let mut rec = [0u8; 16];
                rec[..8].copy_from_slice(&tag.to_le_bytes());
                rec[8..].copy_from_slice(&(!tag ^ MAGIC).to_le_bytes());
                g.write(va, &rec)
            };
            if use_implicit {
                implicit.with_map(va, 16, odp::Access::Write, odp::Mode::Fault, f)
            } else {
                explicit
                    .map(va, 16, odp::Access::Write, odp::Mode::Fault)
                    .and_then(|mut g| f(&mut g))
            }
        };
        let after = sh.state[k].load(Ordering::Acquire);
        match r {
            Ok(()) => {
                sh.accesses.fetch_add(1, Ordering::Relaxed);
                if before & HOLE != 0 && before == after {
                    violation(&sh, format!("guarantee 3: write to slot {k} succeeded while it was unmapped (state {before:#x})"));
                }
            }
            Err(_) => {
                sh.access_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Scan a slot's records: tags below `min_tag` are violations.
fn scan(sh: &Shared, k: usize, min_tag: u64, op: &str) {
    let base = sh.slot(k);
    for r in 0..SLOT / 16 {
        let (tag, chk) = (app::word(base, r * 2), app::word(base, r * 2 + 1));
        if tag == 0 && chk == 0 {
            continue;
        }
        if chk != !tag ^ MAGIC {
            continue; // torn by a concurrent device write, or the atomics word
        }
        if tag < min_tag {
            violation(sh, format!("guarantee 2: slot {k} record {r} has tag {tag} in a mapping made by {op} (minimum {min_tag})"));
        }
    }
}

fn application(sh: Arc<Shared>, slots: Vec<usize>, seed: u64) {
    let mut rng = Rng(seed);
    let scratch = app::reserve(SLOT);
    // Per slot: the smallest tag allowed in its current mapping, and what made it.
    let mut min_tag: Vec<(u64, &str)> = vec![(0, "start"); SLOTS];
    while !sh.stop.load(Ordering::Relaxed) {
        let k = slots[rng.below(slots.len() as u64) as usize];
        let (base, off) = (sh.slot(k), k * SLOT);
        scan(&sh, k, min_tag[k].0, min_tag[k].1);
        let e = sh.state[k].load(Ordering::Relaxed);
        let start = e + 1; // odd: in progress
        sh.state[k].store(start, Ordering::Release);
        let done = e + 2;
        match rng.below(5) {
            0 => {
                app::munmap(&sh.arena, off, SLOT);
                sh.state[k].store(HOLE | done, Ordering::Release);
                std::thread::sleep(Duration::from_micros(rng.below(200)));
                // Leave HOLE before the new mapping exists (guarantee-3 check).
                sh.state[k].store(done, Ordering::Release);
                app::map_fixed(&sh.arena, off, SLOT);
                min_tag[k] = (start, "munmap+mmap");
            }
            1 => {
                app::map_fixed(&sh.arena, off, SLOT);
                sh.state[k].store(done, Ordering::Release);
                min_tag[k] = (e, "mmap(MAP_FIXED) over");
            }
            2 => {
                if !app::mremap_to(base, SLOT, scratch.addr() as u64) {
                    sh.mremap_refused.fetch_add(1, Ordering::Relaxed);
                    app::munmap(&sh.arena, off, SLOT);
                }
                sh.state[k].store(HOLE | done, Ordering::Release);
                std::thread::sleep(Duration::from_micros(rng.below(100)));
                sh.state[k].store(done, Ordering::Release);
                app::map_fixed(&sh.arena, off, SLOT);
                app::munmap(&scratch, 0, SLOT);
                app::map_fixed(&scratch, 0, SLOT);
                min_tag[k] = (start, "mremap away+mmap");
            }
            3 => {
                app::dontneed(base, SLOT);
                sh.state[k].store(done, Ordering::Release);
                min_tag[k] = (start, "madvise(DONTNEED)");
            }
            _ => {
                // Re-protect: no event at all; devices must get errors, not crash.
                app::protect(base, SLOT, libc::PROT_READ);
                std::thread::sleep(Duration::from_micros(rng.below(200)));
                app::protect(base, SLOT, libc::PROT_READ | libc::PROT_WRITE);
                sh.state[k].store(done, Ordering::Release);
                // Same mapping: the previous bound stands.
            }
        }
        std::thread::sleep(Duration::from_micros(100 + rng.below(400)));
    }
    for &k in &slots {
        scan(&sh, k, min_tag[k].0, min_tag[k].1);
    }
    drop(scratch);
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("torture: {name} needs a number");
                std::process::exit(2)
            }),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = arg(&args, "--seconds", 10);
    let devices = arg(&args, "--device-threads", 3) as usize;
    let apps = arg(&args, "--app-threads", 2).max(1) as usize;

    let mm = Mm::new(MmConfig::default());
    eprintln!("torture: invalidation source: {}", mm.source());
    let arena = app::reserve(SLOTS * SLOT);
    let explicit = Arc::new(
        Umem::new(&mm, arena.addr() as u64, (SLOTS * SLOT) as u64, true)
            .expect("register explicit umem"),
    );
    let implicit = Arc::new(ImplicitUmem::new(&mm, true));
    let sh = Arc::new(Shared {
        arena,
        state: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
        accesses: AtomicU64::new(0),
        access_errors: AtomicU64::new(0),
        violations: AtomicU64::new(0),
        mremap_refused: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    for d in 0..devices {
        let (sh, e, i) = (sh.clone(), explicit.clone(), implicit.clone());
        threads.push(std::thread::spawn(move || {
            device(sh, e, i, 0x9e37_79b9_7f4a_7c15 ^ (d as u64 + 1))
        }));
    }
    for a in 0..apps {
        let sh = sh.clone();
        let mine: Vec<usize> = (0..SLOTS).filter(|k| k % apps == a).collect();
        threads.push(std::thread::spawn(move || {
            application(sh, mine, 0xdead_beef ^ ((a as u64 + 7) * 0x1000_0001))
        }));
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(50));
    }
    sh.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("torture thread panicked");
    }
    let (ce, ci) = (explicit.counters(), implicit.counters());
    let faults = ce.page_faults + ci.page_faults;
    let invalidations = ce.invalidations + ci.invalidations;
    let accesses = sh.accesses.load(Ordering::Relaxed);
    let errors = sh.access_errors.load(Ordering::Relaxed);
    let violations = sh.violations.load(Ordering::Relaxed);
    let refused = sh.mremap_refused.load(Ordering::Relaxed);
    if refused > 0 {
        eprintln!("torture: note: {refused} mremap(s) refused by the kernel (slot spanning several mappings); munmap used instead");
    }
    println!("torture: accesses={accesses} faults={faults} invalidations={invalidations} access_errors={errors} violations={violations}");
    let ok = violations == 0 && accesses > 0 && faults > 0 && invalidations > 0;
    std::process::exit(if ok { 0 } else { 1 });
}
