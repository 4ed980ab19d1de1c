//! Two processes over the verbs API, every byte checked:
//!
//! 1. on the `ibverbs` crate (device list, context, PD, CQ, RC QP built and
//!    connected by the crate, `allocate`d MRs): the client SENDs `MSGS`
//!    messages, the server receives and checks them and SENDs one back;
//! 2. through the crate's FFI layer (RDMA WRITE and ODP registration are not
//!    wrapped by the crate): the client RDMA-WRITEs 1 MiB into the server's
//!    explicit ODP region in 64 KiB WRITEs, then SENDs a 16-byte "done"; the
//!    server checks the whole region when that SEND arrives.
//!
//! Usage: `verbs_pair server [BIND]` (prints `PORT n`), `verbs_pair client
//! HOST:PORT`, `verbs_pair devices` (the device list only). Each side prints `LIB path` / `DEVICE name` (which
//! libibverbs.so.1 it loaded), one line per phase, and exits 0 only if all
//! data arrived intact.

use e2e_tests::oob::{hex, unhex, Oob};
use e2e_tests::raw::{Access, Mapping, Sge, Verbs};
use std::io;
use std::time::Duration;

const MSGS: usize = 32;
const MSG: usize = 4096;
const REGION: usize = 1 << 20;
const CHUNK: usize = 64 << 10;
const LIMIT: Duration = Duration::from_secs(20);

fn msg_byte(m: usize, j: usize) -> u8 {
    (m * 31 + j * 7 + 1) as u8
}

fn region_byte(k: usize) -> u8 {
    ((k as u64 * 2654435761) >> 13) as u8
}

fn main() {
    e2e_tests::report_library();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let r = match argv.first().map(String::as_str) {
        Some("server") => {
            Oob::serve(argv.get(1).map_or("127.0.0.1:0", |s| s)).and_then(|o| run(o, true))
        }
        Some("client") if argv.len() == 2 => Oob::connect(&argv[1]).and_then(|o| run(o, false)),
        Some("devices") => list_devices(),
        _ => Err(io::Error::other(
            "usage: verbs_pair server [BIND] | client HOST:PORT | devices",
        )),
    };
    if let Err(e) = r {
        eprintln!("verbs_pair: {e}");
        std::process::exit(1);
    }
}

/// `devices`: the device list as the `ibverbs` crate sees it.
fn list_devices() -> io::Result<()> {
    let list = ibverbs::devices()?;
    if list.is_empty() {
        return Err(io::Error::other("no verbs device"));
    }
    for d in &list {
        let name = d.name().map(|n| n.to_string_lossy().into_owned());
        e2e_tests::report_device(&name.unwrap_or_default());
    }
    Ok(())
}

fn run(mut oob: Oob, server: bool) -> io::Result<()> {
    crate_send_recv(&mut oob, server)?;
    ffi_write_send(&mut oob, server)
}

fn poll_crate(
    cq: &ibverbs::CompletionQueue<'_>,
    want: usize,
    what: &str,
) -> io::Result<Vec<ibverbs::ibv_wc>> {
    let mut got = Vec::new();
    let mut wc = [ibverbs::ibv_wc::default(); 16];
    let t = std::time::Instant::now();
    while got.len() < want {
        for c in cq.poll(&mut wc)?.iter() {
            if let Some((st, v)) = c.error() {
                return Err(io::Error::other(format!(
                    "{what}: completion status {st} (vendor {v})"
                )));
            }
            got.push(*c);
        }
        if t.elapsed() > LIMIT {
            return Err(io::Error::other(format!(
                "{what}: {} of {want} completions",
                got.len()
            )));
        }
    }
    Ok(got)
}

