//! ODP at the verbs level, between two processes: the owner registers an
//! explicit ODP region (`IBV_ACCESS_ON_DEMAND`) and, for a few seconds,
//! replaces random parts of it with fresh memory — `mmap(MAP_FIXED)` over
//! them, or `munmap`, a pause, and `mmap` back — while the writer keeps
//! RDMA-WRITEs into random pages of it in flight. No process may crash; a
//! WRITE either succeeds (into whatever is mapped) or completes with
//! `IBV_WC_REM_ACCESS_ERR`, after which the writer connects a fresh QP pair
//! and goes on.
//!
//! The check. Every WRITE fills its page with one word, `MAGIC | stamp`,
//! stamps increasing. The writer publishes in a word shared with the owner
//! (a file both map) the highest stamp `done` whose successful completion it
//! has polled: every WRITE up to it has been executed by the owner's device
//! (RC completes in order). Right before replacing a part, the owner reads
//! `done` = W; after the new mapping is in place it fills the part with a
//! canary and records W for it. A WRITE stamped <= W ended before the unmap
//! began, so no byte of it may be found in the new mapping; neither may
//! anything but the canary or a well-formed stamp. After the run the owner
//! reads every part: each offending word is a violation. WRITEs overwrite
//! the region hundreds of times a second, so the owner also reads each part
//! right after replacing it (before the next replacement, within ~2 ms):
//! a whole page holding one stamp <= W there is a violation too.
//!
//! (A WRITE posted before the unmap returned may still legitimately land in
//! the new mapping: it may have reached the device after the unmap. Which
//! accesses began before the unmap returned is not observable from outside
//! the device; what is observable, and checked, is that nothing the device
//! did before the unmap survives into the new memory — not a replayed,
//! delayed or acknowledged-before-placed WRITE.)
//!
//! The second check, for the holes: both programs read one clock
//! (`CLOCK_MONOTONIC`). The owner records each hole, from after `munmap`
//! returned to before `mmap` put memory back; the writer logs each
//! successful WRITE's page with the time before it was posted and the time
//! its completion was polled. A WRITE posted after a hole began and
//! completed before it ended was executed while nothing was mapped there:
//! it must have failed, and a success is a violation.
//!
//! The owner's changes cycle through four kinds: `mmap(MAP_FIXED)` over a
//! part, a hole (`munmap`, pause, `mmap`), a discard, and a read-only
//! window.
//!
//! Discards: `madvise(MADV_DONTNEED)` drops the part's pages; private
//! anonymous memory then reads as zeros. It is a replacement like the
//! others (watermark W read right before it, canary after, the same final
//! and early checks), plus one more: read right after the `madvise`
//! returned, every word must be zero or a stamp > W — a WRITE executed
//! after the discard, which the device must place in the fresh zero page
//! (it faults it in: `landed_after_discard` counts such pages). Anything
//! else (a stamp <= W, the canary) is old memory surviving the discard:
//! `discard_not_zero`.
//!
//! Read-only windows: `mprotect(PROT_READ)`, 1–3 ms, then read-write
//! again. No userfaultfd event reports `mprotect`, so the device learns of
//! it only when its guarded copy faults: a WRITE executed in the window
//! must fail (`REM_ACCESS_ERR`), one executed before or after lands. What
//! is observable: (1) nothing changes in the part during the window — the
//! owner reads it right after the first `mprotect` returned and again
//! before the second (`written_while_read_only` counts changed words);
//! (2) a WRITE posted after the window began and completed before it ended
//! was executed inside it, so its success is a violation
//! (`silent_while_read_only`; `overlapping_read_only` counts successes that
//! merely overlap, which may have run before or after); (3) access errors
//! do come from the windows: the writer logs its failures too, and
//! `access_errors_read_only` counts those overlapping a window of their
//! part (and no hole). The memory is not replaced: its watermark stays.
//!
//! `--teeth` simulates a device breaking every check: the owner copies each
//! part's old contents into its new mapping and back over a discarded part,
//! its "holes" leave the memory mapped, and its read-only windows leave it
//! writable; the checks must then report each kind of violation (the test
//! asserts it).
//!
//! Usage: `odp_race owner SHM [--seconds S] [--teeth] [--listen IP]`
//! (prints `PORT n`), `odp_race writer SHM HOST:PORT`. The owner prints one
//! summary line `odp_race: writes_ok=.. access_errors=.. reconnects=..
//! remaps=.. landed_after_remap=.. discards=.. protects=.. violations=..`
//! and exits 0 iff violations=0 (with `--teeth`: iff violations > 0).

