//! `softrdma perf`: perftest's benchmarks on the soft device.
//!
//! Both sides run the same code: `side()` with a role. The client is the
//! requester (it issues the operations of bw tests and of read/atomic lat);
//! the server is the target (and the echoing peer of write_lat/send_lat).
//! Embedded mode is the two roles as two threads of this process, each with
//! its own `Device::open()`, talking over a loopback TCP connection exactly
//! as two processes do.
//!
//! Per QP each side has two buffers, `src` and `dst`, each cut into `k`
//! slots; iteration `i` uses slot `i % k` (perftest's cycle buffer), so a
//! slot is rewritten only after the operation that used it completed. With
//! `--verify` every source slot gets a pattern seeded by (QP, iteration)
//! before it is posted, and at the end of each size every destination byte
//! the last operation on each slot wrote is checked (atomics: the exact
//! final counter, and the values fetched).

use crate::args::{conn_name, AtomicKind, Mode, OdpMode, PerfArgs, Test, Verb};
use crate::ctrl::{kv, kv_u64, Ctrl};
use crate::report::{self, BwRow, Dest, HeaderInfo, JsonCtx};
use crate::{pattern, runtime, usage, CliError, CliResult};
use soft_rdma::verbs::*;
use std::io::Write;
use std::time::{Duration, Instant};

const QKEY: u32 = 0x1111_1111;
const OUTSTANDING_READS: u8 = 16;
const UD_GRH: usize = 40;
/// No completion (or peer reply) for this long: the run has failed.
const STALL: Duration = Duration::from_secs(10);

// Seeds ("what") of the patterns.
const W_WRITE: u64 = 1;
const W_SEND: u64 = 2;
const W_READSRC: u64 = 3;
const W_LAT_CLIENT: u64 = 4;
const W_LAT_SERVER: u64 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Client,
    Server,
}