/// Phase 1: SEND/RECV on the ibverbs crate.
fn crate_send_recv(oob: &mut Oob, server: bool) -> io::Result<()> {
    let list = ibverbs::devices()?;
    let dev = list
        .get(0)
        .ok_or_else(|| io::Error::other("no verbs device"))?;
    let name = dev
        .name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    e2e_tests::report_device(&name);
    let ctx = dev.open()?;
    let cq = ctx.create_cq(2 * MSGS as i32, 0)?;
    let pd = ctx.alloc_pd()?;
    let prepared = pd
        .create_qp(&cq, &cq, ibverbs::ibv_qp_type::IBV_QPT_RC)
        .set_gid_index(1)
        .set_max_send_wr(MSGS as u32)
        .set_max_recv_wr(MSGS as u32)
        .build()?;
    let me = prepared.endpoint();
    let gid: ibverbs_sys::ibv_gid = me.gid.expect("gid index set").into();
    let gid_raw = e2e_tests::raw::gid_bytes(gid);
    oob.send(&[
        "CRATE".into(),
        me.num.to_string(),
        me.lid.to_string(),
        hex(&gid_raw),
    ])?;
    let f = oob.expect("CRATE")?;
    let bad = || io::Error::other("bad CRATE line");
    let remote = ibverbs::QueuePairEndpoint {
        num: f.first().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        lid: f.get(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        gid: Some(
            ibverbs_sys::ibv_gid {
                raw: f.get(2).and_then(|s| unhex::<16>(s)).ok_or_else(bad)?,
            }
            .into(),
        ),
    };
    let mut qp = prepared.handshake(remote)?;
    let mut mr = pd.allocate::<u8>(MSGS * MSG)?;
    if server {
        for m in 0..MSGS {
            // SAFETY: `mr` outlives the receive (polled below before drop).
            unsafe { qp.post_receive(&mut mr, m * MSG..(m + 1) * MSG, m as u64)? };
        }
        oob.send(&["READY".into()])?;
        let wcs = poll_crate(&cq, MSGS, "crate receives")?;
        for c in &wcs {
            let m = c.wr_id() as usize;
            if c.len() != MSG {
                return Err(io::Error::other(format!("message {m}: {} bytes", c.len())));
            }
            if let Some(j) = (0..MSG).find(|&j| mr[m * MSG + j] != msg_byte(m, j)) {
                return Err(io::Error::other(format!(
                    "message {m} byte {j}: {:#x}",
                    mr[m * MSG + j]
                )));
            }
        }
        // Reply with message 0 reversed.
        oob.expect("READY")?;
        for j in 0..MSG {
            mr[j] = msg_byte(0, MSG - 1 - j);
        }
        // SAFETY: `mr` outlives the send (its completion is polled below).
        unsafe { qp.post_send(&mut mr, 0..MSG, 99)? };
        poll_crate(&cq, 1, "crate reply send")?;
        println!(
            "CRATE SEND/RECV ok: {MSGS} messages of {MSG} bytes received and checked, reply sent"
        );
    } else {
        // SAFETY: `mr` outlives the receive (polled below).
        unsafe { qp.post_receive(&mut mr, 0..MSG, 1000)? };
        oob.expect("READY")?;
        for m in 0..MSGS {
            for j in 0..MSG {
                mr[m * MSG + j] = msg_byte(m, j);
            }
        }
        for m in 0..MSGS {
            // SAFETY: `mr` outlives the sends (completions polled below).
            unsafe { qp.post_send(&mut mr, m * MSG..(m + 1) * MSG, m as u64)? };
        }
        // The sends' completions, then the reply (the receive was posted first).
        let sends = poll_crate(&cq, MSGS, "crate sends")?;
        if sends.iter().any(|c| c.wr_id() == 1000) {
            return Err(io::Error::other("reply before the server saw all messages"));
        }
        oob.send(&["READY".into()])?;
        let r = poll_crate(&cq, 1, "crate reply")?;
        if r[0].wr_id() != 1000
            || r[0].len() != MSG
            || (0..MSG).any(|j| mr[j] != msg_byte(0, MSG - 1 - j))
        {
            return Err(io::Error::other("the reply differs"));
        }
        println!(
            "CRATE SEND/RECV ok: {MSGS} messages of {MSG} bytes sent, reply received and checked"
        );
    }
    Ok(())
}

/// Phase 2: RDMA WRITE into an ODP region, then SEND, via the FFI layer.
fn ffi_write_send(oob: &mut Oob, server: bool) -> io::Result<()> {
    let v = Verbs::open(64)?;
    let mut qp = v.rc_qp(64)?;
    let small = Mapping::new(4096)?;
    let small_mr = v.reg_mr(small.ptr(), 4096, Access::IBV_ACCESS_LOCAL_WRITE)?;
    let me = qp.endpoint()?;
    let region = Mapping::new(REGION)?;
    let (mr, what) = if server {
        let a = Access::IBV_ACCESS_LOCAL_WRITE
            | Access::IBV_ACCESS_REMOTE_WRITE
            | Access::IBV_ACCESS_ON_DEMAND;
        (v.reg_mr(region.ptr(), REGION, a)?, "ODP")
    } else {
        for k in (0..REGION).step_by(8) {
            let w = u64::from_le_bytes(std::array::from_fn(|i| region_byte(k + i)));
            region.write_u64(k, w);
        }
        (
            v.reg_mr(region.ptr(), REGION, Access::IBV_ACCESS_LOCAL_WRITE)?,
            "pinned",
        )
    };
    oob.send(&[
        "RAW".into(),
        me.qpn.to_string(),
        hex(&me.gid),
        region.addr().to_string(),
        mr.rkey().to_string(),
    ])?;
    let f = oob.expect("RAW")?;
    let bad = || io::Error::other("bad RAW line");
    let remote = e2e_tests::raw::Endpoint {
        qpn: f.first().and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        gid: f.get(1).and_then(|s| unhex::<16>(s)).ok_or_else(bad)?,
    };
    let raddr: u64 = f.get(2).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let rkey: u32 = f.get(3).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    qp.connect(remote)?;
    let small_sge = Sge {
        addr: small.addr(),
        len: 16,
        lkey: small_mr.lkey(),
    };
    if server {
        qp.post_recv(7, small_sge)?;
        oob.send(&["READY".into()])?;
        let wc = v.wait_one(LIMIT)?;
        if let Some((st, _)) = wc.error() {
            return Err(io::Error::other(format!("done receive: status {st}")));
        }
        let (n, chunk) = (small.read_u64(0), small.read_u64(8));
        if wc.wr_id() != 7
            || wc.len() != 16
            || n != (REGION / CHUNK) as u64
            || chunk != CHUNK as u64
        {
            return Err(io::Error::other(format!(
                "done message: wr_id {} len {} fields {n} {chunk}",
                wc.wr_id(),
                wc.len()
            )));
        }
        // Every byte the WRITEs (which precede the SEND on the QP) placed.
        for k in (0..REGION).step_by(8) {
            let want = u64::from_le_bytes(std::array::from_fn(|i| region_byte(k + i)));
            let got = region.read_u64(k);
            if got != want {
                return Err(io::Error::other(format!(
                    "region offset {k}: {got:#018x}, wanted {want:#018x}"
                )));
            }
        }
        oob.send(&["CHECKED".into()])?;
        println!("FFI WRITE+SEND ok: {REGION} bytes written into the {what} region in {} WRITEs, checked on the done SEND", REGION / CHUNK);
    } else {
        oob.expect("READY")?;
        for (i, off) in (0..REGION).step_by(CHUNK).enumerate() {
            let sge = Sge {
                addr: region.addr() + off as u64,
                len: CHUNK as u32,
                lkey: mr.lkey(),
            };
            qp.post_write(i as u64, sge, raddr + off as u64, rkey)?;
        }
        small.write_u64(0, (REGION / CHUNK) as u64);
        small.write_u64(8, CHUNK as u64);
        qp.post_send(100, small_sge)?;
        for _ in 0..=REGION / CHUNK {
            let wc = v.wait_one(LIMIT)?;
            if let Some((st, _)) = wc.error() {
                return Err(io::Error::other(format!(
                    "work request {}: status {st}",
                    wc.wr_id()
                )));
            }
        }
        oob.expect("CHECKED")?;
        println!("FFI WRITE+SEND ok: {REGION} bytes written in {} WRITEs into the peer's ODP region, done SEND; peer checked", REGION / CHUNK);
    }
    drop(qp);
    drop(mr);
    drop(small_mr);
    Ok(())
}