use e2e_tests::oob::{hex, unhex, Oob};
use e2e_tests::raw::{Access, Endpoint, Mapping, Sge, SharedWords, Verbs, Wc, WcStatus};
use std::io;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const PAGES: usize = 64;
const REGION: usize = PAGES * PAGE;
/// Parts replaced at once: 4 pages.
const PART: usize = 4 * PAGE;
const DEPTH: usize = 8;
const MAGIC: u64 = 0x5eed << 48;
const CANARY: u64 = 0xcaca_caca_caca_caca;
const LIMIT: Duration = Duration::from_secs(20);
/// In the writer's log: the WRITE failed with `REM_ACCESS_ERR` (a bit of
/// the page field).
const FAILED: u64 = 1 << 63;

/// Shared words: the writer's `done` stamp, the owner's stop flag, and the
/// writer's counters (writes ok, access errors, other errors, reconnects).
const DONE: usize = 0;
const STOP: usize = 1;
const OK: usize = 2;
const ACCESS_ERR: usize = 3;
const OTHER_ERR: usize = 4;
const RECONNECTS: usize = 5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn main() {
    e2e_tests::report_library();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let r = match (argv.first().map(String::as_str), argv.get(1)) {
        (Some("owner"), Some(shm)) => {
            let mut seconds = 3.0;
            let mut teeth = false;
            let mut listen = "127.0.0.1".to_string();
            let mut i = 2;
            while i < argv.len() {
                match argv[i].as_str() {
                    "--seconds" => {
                        i += 1;
                        seconds = argv.get(i).and_then(|s| s.parse().ok()).unwrap_or(-1.0);
                    }
                    "--teeth" => teeth = true,
                    "--listen" => {
                        i += 1;
                        match argv.get(i) {
                            Some(ip) => listen = ip.clone(),
                            None => seconds = -1.0,
                        }
                    }
                    _ => seconds = -1.0,
                }
                i += 1;
            }
            if !(0.1..=600.0).contains(&seconds) {
                eprintln!("odp_race: owner SHM [--seconds S (0.1..600)] [--teeth] [--listen IP]");
                std::process::exit(2);
            }
            owner(shm, Duration::from_secs_f64(seconds), teeth, &listen)
        }
        (Some("writer"), Some(shm)) if argv.len() == 3 => writer(shm, &argv[2]),
        _ => {
            eprintln!("usage: odp_race owner SHM [--seconds S] [--teeth] [--listen IP] | writer SHM HOST:PORT");
            std::process::exit(2);
        }
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("odp_race: {e}");
            std::process::exit(1);
        }
    }
}

fn parse_ep(f: &[String]) -> io::Result<Endpoint> {
    let bad = || io::Error::other(format!("bad endpoint {f:?}"));
    Ok(Endpoint {
        qpn: f.first().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        gid: f.get(1).and_then(|s| unhex::<16>(s)).ok_or_else(bad)?,
    })
}

fn ep_fields(tag: &str, e: Endpoint) -> Vec<String> {
    vec![tag.into(), e.qpn.to_string(), hex(&e.gid)]
}