/// An anonymous mapping (page aligned; untouched until used, so ODP faults it in).
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    /// `thp`: advise transparent huge pages (`--thp`), so the kernel hands
    /// out 2 MiB at a fault where it can instead of 4 KiB.
    fn new(len: usize, thp: bool) -> CliResult<Region> {
        let len = len.max(4096).next_multiple_of(4096);
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return runtime(format!(
                "cannot allocate {len} bytes of buffer: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Owned before the advice, so that a refusal unmaps it on the way out.
        let region = Region { ptr: p.cast(), len };
        // SAFETY: advice on our own fresh mapping; it changes no contents.
        if thp && unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } != 0 {
            return runtime(format!(
                "--thp: the kernel refused MADV_HUGEPAGE: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(region)
    }
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.len);
        // SAFETY: inside the mapping; the device may write concurrently only
        // to areas not being read (checked after completion / quiescence).
        unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
    }
    #[allow(clippy::mut_from_ref)]
    fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        assert!(off + len <= self.len);
        // SAFETY: inside the mapping; only slots no posted operation uses.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
    }
    fn volatile_byte(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: inside the mapping; the device writes it concurrently.
        let v = unsafe { std::ptr::read_volatile(self.ptr.add(off)) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        v
    }
    fn volatile_u64(&self, off: usize) -> u64 {
        assert!(off + 8 <= self.len && off % 8 == 0);
        // SAFETY: aligned, inside the mapping.
        let v = unsafe { std::ptr::read_volatile(self.ptr.add(off).cast::<u64>()) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        v
    }
    fn write_u64(&self, off: usize, v: u64) {
        // SAFETY: aligned, inside the mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), v) };
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our mapping; the MRs over it were dropped first (field order).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Buffer geometry, the same on both sides (derived from the shared args).
#[derive(Clone, Copy)]
struct Layout {
    buf_len: usize,
    depth_cap: usize,
    ud: bool,
    /// `--buffer`: every slot of the buffer is used in turn.
    walk: bool,
}

impl Layout {
    fn new(a: &PerfArgs, max_size: u64) -> Layout {
        let ud = a.conn == QpType::Ud;
        let depth_cap = if a.test.lat {
            16
        } else if a.test.verb == Verb::Send {
            a.tx_depth.max(a.rx_depth) as usize
        } else {
            a.tx_depth as usize
        };
        let mut l = Layout {
            buf_len: 0,
            depth_cap,
            ud,
            walk: a.buffer.is_some(),
        };
        let s = l.slot(max_size);
        l.buf_len = match a.buffer {
            Some(b) => (b as usize).max(s),
            None => (depth_cap * s).min((16 << 20).max(2 * s)),
        }
        .next_multiple_of(4096);
        l
    }
    fn slot(&self, size: u64) -> usize {
        (size as usize + if self.ud { UD_GRH } else { 0 })
            .max(8)
            .next_multiple_of(64)
    }
    /// Slots for `size`.
    fn k(&self, size: u64) -> usize {
        let k = self.buf_len / self.slot(size);
        if self.walk {
            k.max(1)
        } else {
            k.min(self.depth_cap).max(1)
        }
    }
}

/// The `i`-th iteration's remote read slot (varies per iteration).
fn read_slot(i: u64, k: usize) -> usize {
    ((i + i / k as u64) % k as u64) as usize
}

/// The last iteration `< iters` that used slot `s` of `k`.
fn last_in_slot(s: usize, k: usize, iters: u64) -> Option<u64> {
    let s = s as u64;
    (s < iters).then(|| s + (iters - 1 - s) / k as u64 * k as u64)
}

fn fa_add(q: usize, i: u64) -> u64 {
    (i % 7) + 1 + q as u64
}

fn cas_next(q: usize, v: u64) -> u64 {
    v.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407 + 2 * q as u64)
}

/// The counter's value before operation `i` (initial value: its seed).
fn atomic_before(kind: AtomicKind, q: usize, i: u64) -> u64 {
    let init = atomic_init(q);
    match kind {
        AtomicKind::FetchAndAdd => (0..i).fold(init, |v, j| v.wrapping_add(fa_add(q, j))),
        AtomicKind::CmpAndSwap => (0..i).fold(init, |v, _| cas_next(q, v)),
    }
}

fn atomic_init(q: usize) -> u64 {
    0x1000 * (q as u64 + 1)
}

fn lat_marker(i: u64) -> u8 {
    (i % 255) as u8 + 1
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
    h.finish() as u32
}

/// One side: device, objects, buffers.
struct Side {
    // Drop order: QPs and MRs before the buffers and the device.
    qps: Vec<Qp>,
    mrs: Vec<Mr>,
    /// Per QP: (lkey/rkey of src, lkey/rkey of dst).
    keys: Vec<(u32, u32)>,
    src: Vec<Region>,
    dst: Vec<Region>,
    psns: Vec<u32>,
    scq: Cq,
    rcq: Cq,
    pd: Pd,
    dev: Device,
}

fn all_access(odp: bool) -> Access {
    let a =
        Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC;
    if odp {
        a | Access::ON_DEMAND
    } else {
        a
    }
}

fn verr(what: &str, e: Errno) -> CliError {
    CliError::Runtime(format!("{what}: {e}"))
}

impl Side {
    fn new(a: &PerfArgs, role: Role, lay: &Layout) -> CliResult<Side> {
        let dev = Device::open().or_else(|e| runtime(format!("cannot open the device: {e}")))?;
        let pd = dev.alloc_pd();
        let sq_wr = (a.tx_depth as usize).max(lay.depth_cap).max(16) as u32 + 1;
        let rq_wr = (a.rx_depth as usize).max(lay.depth_cap).max(16) as u32 + 1;
        let scq = Cq::new(((sq_wr as usize) * a.qps as usize + 16).min(65536), None)
            .map_err(|e| verr("create CQ", e))?;
        let rcq = Cq::new(((rq_wr as usize) * a.qps as usize + 16).min(65536), None)
            .map_err(|e| verr("create CQ", e))?;
        let (need_src, need_dst) = match (a.test.verb, a.test.lat, role) {
            (Verb::Write | Verb::Send, true, _) => (true, true),
            (Verb::Write | Verb::Send, false, Role::Client) => (true, false),
            (Verb::Write | Verb::Send, false, Role::Server) => (false, true),
            (Verb::Read, _, Role::Client) => (false, true),
            (Verb::Read, _, Role::Server) => (true, false),
            (Verb::Atomic, _, _) => (false, true),
        };
        let mut src = Vec::new();
        let mut dst = Vec::new();
        for _ in 0..a.qps {
            src.push(Region::new(
                if need_src { lay.buf_len } else { 4096 },
                a.thp,
            )?);
            dst.push(Region::new(
                if need_dst { lay.buf_len } else { 4096 },
                a.thp,
            )?);
        }
        let mut mrs = Vec::new();
        let mut keys = Vec::new();
        match a.odp {
            OdpMode::Implicit => {
                let mr = pd
                    .reg_mr(0, u64::MAX, all_access(true))
                    .map_err(|e| verr("register the implicit ODP MR", e))?;
                keys = vec![(mr.lkey(), mr.lkey()); a.qps as usize];
                mrs.push(mr);
            }
            m => {
                let odp = m == OdpMode::Explicit;
                for q in 0..a.qps as usize {
                    let s = pd
                        .reg_mr(src[q].addr(), src[q].len as u64, all_access(odp))
                        .map_err(|e| verr("register MR", e))?;
                    let d = pd
                        .reg_mr(dst[q].addr(), dst[q].len as u64, all_access(odp))
                        .map_err(|e| verr("register MR", e))?;
                    keys.push((s.lkey(), d.lkey()));
                    mrs.push(s);
                    mrs.push(d);
                }
            }
        }
        let mut qps = Vec::new();
        let mut psns = Vec::new();
        for _ in 0..a.qps {
            let cap = QpCap {
                max_send_wr: sq_wr,
                max_recv_wr: rq_wr,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            };
            let qp = pd
                .create_qp(QpInitAttr {
                    qp_type: a.conn,
                    send_cq: scq.clone(),
                    recv_cq: rcq.clone(),
                    cap,
                    sq_sig_all: false,
                    srq: None,
                })
                .map_err(|e| verr("create QP", e))?;
            let init = if a.conn == QpType::Ud {
                QpAttr {
                    state: Some(QpState::Init),
                    qkey: Some(QKEY),
                    port_num: Some(1),
                    pkey_index: Some(0),
                    ..Default::default()
                }
            } else {
                QpAttr {
                    state: Some(QpState::Init),
                    access: Some(all_access(false)),
                    port_num: Some(1),
                    pkey_index: Some(0),
                    ..Default::default()
                }
            };
            qp.modify(&init).map_err(|e| verr("modify QP to INIT", e))?;
            qps.push(qp);
            psns.push(random_u32() & 0x00ff_ffff);
        }
        Ok(Side {
            qps,
            mrs,
            keys,
            src,
            dst,
            psns,
            scq,
            rcq,
            pd,
            dev,
        })
    }

    fn dest(&self, q: usize, verb: Verb) -> Dest {
        let (rkey, vaddr) = if verb == Verb::Read {
            (self.keys[q].0, self.src[q].addr())
        } else {
            (self.keys[q].1, self.dst[q].addr())
        };
        Dest {
            qpn: self.qps[q].qp_num(),
            psn: self.psns[q],
            rkey,
            vaddr,
            gid: self.dev.gid(1).expect("gid 1"),
        }
    }

    fn connect(&self, a: &PerfArgs, mtu: Mtu, remote: &[Remote]) -> CliResult<()> {
        for (q, qp) in self.qps.iter().enumerate() {
            let r = &remote[q];
            let rtr = match a.conn {
                // Workaround: the library checks UD sends against the QP's path
                // MTU (default 1024) instead of the port's active MTU.
                QpType::Ud => QpAttr {
                    state: Some(QpState::Rtr),
                    path_mtu: Some(mtu),
                    ..Default::default()
                },
                QpType::Uc => QpAttr {
                    state: Some(QpState::Rtr),
                    path_mtu: Some(mtu),
                    dest_qp_num: Some(r.qpn),
                    rq_psn: Some(r.psn),
                    dgid: Some(r.gid),
                    ..Default::default()
                },
                QpType::Rc => QpAttr {
                    state: Some(QpState::Rtr),
                    path_mtu: Some(mtu),
                    dest_qp_num: Some(r.qpn),
                    rq_psn: Some(r.psn),
                    dgid: Some(r.gid),
                    max_dest_rd_atomic: Some(OUTSTANDING_READS),
                    min_rnr_timer: Some(1),
                    ..Default::default()
                },
            };
            qp.modify(&rtr).map_err(|e| verr("modify QP to RTR", e))?;
            let rts = match a.conn {
                QpType::Rc => QpAttr {
                    state: Some(QpState::Rts),
                    sq_psn: Some(self.psns[q]),
                    timeout: Some(14),
                    retry_cnt: Some(7),
                    rnr_retry: Some(7),
                    max_rd_atomic: Some(OUTSTANDING_READS),
                    ..Default::default()
                },
                _ => QpAttr {
                    state: Some(QpState::Rts),
                    sq_psn: Some(self.psns[q]),
                    ..Default::default()
                },
            };
            qp.modify(&rts).map_err(|e| verr("modify QP to RTS", e))?;
        }
        Ok(())
    }

    fn odp_counters(&self) -> (u64, u64) {
        self.mrs
            .iter()
            .map(|m| m.odp_counters())
            .fold((0, 0), |(f, i), c| (f + c.page_faults, i + c.invalidations))
    }
}

/// The peer's end of one QP.
#[derive(Clone, Copy, Debug)]
struct Remote {
    qpn: u32,
    psn: u32,
    gid: Gid,
    src_rkey: u32,
    src_addr: u64,
    dst_rkey: u32,
    dst_addr: u64,
}

fn gid_hex(g: Gid) -> String {
    g.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_gid(s: &str) -> CliResult<Gid> {
    if s.len() != 32 {
        return runtime(format!("protocol error: gid {s}"));
    }
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .or_else(|_| runtime(format!("protocol error: gid {s}")))?;
    }
    Ok(Gid(g))
}

fn mtu_of(v: u64) -> CliResult<Mtu> {
    crate::args::parse_mtu(v).map_or_else(|| runtime(format!("protocol error: mtu {v}")), Ok)
}

/// Stall detection: fails when nothing progressed for `STALL`.
struct Watchdog {
    last: Instant,
}

impl Watchdog {
    fn new() -> Watchdog {
        Watchdog {
            last: Instant::now(),
        }
    }
    fn progress(&mut self) {
        self.last = Instant::now();
    }
    fn check(&self, what: impl FnOnce() -> String) -> CliResult<()> {
        if self.last.elapsed() > STALL {
            return runtime(format!(
                "no progress for {} s: {} (peer gone, or packets lost)",
                STALL.as_secs(),
                what()
            ));
        }
        Ok(())
    }
}

fn wc_ok(wc: &Wc, what: &str) -> CliResult<()> {
    if wc.status != WcStatus::Success {
        return runtime(format!(
            "{what} completion with error {:?} (QP {:#06x}, iteration {})",
            wc.status,
            wc.qp_num,
            wc.wr_id & 0xffff_ffff
        ));
    }
    Ok(())
}

/// Spin politely: the device's threads need the CPU too on small machines.
fn relax(spins: &mut u32) {
    *spins += 1;
    if *spins % 64 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

pub fn run(a: &PerfArgs) -> CliResult<()> {
    match &a.mode {
        Mode::Server => {
            let l = crate::ctrl::Ctrl::listen(a.port)?;
            let banner = "************************************\n* Waiting for client to connect... *\n************************************";
            if a.json {
                eprintln!("{banner}");
            } else {
                println!("{banner}");
                let _ = std::io::stdout().flush();
            }
            let ctrl = Ctrl::accept(&l)?;
            side(a.clone(), Role::Server, ctrl, true)
        }
        Mode::Client(host) => {
            let ctrl = Ctrl::connect(host, a.port)?;
            side(a.clone(), Role::Client, ctrl, true)
        }
        Mode::Embedded => {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0))
                .or_else(|e| runtime(format!("loopback TCP: {e}")))?;
            let port = l
                .local_addr()
                .map_err(|e| CliError::Runtime(e.to_string()))?
                .port();
            let sa = a.clone();
            let server = std::thread::Builder::new()
                .name("softrdma-server".into())
                .spawn(move || -> CliResult<()> {
                    let ctrl = Ctrl::accept(&l)?;
                    side(sa, Role::Server, ctrl, false)
                })
                .map_err(|e| CliError::Runtime(format!("spawn: {e}")))?;
            let client = Ctrl::connect("127.0.0.1", port)
                .and_then(|c| side(a.clone(), Role::Client, c, true));
            let server = server
                .join()
                .unwrap_or_else(|_| runtime("the server thread panicked"));
            match (client, server) {
                (Ok(()), Ok(())) => Ok(()),
                // The side that failed first says why; the other saw the connection drop.
                (Err(c), Ok(())) => Err(c),
                (Ok(()), Err(s)) => Err(s),
                (Err(c), Err(s)) => {
                    if s.to_string().contains("closed the connection") {
                        Err(c)
                    } else {
                        Err(s)
                    }
                }
            }
        }
    }
}

/// What a side negotiated: the shared parameters.
struct Plan {
    a: PerfArgs,
    mtu: Mtu,
    sizes: Vec<u64>,
    lay: Layout,
}

fn hello_line(a: &PerfArgs, active: Mtu) -> String {
    format!(
        "HELLO test={} size={} iters={} all={} qps={} conn={} mtu={} atomic={} txd={} rxd={} cqmod={} verify={} buffer={} duration={} active={}",
        a.test.name(),
        a.size.unwrap_or(0),
        a.iters,
        u8::from(a.all),
        a.qps,
        conn_name(a.conn),
        a.mtu.map_or(0, |m| m.bytes()),
        a.atomic.name(),
        a.tx_depth,
        a.rx_depth,
        a.cq_mod,
        u8::from(a.verify),
        a.buffer.unwrap_or(0),
        a.duration.unwrap_or(0),
        active.bytes()
    )
}

/// Server: adopt the client's parameters (the test must match), keep our
/// memory mode and output options.
fn adopt(mine: &PerfArgs, f: &[String]) -> std::result::Result<(PerfArgs, u64), String> {
    let perr = |e: CliError| e.to_string();
    let test = Test::parse(kv(f, "test").map_err(perr)?).ok_or("bad test")?;
    if test != mine.test {
        return Err(format!(
            "the client runs {} but this server runs {}; start both with the same TEST",
            test.name(),
            mine.test.name()
        ));
    }
    let mut a = mine.clone();
    let size = kv_u64(f, "size").map_err(perr)?;
    a.size = (size != 0).then_some(size);
    a.iters = kv_u64(f, "iters").map_err(perr)?;
    a.all = kv_u64(f, "all").map_err(perr)? == 1;
    a.qps = kv_u64(f, "qps").map_err(perr)? as u32;
    a.conn = crate::args::parse_conn(kv(f, "conn").map_err(perr)?).ok_or("bad conn")?;
    let m = kv_u64(f, "mtu").map_err(perr)?;
    a.mtu = if m == 0 {
        None
    } else {
        Some(crate::args::parse_mtu(m).ok_or("bad mtu")?)
    };
    a.atomic = AtomicKind::parse(kv(f, "atomic").map_err(perr)?).ok_or("bad atomic")?;
    a.tx_depth = kv_u64(f, "txd").map_err(perr)? as u32;
    a.rx_depth = kv_u64(f, "rxd").map_err(perr)? as u32;
    a.cq_mod = kv_u64(f, "cqmod").map_err(perr)? as u32;
    a.verify = kv_u64(f, "verify").map_err(perr)? == 1;
    let buffer = kv_u64(f, "buffer").map_err(perr)?;
    a.buffer = (buffer != 0).then_some(buffer);
    let duration = kv_u64(f, "duration").map_err(perr)?;
    a.duration = (duration != 0).then_some(duration);
    let active = kv_u64(f, "active").map_err(perr)?;
    Ok((a, active))
}

/// Choose the MTU and the sizes (perftest: UD messages fit one MTU).
fn plan(a: PerfArgs, mtu: Mtu, warn: bool) -> CliResult<Plan> {
    let mut a = a;
    if a.conn == QpType::Ud {
        let top = mtu.bytes() as u64;
        if a.size.is_none() && !a.all && !a.test.lat {
            if warn {
                eprintln!(" Max msg size in UD is MTU {top}; changing to MTU");
            }
            a.size = Some(top);
        } else if let Some(s) = a.size {
            if s > top {
                return usage(format!("UD messages must fit one MTU: -s {s} is more than the MTU {top}; use -s {top} or less"));
            }
        }
    }
    let sizes = a.sizes(mtu.bytes() as u64);
    let lay = Layout::new(&a, *sizes.iter().max().unwrap_or(&8));
    Ok(Plan { a, mtu, sizes, lay })
}

fn side(args: PerfArgs, role: Role, mut ctrl: Ctrl, printing: bool) -> CliResult<()> {
    // 1. Negotiate parameters and MTU. The device is opened first: its active
    //    MTU takes part, and SOFTRDMA_ADDR errors surface early.
    let probe = Device::open().or_else(|e| runtime(format!("cannot open the device: {e}")))?;
    let active = probe.port_attr().active_mtu;
    drop(probe);
    let p = match role {
        Role::Client => {
            ctrl.send(&hello_line(&args, active))?;
            let f = ctrl.expect("OK")?;
            let mtu = mtu_of(kv_u64(&f, "mtu")?)?;
            plan(args, mtu, printing)?
        }
        Role::Server => {
            let f = ctrl.expect("HELLO")?;
            let (a, peer_active) = match adopt(&args, &f) {
                Ok(x) => x,
                Err(e) => {
                    let _ = ctrl.send(&format!("ERR {e}"));
                    return runtime(e);
                }
            };
            let limit = active.bytes().min(peer_active as usize);
            let mtu = match a.mtu {
                Some(m) if m.bytes() > limit => {
                    let e = format!("-m {} is more than the active MTU {limit} of the two ports; use -m {limit} or less", m.bytes());
                    let _ = ctrl.send(&format!("ERR {e}"));
                    return runtime(e);
                }
                Some(m) => m,
                None => crate::args::parse_mtu(limit as u64).expect("a valid MTU"),
            };
            let p = match plan(a, mtu, false) {
                Ok(p) => p,
                Err(e) => {
                    let _ = ctrl.send(&format!("ERR {e}"));
                    return Err(e);
                }
            };
            ctrl.send(&format!("OK mtu={}", mtu.bytes()))?;
            p
        }
    };
    let a = &p.a;
    // 2. Objects, then exchange the QP ends.
    let s = Side::new(a, role, &p.lay)?;
    for q in 0..a.qps as usize {
        ctrl.send(&format!(
            "QP qpn={} psn={} gid={} srkey={} saddr={} drkey={} daddr={}",
            s.qps[q].qp_num(),
            s.psns[q],
            gid_hex(s.dev.gid(1).expect("gid")),
            s.keys[q].0,
            s.src[q].addr(),
            s.keys[q].1,
            s.dst[q].addr()
        ))?;
    }
    let mut remote = Vec::new();
    for _ in 0..a.qps {
        let f = ctrl.expect("QP")?;
        remote.push(Remote {
            qpn: kv_u64(&f, "qpn")? as u32,
            psn: kv_u64(&f, "psn")? as u32,
            gid: parse_gid(kv(&f, "gid")?)?,
            src_rkey: kv_u64(&f, "srkey")? as u32,
            src_addr: kv_u64(&f, "saddr")?,
            dst_rkey: kv_u64(&f, "drkey")? as u32,
            dst_addr: kv_u64(&f, "daddr")?,
        });
    }
    s.connect(a, p.mtu, &remote)?;
    // The server prints results for what it measures (send_bw, write/send lat).
    let measures = role == Role::Client
        || (a.test.verb == Verb::Send && !a.test.lat)
        || (a.test.lat && matches!(a.test.verb, Verb::Write | Verb::Send));
    let credits = a.test.verb == Verb::Send && a.conn != QpType::Rc;
    if printing && !a.json {
        let eff_tx = if a.test.lat { 1 } else { a.tx_depth };
        let rx = (a.test.verb == Verb::Send && (role == Role::Server || a.test.lat))
            .then_some(a.rx_depth);
        let h = HeaderInfo {
            args: a,
            mtu: p.mtu,
            tx_depth: eff_tx,
            rx_depth: rx,
            cq_mod: a.cq_mod,
            outstanding_reads: OUTSTANDING_READS,
        };
        let local: Vec<Dest> = (0..a.qps as usize)
            .map(|q| s.dest(q, a.test.verb))
            .collect();
        let rem: Vec<Dest> = remote
            .iter()
            .map(|r| {
                let (rkey, vaddr) = if a.test.verb == Verb::Read {
                    (r.src_rkey, r.src_addr)
                } else {
                    (r.dst_rkey, r.dst_addr)
                };
                Dest {
                    qpn: r.qpn,
                    psn: r.psn,
                    rkey,
                    vaddr,
                    gid: r.gid,
                }
            })
            .collect();
        print!(
            "{}{}",
            report::header(&h),
            report::addresses(a, &local, &rem)
        );
        if measures {
            println!(
                "{}",
                if a.test.lat {
                    report::LAT_HEAD
                } else {
                    report::BW_HEAD
                }
            );
        }
        let _ = std::io::stdout().flush();
    }
    // 3. Per size: GO / READY, run, DONE / RESULT. With --duration, round
    //    after round until the client says END.
    let mut failures = Vec::new();
    let mut remote_odp = (0u64, 0u64);
    let started = Instant::now();
    let mut round = 0u64;
    'rounds: loop {
        for &size in &p.sizes {
            let ctx = Ctx {
                a,
                s: &s,
                remote: &remote,
                round,
                size,
                k: p.lay.k(size),
                slot: p.lay.slot(size),
                mtu: p.mtu.bytes(),
                credits,
            };
            let row = match role {
                Role::Client => {
                    ctx.prepare(role);
                    ctrl.send(&format!("GO size={size}"))?;
                    ctrl.expect("READY")?;
                    let row = ctx.run_client(&mut ctrl)?;
                    ctrl.send("DONE")?;
                    let mut local_fail = if a.verify {
                        ctx.verify(role)
                    } else {
                        Vec::new()
                    };
                    let f = ctrl.expect("RESULT")?;
                    remote_odp = (kv_u64(&f, "faults")?, kv_u64(&f, "inval")?);
                    if kv_u64(&f, "ok")? != 1 {
                        let msg = f
                            .iter()
                            .skip_while(|x| !x.starts_with("msg="))
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" ");
                        local_fail.push(format!("server side: {}", msg.trim_start_matches("msg=")));
                    }
                    for m in &local_fail {
                        eprintln!("softrdma: verify: size {size}: {m}");
                    }
                    failures.extend(local_fail.iter().cloned());
                    row
                }
                Role::Server => {
                    let f = if a.duration.is_some() {
                        let line = ctrl.recv()?;
                        if line == "END" {
                            break 'rounds;
                        }
                        match line.strip_prefix("GO ") {
                            Some(rest) => rest.split_whitespace().map(str::to_string).collect(),
                            None => {
                                return runtime(format!(
                                    "protocol error: expected GO or END, got {line:?}"
                                ))
                            }
                        }
                    } else {
                        ctrl.expect("GO")?
                    };
                    if kv_u64(&f, "size")? != size {
                        return runtime("protocol error: size order differs");
                    }
                    ctx.prepare(role);
                    ctrl.send("READY")?;
                    let row = ctx.run_server(&mut ctrl)?;
                    if row.is_some()
                        || !a.test.lat
                        || matches!(a.test.verb, Verb::Read | Verb::Atomic)
                    {
                        // Passive servers (and echoing lat servers) wait for the client's end.
                        ctrl.expect("DONE")?;
                    }
                    let fails = if a.verify {
                        ctx.verify(role)
                    } else {
                        Vec::new()
                    };
                    for m in &fails {
                        eprintln!("softrdma: verify: size {size}: {m}");
                    }
                    failures.extend(fails.iter().cloned());
                    let (fa, inv) = s.odp_counters();
                    let msg = fails.first().cloned().unwrap_or_default();
                    ctrl.send(&format!(
                        "RESULT ok={} faults={fa} inval={inv} msg={msg}",
                        u8::from(fails.is_empty())
                    ))?;
                    row
                }
            };
            if let (Some(row), true) = (row, printing && measures) {
                let (fa, inv) = s.odp_counters();
                let odp = (a.odp != OdpMode::Pinned).then_some(if role == Role::Client {
                    (fa + remote_odp.0, inv + remote_odp.1)
                } else {
                    (fa, inv)
                });
                let jc = JsonCtx {
                    args: a,
                    mtu: p.mtu,
                    odp,
                    verified: a.verify.then_some(failures.is_empty()),
                };
                match row {
                    Row::Bw(r) => println!(
                        "{}",
                        if a.json {
                            report::bw_json(&jc, &r)
                        } else {
                            report::bw_row(&r)
                        }
                    ),
                    Row::Lat(r) => println!(
                        "{}",
                        if a.json {
                            report::lat_json(&jc, &r)
                        } else {
                            report::lat_row(&r)
                        }
                    ),
                }
                let _ = std::io::stdout().flush();
            }
        }
        round += 1;
        match a.duration {
            Some(d) if role == Role::Client => {
                if started.elapsed().as_secs() >= d || !failures.is_empty() {
                    ctrl.send("END")?;
                    break 'rounds;
                }
            }
            Some(_) => {} // the client decides
            None => break 'rounds,
        }
    }
    if printing && !a.json && a.duration.is_some() {
        println!(
            "Rounds: {round} in {:.1} s (--duration {})",
            started.elapsed().as_secs_f64(),
            a.duration.unwrap_or(0)
        );
    }
    if printing && !a.json {
        if measures {
            println!("{}", report::dashes());
        }
        if a.odp != OdpMode::Pinned {
            let (fa, inv) = s.odp_counters();
            let (fa, inv) = if role == Role::Client {
                (fa + remote_odp.0, inv + remote_odp.1)
            } else {
                (fa, inv)
            };
            let kind = if a.odp == OdpMode::Implicit {
                "implicit"
            } else {
                "explicit"
            };
            println!("ODP: {kind} (faults={fa}, invalidations={inv})");
        }
        if a.thp {
            println!("Buffers: transparent huge pages advised (MADV_HUGEPAGE)");
        }
        if a.verify && failures.is_empty() {
            println!(
                "Verify: OK (every destination byte{} checked)",
                if a.test.verb == Verb::Atomic {
                    " and the final counters"
                } else {
                    ""
                }
            );
        }
    }
    if a.stats {
        let who = match role {
            Role::Client => "client",
            Role::Server => "server",
        };
        // One write per table: the two sides of an embedded run do not interleave.
        let t = format!(
            "Counters of the {who}'s device ({}):\n{}",
            s.dev.local_addr(),
            s.dev.stats()
        );
        if a.json {
            eprint!("{t}");
        } else {
            print!("{t}");
            let _ = std::io::stdout().flush();
        }
    }
    if !failures.is_empty() {
        return runtime(format!(
            "verification failed ({} mismatch{}; details above)",
            failures.len(),
            if failures.len() == 1 { "" } else { "es" }
        ));
    }
    Ok(())
}

