//! Scatter/gather lists resolved to MRs at post time, and moving a message's
//! bytes between them and packets: [`gather`], [`scatter`], and [`Payload`]
//! (one window onto an MR for the packets of one message).

use super::mr::{MrShared, MrTable, MrWindow};
use crate::types::{Access, Sge, WcStatus};
use std::sync::Arc;

/// A scatter/gather entry with its MR resolved at post time (`None`: bad lkey).
#[derive(Clone)]
pub(crate) struct ResolvedSge {
    pub(crate) sge: Sge,
    pub(crate) mr: Option<Arc<MrShared>>,
}

/// A posted receive work request (a QP's receive queue or an SRQ).
pub(crate) struct RecvWqe {
    pub(crate) wr_id: u64,
    pub(crate) sges: Vec<ResolvedSge>,
    pub(crate) len: u64,
}

impl RecvWqe {
    pub(crate) fn new(mrs: &MrTable, wr_id: u64, sg_list: &[Sge]) -> RecvWqe {
        let sges = resolve(mrs, sg_list);
        RecvWqe {
            wr_id,
            len: total_len(&sges),
            sges,
        }
    }
}

pub(crate) fn resolve(mrs: &MrTable, sges: &[Sge]) -> Vec<ResolvedSge> {
    sges.iter()
        .map(|s| ResolvedSge {
            sge: *s,
            mr: mrs.get(s.lkey),
        })
        .collect()
}

pub(crate) fn total_len(sges: &[ResolvedSge]) -> u64 {
    sges.iter().map(|s| u64::from(s.sge.length)).sum()
}

/// Visit the pieces of `[offset, offset+len)` of the gather list: (mr, va,
/// piece length, position in the run).
fn walk(
    sges: &[ResolvedSge],
    pd: u32,
    mut offset: u64,
    len: usize,
    need: Access,
    mut f: impl FnMut(&MrShared, u64, usize, usize) -> Result<(), WcStatus>,
) -> Result<(), WcStatus> {
    let mut done = 0usize;
    for s in sges {
        if done == len {
            break;
        }
        let sl = u64::from(s.sge.length);
        if offset >= sl {
            offset -= sl;
            continue;
        }
        let n = ((sl - offset) as usize).min(len - done);
        let mr = s.mr.as_deref().ok_or(WcStatus::LocProtErr)?;
        let va = s.sge.addr.checked_add(offset).ok_or(WcStatus::LocProtErr)?;
        mr.check(pd, va, n as u64, need)
            .map_err(|_| WcStatus::LocProtErr)?;
        f(mr, va, n, done)?;
        done += n;
        offset = 0;
    }
    if done < len {
        return Err(WcStatus::LocLenErr);
    }
    Ok(())
}

/// Copy `[offset, offset+out.len())` of the message out of local memory.
pub(crate) fn gather(
    sges: &[ResolvedSge],
    pd: u32,
    offset: u64,
    out: &mut [u8],
) -> Result<(), WcStatus> {
    let len = out.len();
    walk(sges, pd, offset, len, Access::default(), |mr, va, n, at| {
        mr.read(va, &mut out[at..at + n])
            .map_err(|_| WcStatus::LocProtErr)
    })
}

/// Copy `data` into local memory at message offset `offset`.
pub(crate) fn scatter(
    sges: &[ResolvedSge],
    pd: u32,
    offset: u64,
    data: &[u8],
) -> Result<(), WcStatus> {
    walk(
        sges,
        pd,
        offset,
        data.len(),
        Access::LOCAL_WRITE,
        |mr, va, n, at| {
            mr.write(va, &data[at..at + n])
                .map_err(|_| WcStatus::LocProtErr)
        },
    )
}

/// Where the packets of one message take their payload from.
pub(crate) enum Payload<'a> {
    /// Data carried in the WQE (inline sends).
    Inline(&'a [u8]),
    /// A single SGE, opened once as a window onto its MR: for an ODP MR one
    /// guard for all the packets built with it, not one per packet. `base`
    /// is the address of message offset 0.
    Window { window: MrWindow<'a>, base: u64 },
    /// Anything else, one [`gather`] a packet.
    Gather { sges: &'a [ResolvedSge], pd: u32 },
}

impl<'a> Payload<'a> {
    /// Open the gather list for message bytes `[from, to)`. If the window
    /// cannot be opened (bad key, unmapped ODP memory), each packet gathers
    /// on its own and reports the error as before.
    pub(crate) fn open(sges: &'a [ResolvedSge], pd: u32, from: u64, to: u64) -> Payload<'a> {
        if let [ResolvedSge { sge, mr: Some(mr) }] = sges {
            let va = sge.addr.checked_add(from);
            if let Some(va) = va.filter(|_| from <= to && to <= u64::from(sge.length)) {
                let len = to - from;
                if mr.check(pd, va, len, Access::default()).is_ok() {
                    if let Ok(window) = mr.window(va, len, false) {
                        return Payload::Window {
                            window,
                            base: sge.addr,
                        };
                    }
                }
            }
        }
        Payload::Gather { sges, pd }
    }

    /// Our address of message byte `off`, if the payload is one window
    /// onto an MR (checked when it opened: the message's bytes are there).
    pub(crate) fn va(&self, off: u64) -> Option<u64> {
        match self {
            Payload::Window { base, .. } => base.checked_add(off),
            _ => None,
        }
    }

    /// Copy message bytes `[off, off+out.len())` into `out`.
    pub(crate) fn fill(&mut self, off: u64, out: &mut [u8]) -> Result<(), WcStatus> {
        match self {
            Payload::Inline(d) => {
                out.copy_from_slice(&d[off as usize..off as usize + out.len()]);
                Ok(())
            }
            Payload::Window { window, base } => window
                .window
                .read(*base + off, out)
                .map_err(|_| WcStatus::LocProtErr),
            Payload::Gather { sges, pd } => gather(sges, *pd, off, out),
        }
    }
}