fn owner(shm: &str, run_for: Duration, teeth: bool, listen: &str) -> io::Result<bool> {
    let shared = SharedWords::open(std::path::Path::new(shm), true)?;
    let v = Verbs::open(16)?;
    e2e_tests::report_device(&v.device);
    let region = Mapping::new(REGION)?;
    region.fill_u64(0, REGION, CANARY);
    let access = Access::IBV_ACCESS_LOCAL_WRITE
        | Access::IBV_ACCESS_REMOTE_WRITE
        | Access::IBV_ACCESS_ON_DEMAND;
    let mr = v.reg_mr(region.ptr(), REGION, access)?;
    let mut oob = Oob::serve(&format!("{listen}:0"))?;
    // The QPs: one per (re)connection, served by a thread while this one
    // remaps; the writer asks for a fresh pair after an access error.
    let first = parse_ep(&oob.expect("HELLO")?)?;
    let mut qp = v.rc_qp(DEPTH as u32)?;
    qp.connect(first)?;
    let mut f = ep_fields("REGION", qp.endpoint()?);
    f.extend([
        region.addr().to_string(),
        REGION.to_string(),
        mr.rkey().to_string(),
    ]);
    oob.send(&f)?;
    // Per part: the `done` stamp read right before its latest replacement.
    let mut watermark: [Option<u64>; REGION / PART] = [None; REGION / PART];
    let mut remaps = 0u64;
    // Per part: its holes, (start, end) in `monotonic_ns`.
    let mut holes: Vec<Vec<(u64, u64)>> = vec![vec![]; REGION / PART];
    // Per part: its read-only windows, (start, end) in `monotonic_ns`.
    let mut read_only: Vec<Vec<(u64, u64)>> = vec![vec![]; REGION / PART];
    // Per part: whether its latest replacement was a discard.
    let mut discarded = [false; REGION / PART];
    let mut t = Tally::default();
    let (result, writer_report, early) = std::thread::scope(|s| {
        let service = s.spawn(|| -> io::Result<Vec<String>> {
            let mut qps = vec![qp];
            loop {
                let f = oob.recv()?;
                match f.first().map(String::as_str) {
                    Some("RECONNECT") => {
                        let mut q = v.rc_qp(DEPTH as u32)?;
                        q.connect(parse_ep(&f[1..])?)?;
                        oob.send(&ep_fields("QP", q.endpoint()?))?;
                        qps.push(q);
                    }
                    Some("STOPPED") => return Ok(f),
                    _ => return Err(io::Error::other(format!("unexpected {f:?}"))),
                }
            }
        });
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
        let started = Instant::now();
        let mut old = vec![0u64; PART / 8];
        // Pages found stale while the run goes on (see `stale_pages`).
        let mut early = 0u64;
        let mut last: Option<(usize, u64)> = None;
        let result = (|| -> io::Result<()> {
            let mut ops = 0u64;
            while started.elapsed() < run_for {
                if let Some((p, w)) = last.take() {
                    early += stale_pages(&region, p, w);
                }
                let part = rng.below(REGION / PART);
                let off = part * PART;
                if discarded[part] {
                    t.landed_after_discard += landed_pages(&region, part, watermark[part]);
                }
                ops += 1;
                if ops % 4 == 3 {
                    // Read-only for a while, then writable again: no
                    // replacement (the memory and its watermark stay).
                    read_only[part].push(protect_window(&region, part, &mut rng, teeth, &mut t)?);
                    t.protects += 1;
                    std::thread::sleep(Duration::from_micros(rng.below(2000) as u64));
                    continue;
                }
                if teeth {
                    for (i, w) in old.iter_mut().enumerate() {
                        *w = region.read_u64(off + 8 * i);
                    }
                }
                let w = shared.word(DONE).load(Acquire);
                discarded[part] = ops % 4 == 2;
                if discarded[part] {
                    region.discard(off, PART)?;
                    if teeth {
                        // A device whose earlier WRITEs survive the discard.
                        for (i, x) in old.iter().enumerate() {
                            region.write_u64(off + 8 * i, *x);
                        }
                    }
                    t.discard_not_zero += not_zero(&region, part, w);
                    t.discards += 1;
                } else {
                    // Every other replacement leaves a hole for a while
                    // (WRITEs then find nothing mapped: access errors).
                    let hole = if ops % 4 == 0 {
                        Duration::ZERO
                    } else {
                        Duration::from_micros(200 + rng.below(800) as u64)
                    };
                    if let Some(h) = region.remap(off, PART, hole, teeth)? {
                        holes[part].push(h);
                    }
                    remaps += 1;
                }
                region.fill_u64(off, PART, CANARY);
                if teeth {
                    for (i, x) in old.iter().enumerate() {
                        region.write_u64(off + 8 * i, *x);
                    }
                }
                watermark[part] = Some(w);
                last = Some((part, w));
                std::thread::sleep(Duration::from_micros(rng.below(2000) as u64));
            }
            Ok(())
        })();
        shared.word(STOP).store(1, Release);
        (result, service.join().expect("service thread"), early)
    });
    result?;
    let report = writer_report?;
    // The writer has stopped and every WRITE of it has completed: read it all.
    // Examples printed, per kind of violation (stale, read-only, hole): a
    // shared cap let the first kind found crowd the others out.
    let (mut stale, mut landed, mut shown) = (0u64, 0u64, [0; 3]);
    for (part, w) in watermark.iter().enumerate() {
        for o in (part * PART..(part + 1) * PART).step_by(8) {
            let x = region.read_u64(o);
            let bad = if x == CANARY {
                None
            } else if x & (0xffff << 48) != MAGIC || x & !(0xffff << 48) == 0 {
                Some("neither canary nor a stamp")
            } else if w.is_some_and(|w| x & !(0xffff << 48) <= w) {
                Some("a WRITE completed before the remap began")
            } else {
                if w.is_some() && o % PAGE == 0 {
                    if discarded[part] {
                        t.landed_after_discard += 1;
                    } else {
                        landed += 1;
                    }
                }
                None
            };
            if let Some(why) = bad {
                stale += 1;
                if shown[0] < 5 {
                    shown[0] += 1;
                    eprintln!(
                        "violation: offset {o:#x} (part {part}, watermark {w:?}) holds {x:#018x}: {why}"
                    );
                }
            }
        }
    }
    // The writer's log of successes against the holes.
    let log = std::fs::read(format!("{shm}.log"))?;
    let _ = std::fs::remove_file(format!("{shm}.log"));
    let (mut in_hole, mut checked) = (0u64, 0u64);
    for r in log.chunks_exact(24) {
        let w = |i: usize| u64::from_le_bytes(r[8 * i..8 * i + 8].try_into().unwrap());
        let (page, posted, done) = ((w(0) & !FAILED) as usize, w(1), w(2));
        let part = page * PAGE / PART;
        if w(0) & FAILED != 0 {
            // An access error: count those a read-only window explains (and
            // no hole could have).
            let overlaps = |v: &Vec<(u64, u64)>| v.iter().any(|&(s, e)| posted < e && done > s);
            if overlaps(&read_only[part]) && !overlaps(&holes[part]) {
                t.access_errors_read_only += 1;
            }
            continue;
        }
        for &(start, end) in &read_only[part] {
            if posted >= start && done <= end {
                t.silent_while_read_only += 1;
                if shown[1] < 5 {
                    shown[1] += 1;
                    eprintln!(
                        "violation: a WRITE to page {page} succeeded while it was read-only (posted {} ns after mprotect(PROT_READ) returned, completed {} ns before write permission came back)",
                        posted - start,
                        end - done
                    );
                }
            } else if posted < end && done > start {
                t.overlapping_read_only += 1;
            }
        }
        for &(start, end) in &holes[page * PAGE / PART] {
            if posted >= start && done <= end {
                in_hole += 1;
                if shown[2] < 5 {
                    shown[2] += 1;
                    eprintln!(
                        "violation: a WRITE to page {page} succeeded inside a hole (posted {} ns after it began, completed {} ns before it ended)",
                        posted - start,
                        end - done
                    );
                }
            } else if posted < end && done > start {
                checked += 1;
            }
        }
    }
    let violations = stale
        + early
        + in_hole
        + t.discard_not_zero
        + t.written_while_read_only
        + t.silent_while_read_only;
    let n = |i: usize| shared.word(i).load(Acquire);
    println!(
        "odp_race: writes_ok={} access_errors={} other_errors={} reconnects={} remaps={remaps} holes={} landed_after_remap={landed} overlapping_a_hole={checked} stale={stale} stale_pages_early={early} silent_in_hole={in_hole} discards={} landed_after_discard={} discard_not_zero={} protects={} access_errors_read_only={} overlapping_read_only={} written_while_read_only={} silent_while_read_only={} violations={violations}{}",
        n(OK),
        n(ACCESS_ERR),
        n(OTHER_ERR),
        n(RECONNECTS),
        holes.iter().map(Vec::len).sum::<usize>(),
        t.discards,
        t.landed_after_discard,
        t.discard_not_zero,
        t.protects,
        t.access_errors_read_only,
        t.overlapping_read_only,
        t.written_while_read_only,
        t.silent_while_read_only,
        if teeth {
            " (--teeth: old contents copied into new mappings and discarded parts, holes left mapped, read-only windows left writable)"
        } else {
            ""
        }
    );
    drop(report);
    drop(mr);
    Ok(if teeth {
        violations > 0
    } else {
        violations == 0 && n(OTHER_ERR) == 0
    })
}