enum Row {
    Bw(BwRow),
    Lat(report::LatRow),
}

/// One size's run.
struct Ctx<'a> {
    a: &'a PerfArgs,
    s: &'a Side,
    remote: &'a [Remote],
    /// `--duration`: which repetition of the sizes (0 without).
    round: u64,
    size: u64,
    k: usize,
    slot: usize,
    /// Path MTU in bytes (UC loses data a packet at a time).
    mtu: usize,
    credits: bool,
}

impl Ctx<'_> {
    fn iters(&self) -> u64 {
        self.a.iters
    }
    fn depth(&self) -> usize {
        (self.a.tx_depth as usize).min(self.k).max(1)
    }
    fn cq_mod(&self) -> u64 {
        u64::from(self.a.cq_mod).min(self.depth() as u64).max(1)
    }
    fn rx_depth(&self) -> usize {
        (self.a.rx_depth as usize)
            .min(self.k)
            .min(self.iters() as usize)
            .max(1)
    }
    fn seed(&self, what: u64, q: usize, i: u64) -> u64 {
        // Each round has its own patterns: a stale byte from an earlier
        // round is a mismatch.
        pattern::seed(what ^ (self.size << 8) ^ (self.round << 40), q as u64, i)
    }
    fn recv_off(&self) -> usize {
        if self.a.conn == QpType::Ud {
            UD_GRH
        } else {
            0
        }
    }

    /// Before a size: sources of reads, atomic counters, receive areas, receives.
    fn prepare(&self, role: Role) {
        let s = self.s;
        for q in 0..self.a.qps as usize {
            match (self.a.test.verb, role) {
                (Verb::Read, Role::Server) => {
                    for slot in 0..self.k {
                        pattern::fill(
                            s.src[q].bytes_mut(slot * self.slot, self.size as usize),
                            self.seed(W_READSRC, q, slot as u64),
                        );
                    }
                }
                (Verb::Atomic, Role::Server) => s.dst[q].write_u64(0, atomic_init(q)),
                (Verb::Write, _) if self.a.test.lat => {
                    s.dst[q].bytes_mut(0, self.size as usize).fill(0)
                }
                // UC may lose writes: start each size from zeros, so the check
                // can tell "lost" (zeros, or an older write) from "corrupted".
                (Verb::Write, Role::Server) if self.a.conn == QpType::Uc && self.a.verify => {
                    s.dst[q].bytes_mut(0, self.k * self.slot).fill(0);
                }
                _ => {}
            }
            let receives =
                self.a.test.verb == Verb::Send && (role == Role::Server || self.a.test.lat);
            if receives {
                for j in 0..self.rx_depth() as u64 {
                    self.post_recv(q, j);
                }
            }
        }
    }

    fn post_recv(&self, q: usize, j: u64) {
        let s = self.s;
        let slot = (j as usize) % self.k;
        let len = self.size as usize + self.recv_off();
        let sge = Sge {
            addr: s.dst[q].addr() + (slot * self.slot) as u64,
            length: len as u32,
            lkey: s.keys[q].1,
        };
        s.qps[q]
            .post_recv(&[RecvWr {
                wr_id: (q as u64) << 32 | j,
                sg_list: &[sge],
            }])
            .expect("post_recv within the receive queue's depth");
    }

    /// Post iteration `i` of QP `q` (the requester's operation).
    fn post(&self, q: usize, i: u64, signaled: bool, what: u64) -> CliResult<()> {
        let (s, r) = (self.s, &self.remote[q]);
        let slot = (i as usize) % self.k;
        let size = self.size as usize;
        let lat = self.a.test.lat;
        let (sge, op) = match self.a.test.verb {
            Verb::Write | Verb::Send => {
                let buf = s.src[q].bytes_mut(slot * self.slot, size);
                if self.a.verify || lat {
                    pattern::fill(buf, self.seed(what, q, i));
                }
                if lat && self.a.test.verb == Verb::Write {
                    buf[size - 1] = lat_marker(i);
                }
                let sge = Sge {
                    addr: s.src[q].addr() + (slot * self.slot) as u64,
                    length: size as u32,
                    lkey: s.keys[q].0,
                };
                let op = if self.a.test.verb == Verb::Send {
                    SendOp::Send
                } else {
                    let off = if lat { 0 } else { slot * self.slot };
                    SendOp::Write {
                        remote_addr: r.dst_addr + off as u64,
                        rkey: r.dst_rkey,
                    }
                };
                (sge, op)
            }
            Verb::Read => {
                let dslot = if lat { 0 } else { slot };
                let rslot = if lat { slot } else { read_slot(i, self.k) };
                let sge = Sge {
                    addr: s.dst[q].addr() + (dslot * self.slot) as u64,
                    length: size as u32,
                    lkey: s.keys[q].1,
                };
                (
                    sge,
                    SendOp::Read {
                        remote_addr: r.src_addr + (rslot * self.slot) as u64,
                        rkey: r.src_rkey,
                    },
                )
            }
            Verb::Atomic => {
                let dslot = if lat { 0 } else { slot };
                let sge = Sge {
                    addr: s.dst[q].addr() + (dslot * self.slot) as u64,
                    length: 8,
                    lkey: s.keys[q].1,
                };
                let op = match self.a.atomic {
                    AtomicKind::FetchAndAdd => SendOp::FetchAdd {
                        remote_addr: r.dst_addr,
                        rkey: r.dst_rkey,
                        add: fa_add(q, i),
                    },
                    AtomicKind::CmpAndSwap => {
                        let v = atomic_before(AtomicKind::CmpAndSwap, q, i);
                        SendOp::CompareSwap {
                            remote_addr: r.dst_addr,
                            rkey: r.dst_rkey,
                            compare: v,
                            swap: cas_next(q, v),
                        }
                    }
                };
                (sge, op)
            }
        };
        let ud = (self.a.conn == QpType::Ud).then(|| UdDest {
            ah: s.pd.create_ah(r.gid),
            remote_qpn: r.qpn,
            remote_qkey: QKEY,
        });
        let wr = SendWr {
            wr_id: (q as u64) << 32 | i,
            sg_list: &[sge],
            op,
            flags: SendFlags {
                signaled,
                ..Default::default()
            },
            ud,
        };
        s.qps[q]
            .post_send(&[wr])
            .map_err(|(_, e)| CliError::Runtime(format!("post_send (QP {q}, iteration {i}): {e}")))
    }

    fn run_client(&self, ctrl: &mut Ctrl) -> CliResult<Option<Row>> {
        if self.a.test.lat {
            self.run_lat(ctrl, Role::Client).map(|r| r.map(Row::Lat))
        } else {
            self.run_bw_client(ctrl).map(|r| Some(Row::Bw(r)))
        }
    }

    fn run_server(&self, ctrl: &mut Ctrl) -> CliResult<Option<Row>> {
        match (self.a.test.lat, self.a.test.verb) {
            (false, Verb::Send) => self.run_bw_receiver(ctrl).map(|r| Some(Row::Bw(r))),
            (true, Verb::Write | Verb::Send) => {
                self.run_lat(ctrl, Role::Server).map(|r| r.map(Row::Lat))
            }
            // Passive target: the device does the work; wait for DONE.
            _ => Ok(None),
        }
    }

    /// perftest's bw loop: up to `-t` in flight per QP, signal every
    /// `--cq-mod`, count completions.
    fn run_bw_client(&self, ctrl: &mut Ctrl) -> CliResult<BwRow> {
        let nq = self.a.qps as usize;
        let iters = self.iters();
        let (depth, cq_mod) = (self.depth() as u64, self.cq_mod());
        let mut posted = vec![0u64; nq];
        let mut done = vec![0u64; nq];
        let mut credit = vec![
            if self.credits {
                self.rx_depth() as u64
            } else {
                u64::MAX
            };
            nq
        ];
        let mut wcs = vec![Wc::EMPTY; 64];
        let mut events: Vec<(Instant, u64)> =
            Vec::with_capacity((iters * nq as u64 / cq_mod) as usize + 2);
        let total = iters * nq as u64;
        let mut completed = 0u64;
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let start = Instant::now();
        while completed < total {
            for q in 0..nq {
                while posted[q] < iters && posted[q] - done[q] < depth && posted[q] < credit[q] {
                    let i = posted[q];
                    self.post(
                        q,
                        i,
                        i % cq_mod == cq_mod - 1 || i == iters - 1,
                        if self.a.test.verb == Verb::Send {
                            W_SEND
                        } else {
                            W_WRITE
                        },
                    )?;
                    posted[q] += 1;
                }
            }
            if self.credits && (0..nq).any(|q| posted[q] >= credit[q] && posted[q] < iters) {
                while ctrl.readable() {
                    let f = ctrl.expect("CREDIT")?;
                    let q = kv_u64(&f, "q")? as usize;
                    credit[q] = credit[q].max(kv_u64(&f, "n")?);
                    dog.progress();
                }
            }
            let n = self.s.scq.poll(&mut wcs);
            if n == 0 {
                dog.check(|| format!("{completed} of {total} operations completed"))?;
                relax(&mut spins);
                continue;
            }
            let now = Instant::now();
            for (k, wc) in wcs[..n].iter().enumerate() {
                let q = (wc.wr_id >> 32) as usize;
                let i = wc.wr_id & 0xffff_ffff;
                if wc.status != WcStatus::Success {
                    return Err(self.send_failed(wc, &wcs[k + 1..n], posted[q] - (i + 1)));
                }
                completed += i + 1 - done[q];
                done[q] = i + 1;
            }
            events.push((now, completed));
            dog.progress();
        }
        let end = Instant::now();
        Ok(bw_row(
            self.size, iters, nq as u64, cq_mod, start, end, &events,
        ))
    }

    /// The first error completion of a send queue ends the run. The QP is
    /// then in error and every work request posted after the failed one
    /// (`later` of them) comes back flushed; wait for those (at most
    /// `STALL`) and say how many did, so a peer that died mid-run reads as
    /// "retry count exceeded, the rest flushed" rather than a hang.
    /// `polled`: the completions polled with `first`, after it.
    fn send_failed(&self, first: &Wc, polled: &[Wc], later: u64) -> CliError {
        // (flushed, completed otherwise) among this QP's completions.
        let count = |seen: &mut (u64, u64), wcs: &[Wc]| {
            for wc in wcs.iter().filter(|w| w.qp_num == first.qp_num) {
                if wc.status == WcStatus::WrFlushErr {
                    seen.0 += 1;
                } else {
                    seen.1 += 1;
                }
            }
        };
        let mut seen = (0u64, 0u64);
        count(&mut seen, polled);
        let mut wcs = vec![Wc::EMPTY; 64];
        let t = Instant::now();
        while seen.0 + seen.1 < later && t.elapsed() < STALL {
            let n = self.s.scq.poll(&mut wcs);
            count(&mut seen, &wcs[..n]);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let (flushed, other) = seen;
        CliError::Runtime(format!(
            "send queue completion with error {:?} (QP {:#06x}, iteration {}); \
             flushed after it: {flushed} of the {later} work requests posted later{}",
            first.status,
            first.qp_num,
            first.wr_id & 0xffff_ffff,
            if other > 0 {
                format!(" ({other} completed otherwise)")
            } else {
                String::new()
            }
        ))
    }

    /// send_bw's receiver: repost as receives complete (credits for UC/UD).
    fn run_bw_receiver(&self, ctrl: &mut Ctrl) -> CliResult<BwRow> {
        let nq = self.a.qps as usize;
        let iters = self.iters();
        let mut posted = vec![self.rx_depth() as u64; nq];
        let mut got = vec![0u64; nq];
        let mut credited = posted.clone();
        let batch = (self.rx_depth() as u64 / 4).max(1);
        let mut wcs = vec![Wc::EMPTY; 64];
        let total = iters * nq as u64;
        let mut received = 0u64;
        let mut events = Vec::new();
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let want_len = self.size as u32 + self.recv_off() as u32;
        let start = Instant::now();
        while received < total {
            let n = self.s.rcq.poll(&mut wcs);
            if n == 0 {
                if spins % 4096 == 0 && ctrl.peer_closed() {
                    return runtime("the client closed the connection (see its error)");
                }
                dog.check(|| format!("{received} of {total} messages received"))?;
                relax(&mut spins);
                continue;
            }
            for wc in &wcs[..n] {
                wc_ok(wc, "receive queue")?;
                if wc.byte_len != want_len {
                    return runtime(format!(
                        "received {} bytes, expected {want_len}",
                        wc.byte_len
                    ));
                }
                let q = (wc.wr_id >> 32) as usize;
                got[q] += 1;
                received += 1;
                if posted[q] < iters {
                    self.post_recv(q, posted[q]);
                    posted[q] += 1;
                }
                if self.credits
                    && (posted[q] - credited[q] >= batch || posted[q] == iters)
                    && posted[q] > credited[q]
                {
                    ctrl.send(&format!("CREDIT q={q} n={}", posted[q]))?;
                    credited[q] = posted[q];
                }
            }
            events.push((Instant::now(), received));
            dog.progress();
        }
        Ok(bw_row(
            self.size,
            iters,
            nq as u64,
            batch,
            start,
            Instant::now(),
            &events,
        ))
    }

    /// Latency: write/send ping-pong (both sides), read/atomic (client only).
    fn run_lat(&self, ctrl: &mut Ctrl, role: Role) -> CliResult<Option<report::LatRow>> {
        let iters = self.iters();
        let size = self.size as usize;
        let verb = self.a.test.verb;
        let what = if role == Role::Client {
            W_LAT_CLIENT
        } else {
            W_LAT_SERVER
        };
        let mut samples = Vec::with_capacity(iters as usize);
        let mut wcs = vec![Wc::EMPTY; 16];
        let mut sdone = 0u64; // send completions seen (every lat op is signaled)
        let mut recvd = 0u64;
        let mut dog = Watchdog::new();
        let mut spins = 0u32;
        let want_len = self.size as u32 + self.recv_off() as u32;
        // Drain completions; returns whether anything happened.
        let mut drain = |sdone: &mut u64, recvd: &mut u64| -> CliResult<bool> {
            let mut any = false;
            let n = self.s.scq.poll(&mut wcs);
            for wc in &wcs[..n] {
                wc_ok(wc, "send queue")?;
                *sdone = (wc.wr_id & 0xffff_ffff) + 1;
                any = true;
            }
            if verb == Verb::Send {
                let n = self.s.rcq.poll(&mut wcs);
                for wc in &wcs[..n] {
                    wc_ok(wc, "receive queue")?;
                    if wc.byte_len != want_len {
                        return runtime(format!(
                            "received {} bytes, expected {want_len}",
                            wc.byte_len
                        ));
                    }
                    let j = wc.wr_id & 0xffff_ffff;
                    *recvd = j + 1;
                    if j + (self.rx_depth() as u64) < iters {
                        self.post_recv(0, j + self.rx_depth() as u64);
                    }
                    any = true;
                }
            }
            Ok(any)
        };
        let arrived = |i: u64, recvd: u64| -> bool {
            match verb {
                Verb::Write => self.s.dst[0].volatile_byte(size - 1) == lat_marker(i),
                _ => recvd > i,
            }
        };
        let pingpong = matches!(verb, Verb::Write | Verb::Send);
        let mut t_prev: Option<Instant> = None;
        for i in 0..iters {
            // A source slot is reused only after its operation completed.
            while i >= self.k as u64 + sdone {
                if !drain(&mut sdone, &mut recvd)? {
                    dog.check(|| format!("iteration {i}: waiting for a send completion"))?;
                    relax(&mut spins);
                } else {
                    dog.progress();
                }
            }
            if pingpong && role == Role::Server {
                // Echo: wait for the client's i-th message, answer it.
                while !arrived(i, recvd) {
                    if !drain(&mut sdone, &mut recvd)? {
                        // A client that died says so at once (as the send_bw
                        // receiver), not after the stall timeout.
                        if spins % 4096 == 0 && ctrl.peer_closed() {
                            return runtime("the client closed the connection (see its error)");
                        }
                        dog.check(|| format!("iteration {i}: waiting for the client's message"))?;
                        relax(&mut spins);
                    } else {
                        dog.progress();
                    }
                }
                let now = Instant::now();
                if let Some(t) = t_prev {
                    samples.push(now.duration_since(t).as_secs_f64() * 1e6 / 2.0);
                }
                self.post(0, i, true, what)?;
                t_prev = Some(Instant::now());
                dog.progress();
                continue;
            }
            let t0 = Instant::now();
            self.post(0, i, true, what)?;
            if pingpong {
                while !arrived(i, recvd) {
                    if !drain(&mut sdone, &mut recvd)? {
                        if spins % 4096 == 0 && ctrl.peer_closed() {
                            return runtime("the server closed the connection (see its error)");
                        }
                        dog.check(|| format!("iteration {i}: waiting for the server's reply"))?;
                        relax(&mut spins);
                    }
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6 / 2.0);
            } else {
                while sdone <= i {
                    if !drain(&mut sdone, &mut recvd)? {
                        dog.check(|| format!("iteration {i}: waiting for the completion"))?;
                        relax(&mut spins);
                    }
                }
                samples.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            dog.progress();
        }
        // Let the last sends complete (their buffers are checked / reused next size).
        while sdone < iters {
            if !drain(&mut sdone, &mut recvd)? {
                dog.check(|| "waiting for the last send completion".to_string())?;
                relax(&mut spins);
            }
        }
        Ok((!samples.is_empty()).then(|| report::lat_stats(self.size, samples)))
    }

    /// Check every byte the last operation on each slot wrote on this side.
    fn verify(&self, role: Role) -> Vec<String> {
        let mut fails = Vec::new();
        let iters = self.iters();
        let size = self.size as usize;
        let lat = self.a.test.lat;
        let peer_what = if role == Role::Client {
            W_LAT_SERVER
        } else {
            W_LAT_CLIENT
        };
        let check = |fails: &mut Vec<String>,
                     q: usize,
                     off: usize,
                     len: usize,
                     seed: u64,
                     what: String| {
            if let Some((o, e, g, n)) = pattern::check(self.s.dst[q].bytes(off, len), seed) {
                fails.push(format!("qp {q} {what}: {n} of {len} bytes differ, first at byte {o}: expected {e:#04x}, got {g:#04x}"));
            }
        };
        if self.a.conn == QpType::Uc && role == Role::Server {
            // UC WRITEs complete at the sender when sent: the client's DONE
            // can overtake packets still queued here. Check once the link is
            // quiet, or a chunk being written would look torn.
            let t = std::time::Instant::now();
            let mut seen = self.s.dev.stats().rcvd_pkts;
            while t.elapsed() < std::time::Duration::from_secs(2) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let now = self.s.dev.stats().rcvd_pkts;
                if now == seen {
                    break;
                }
                seen = now;
            }
        }
        for q in 0..self.a.qps as usize {
            match (self.a.test.verb, role, lat) {
                (Verb::Write, Role::Server, false) if self.a.conn == QpType::Uc => {
                    // Unreliable: a dropped packet loses (the rest of) its
                    // message. Each MTU chunk must hold that chunk of some
                    // write aimed at this slot, or still be zero — never bytes
                    // no write carried.
                    let mut lost = 0usize;
                    for s in 0..self.k {
                        let writes: Vec<u64> = (0..iters)
                            .filter(|i| (*i as usize) % self.k == s)
                            .rev()
                            .collect();
                        let Some(&last) = writes.first() else {
                            continue;
                        };
                        for c in (0..size).step_by(self.mtu) {
                            let buf =
                                self.s.dst[q].bytes(s * self.slot + c, self.mtu.min(size - c));
                            if pattern::matches_at(buf, self.seed(W_WRITE, q, last), c) {
                                continue;
                            }
                            lost += 1;
                            if !buf.iter().all(|&b| b == 0)
                                && !writes
                                    .iter()
                                    .any(|&i| pattern::matches_at(buf, self.seed(W_WRITE, q, i), c))
                            {
                                fails.push(format!("qp {q} slot {s}: bytes {c}..{} match no write to this slot (UC may lose data, never corrupt it)", c + buf.len()));
                            }
                        }
                    }
                    if lost > 0 {
                        eprintln!("softrdma: verify: qp {q}: UC lost {lost} packet(s) of data (allowed: UC is unreliable)");
                    }
                }
                (Verb::Write, Role::Server, false) | (Verb::Send, Role::Server, false) => {
                    let what = if self.a.test.verb == Verb::Send {
                        W_SEND
                    } else {
                        W_WRITE
                    };
                    let off = if self.a.test.verb == Verb::Send {
                        self.recv_off()
                    } else {
                        0
                    };
                    for s in 0..self.k {
                        if let Some(i) = last_in_slot(s, self.k, iters) {
                            check(
                                &mut fails,
                                q,
                                s * self.slot + off,
                                size,
                                self.seed(what, q, i),
                                format!("slot {s} (iteration {i})"),
                            );
                        }
                    }
                }
                (Verb::Read, Role::Client, false) => {
                    for s in 0..self.k {
                        if let Some(i) = last_in_slot(s, self.k, iters) {
                            let r = read_slot(i, self.k);
                            let before = fails.len();
                            check(
                                &mut fails,
                                q,
                                s * self.slot,
                                size,
                                self.seed(W_READSRC, q, r as u64),
                                format!("slot {s} (iteration {i}, remote slot {r})"),
                            );
                            if fails.len() > before {
                                // Whose data is it? (Helps tell a stale or misplaced response.)
                                let page = self.s.dst[q].bytes(s * self.slot, size.min(4096));
                                if let Some(o) = (0..self.k).find(|&o| {
                                    pattern::check(page, self.seed(W_READSRC, q, o as u64))
                                        .is_none()
                                }) {
                                    let l = fails.len() - 1;
                                    fails[l].push_str(&format!("; that data is remote slot {o}'s"));
                                }
                            }
                        }
                    }
                }
                (Verb::Read, Role::Client, true) => {
                    let r = ((iters - 1) as usize) % self.k;
                    check(
                        &mut fails,
                        q,
                        0,
                        size,
                        self.seed(W_READSRC, q, r as u64),
                        format!("read buffer (iteration {}, remote slot {r})", iters - 1),
                    );
                }
                (Verb::Write, _, true) => {
                    let i = iters - 1;
                    check(
                        &mut fails,
                        q,
                        0,
                        size - 1,
                        self.seed(peer_what, q, i),
                        format!("buffer (iteration {i})"),
                    );
                    let last = self.s.dst[q].bytes(size - 1, 1)[0];
                    if last != lat_marker(i) {
                        fails.push(format!(
                            "qp {q} buffer: last byte {last:#04x}, expected {:#04x}",
                            lat_marker(i)
                        ));
                    }
                }
                (Verb::Send, _, true) => {
                    for s in 0..self.k {
                        if let Some(i) = last_in_slot(s, self.k, iters) {
                            check(
                                &mut fails,
                                q,
                                s * self.slot + self.recv_off(),
                                size,
                                self.seed(peer_what, q, i),
                                format!("receive slot {s} (message {i})"),
                            );
                        }
                    }
                }
                (Verb::Atomic, Role::Server, _) => {
                    let want = atomic_before(self.a.atomic, q, iters);
                    let got = self.s.dst[q].volatile_u64(0);
                    if got != want {
                        fails.push(format!(
                            "qp {q} counter after {iters} {}: expected {want:#x}, got {got:#x}",
                            self.a.atomic.name()
                        ));
                    }
                }
                (Verb::Atomic, Role::Client, _) => {
                    let slots = if lat { 1 } else { self.k };
                    for s in 0..slots {
                        let last = if lat {
                            Some(iters - 1)
                        } else {
                            last_in_slot(s, self.k, iters)
                        };
                        if let Some(i) = last {
                            let want = atomic_before(self.a.atomic, q, i);
                            let got = self.s.dst[q].volatile_u64(s * self.slot);
                            if got != want {
                                fails.push(format!("qp {q} value fetched by operation {i}: expected {want:#x}, got {got:#x}"));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        fails
    }
}

/// perftest's figures: average over the whole run; peak over the best
/// window of a tenth of the run (at least one completion batch).
fn bw_row(
    size: u64,
    iters: u64,
    nq: u64,
    cq_mod: u64,
    start: Instant,
    end: Instant,
    events: &[(Instant, u64)],
) -> BwRow {
    let total = iters * nq;
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let mb = (size * total) as f64 / (1u64 << 20) as f64;
    let avg = mb / secs;
    // At least two completion batches of every QP: a burst polled late is not a peak.
    let win = (total / 10).max(2 * cq_mod * nq);
    let mut peak = avg;
    let mut j = 0usize;
    let mut pts = vec![(start, 0u64)];
    pts.extend_from_slice(events);
    for e in 0..pts.len() {
        while j + 1 < e && pts[e].1 - pts[j + 1].1 >= win {
            j += 1;
        }
        let (dt, dn) = (
            pts[e].0.duration_since(pts[j].0).as_secs_f64(),
            pts[e].1 - pts[j].1,
        );
        if dn >= win && dt > 1e-6 {
            peak = peak.max((size * dn) as f64 / (1u64 << 20) as f64 / dt);
        }
    }
    BwRow {
        bytes: size,
        iters,
        peak_mbs: peak,
        avg_mbs: avg,
        mpps: total as f64 / secs / 1e6,
    }
}