/// The owner's counts for the discards and read-only windows.
#[derive(Default)]
struct Tally {
    discards: u64,
    /// Pages of discarded parts where a WRITE later landed (the device
    /// faulted the fresh zero page in and wrote it).
    landed_after_discard: u64,
    /// Words found right after a discard that are neither zero nor a
    /// stamp newer than `done` read before it: old data survived.
    discard_not_zero: u64,
    protects: u64,
    /// Access errors of WRITEs to a part that overlapped one of its
    /// read-only windows (and none of its holes).
    access_errors_read_only: u64,
    /// Successful WRITEs whose post..completion overlapped a window.
    overlapping_read_only: u64,
    /// Words that changed while their page was read-only.
    written_while_read_only: u64,
    /// Successful WRITEs posted and completed inside a read-only window.
    silent_while_read_only: u64,
}

/// Right after `madvise(MADV_DONTNEED)` of part `part` (when `done` was
/// `w`): each word must read zero or hold a stamp > `w` (a WRITE executed
/// after the discard, into the fresh zero page). Returns the other words.
fn not_zero(region: &Mapping, part: usize, w: u64) -> u64 {
    let mut n = 0;
    for o in (part * PART..(part + 1) * PART).step_by(8) {
        let x = region.read_u64(o);
        let newer = x & (0xffff << 48) == MAGIC && x & !(0xffff << 48) > w;
        if x != 0 && !newer {
            if n == 0 {
                eprintln!(
                    "violation: offset {o:#x} holds {x:#018x} right after its part was discarded (done was {w})"
                );
            }
            n += 1;
        }
    }
    n
}

/// Part `part`'s pages whose first word holds a stamp newer than the
/// part's watermark `w`: WRITEs that landed since its latest replacement.
fn landed_pages(region: &Mapping, part: usize, w: Option<u64>) -> u64 {
    let Some(w) = w else { return 0 };
    (part * PART..(part + 1) * PART)
        .step_by(PAGE)
        .filter(|&o| {
            let x = region.read_u64(o);
            x & (0xffff << 48) == MAGIC && x & !(0xffff << 48) > w
        })
        .count() as u64
}

/// Make part `part` read-only for 1–3 ms, then writable again (`teeth`:
/// pretend, leaving it writable). Nothing may change in it meanwhile: the
/// owner reads it right after `mprotect(PROT_READ)` returned and again
/// before restoring write permission, and counts every changed word. (No
/// userfaultfd event tells the device about `mprotect`: its copy must fault
/// on the read-only page and fail the WRITE.) Returns the window in
/// `monotonic_ns`: from after the first `mprotect` returned to before the
/// second.
fn protect_window(
    region: &Mapping,
    part: usize,
    rng: &mut Rng,
    teeth: bool,
    t: &mut Tally,
) -> io::Result<(u64, u64)> {
    let off = part * PART;
    if !teeth {
        region.protect(off, PART, false)?;
    }
    let start = e2e_tests::raw::monotonic_ns();
    let before: Vec<u64> = (off..off + PART)
        .step_by(8)
        .map(|o| region.read_u64(o))
        .collect();
    std::thread::sleep(Duration::from_micros(1000 + rng.below(2000) as u64));
    let mut changed = 0;
    for (i, b) in before.iter().enumerate() {
        let x = region.read_u64(off + 8 * i);
        if x != *b {
            if changed == 0 {
                eprintln!(
                    "violation: offset {:#x} changed from {b:#018x} to {x:#018x} while read-only",
                    off + 8 * i
                );
            }
            changed += 1;
        }
    }
    t.written_while_read_only += changed;
    let end = e2e_tests::raw::monotonic_ns();
    if !teeth {
        region.protect(off, PART, true)?;
    }
    Ok((start, end))
}

/// Part `part`'s pages that, shortly after the part was replaced (when
/// `done` was `w`), each hold one stamp <= `w` in every word: a whole WRITE
/// that ended before the replacement began, found in the new memory. Only
/// complete pages count: WRITEs go on meanwhile, and a page read while the
/// device copies into it mixes two values (never all words equal), so this
/// cannot flag a legitimate WRITE; the final scan is word by word.
fn stale_pages(region: &Mapping, part: usize, w: u64) -> u64 {
    let mut n = 0;
    for page in (part * PART..(part + 1) * PART).step_by(PAGE) {
        let x = region.read_u64(page);
        let stamp = x & !(0xffff << 48);
        if x & (0xffff << 48) == MAGIC
            && stamp != 0
            && stamp <= w
            && (page..page + PAGE)
                .step_by(8)
                .all(|o| region.read_u64(o) == x)
        {
            if n == 0 {
                eprintln!("violation: page at {page:#x} holds stamp {stamp} (done was {w} when it was replaced)");
            }
            n += 1;
        }
    }
    n
}

fn writer(shm: &str, addr: &str) -> io::Result<bool> {
    let shared = SharedWords::open(std::path::Path::new(shm), false)?;
    let v = Verbs::open(4 * DEPTH as i32)?;
    e2e_tests::report_device(&v.device);
    let src = Mapping::new(DEPTH * PAGE)?;
    let smr = v.reg_mr(src.ptr(), DEPTH * PAGE, Access::IBV_ACCESS_LOCAL_WRITE)?;
    let mut oob = Oob::connect(addr)?;
    let mut qp = v.rc_qp(DEPTH as u32)?;
    oob.send(&ep_fields("HELLO", qp.endpoint()?))?;
    let f = oob.expect("REGION")?;
    let remote = parse_ep(&f)?;
    let bad = || io::Error::other("bad REGION line");
    let raddr: u64 = f.get(2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rlen: usize = f.get(3).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rkey: u32 = f.get(4).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    qp.connect(remote)?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ std::process::id() as u64);
    // Per slot: the page and the time before posting; per success: the page,
    // that time and the time its completion was polled (24 bytes, LE).
    let mut posted = [(0u64, 0u64); DEPTH];
    let mut log: Vec<u8> = Vec::new();
    let (mut next, mut outstanding) = (1u64, 0usize);
    let mut wc = [Wc::default(); DEPTH];
    let t = Instant::now();
    let bump = |i: usize| shared.word(i).fetch_add(1, Release);
    loop {
        let stopping = shared.word(STOP).load(Acquire) != 0;
        if stopping && outstanding == 0 {
            break;
        }
        if !stopping && outstanding < DEPTH {
            let slot = (next as usize % DEPTH) * PAGE;
            src.fill_u64(slot, PAGE, MAGIC | next);
            let page = rng.below(rlen / PAGE);
            posted[next as usize % DEPTH] = (page as u64, e2e_tests::raw::monotonic_ns());
            let sge = Sge {
                addr: src.addr() + slot as u64,
                len: PAGE as u32,
                lkey: smr.lkey(),
            };
            qp.post_write(next, sge, raddr + (page * PAGE) as u64, rkey)?;
            next += 1;
            outstanding += 1;
        }
        let mut failed = false;
        let n = v.poll(&mut wc)?;
        for c in &wc[..n] {
            outstanding -= 1;
            match c.error() {
                None => {
                    let (page, t0) = posted[c.wr_id() as usize % DEPTH];
                    for x in [page, t0, e2e_tests::raw::monotonic_ns()] {
                        log.extend_from_slice(&x.to_le_bytes());
                    }
                    shared.word(DONE).store(c.wr_id(), Release);
                    bump(OK);
                }
                Some((WcStatus::IBV_WC_REM_ACCESS_ERR, _)) => {
                    let (page, t0) = posted[c.wr_id() as usize % DEPTH];
                    for x in [page | FAILED, t0, e2e_tests::raw::monotonic_ns()] {
                        log.extend_from_slice(&x.to_le_bytes());
                    }
                    bump(ACCESS_ERR);
                    failed = true;
                }
                Some((WcStatus::IBV_WC_WR_FLUSH_ERR, _)) => failed = true,
                Some((st, _)) => {
                    eprintln!(
                        "odp_race writer: WRITE {} completed with status {st}",
                        c.wr_id()
                    );
                    bump(OTHER_ERR);
                    failed = true;
                }
            }
        }
        if failed {
            // The QP is in error: drain its flushed requests, then a fresh pair.
            let t0 = Instant::now();
            while outstanding > 0 {
                let n = v.poll(&mut wc)?;
                outstanding -= n;
                if t0.elapsed() > LIMIT {
                    return Err(io::Error::other("flushed requests never completed"));
                }
            }
            drop(qp);
            qp = v.rc_qp(DEPTH as u32)?;
            oob.send(&ep_fields("RECONNECT", qp.endpoint()?))?;
            qp.connect(parse_ep(&oob.expect("QP")?)?)?;
            bump(RECONNECTS);
        }
        if t.elapsed() > Duration::from_secs(700) {
            return Err(io::Error::other("writer ran far too long (owner gone?)"));
        }
    }
    std::fs::write(format!("{shm}.log"), &log)?;
    oob.send(&["STOPPED".into(), next.to_string()])?;
    Ok(true)
}
