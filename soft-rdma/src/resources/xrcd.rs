//! XRC: the device's table of XRC SRQs by number, which a target QP
//! consults for each request's XRCETH, and what makes an SRQ an XRC SRQ
//! (its domain and its CQ).

use super::cq::CqShared;
use super::srq::SrqShared;
use crate::sync::{Level, OrderedRwLock};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// What an XRC SRQ has besides its queue: the XRC domain whose target QPs
/// may deliver into it, and the CQ that receives their completions.
pub(crate) struct XrcSrq {
    pub(crate) xrcd: u32,
    pub(crate) cq: Arc<CqShared>,
}

/// The device's XRC SRQs by SRQ number. Weak: an SRQ leaves with its last
/// handle (and is removed from the table by [`XrcSrqTable::remove`]).
pub(crate) struct XrcSrqTable {
    srqs: OrderedRwLock<HashMap<u32, Weak<SrqShared>>>,
}

impl Default for XrcSrqTable {
    fn default() -> XrcSrqTable {
        XrcSrqTable {
            srqs: OrderedRwLock::new(Level::XrcSrqs, HashMap::new()),
        }
    }
}

impl XrcSrqTable {
    /// Enter an XRC SRQ under its number. Locks: the table's.
    pub(crate) fn insert(&self, srq: &Arc<SrqShared>) {
        self.srqs.write().insert(srq.id(), Arc::downgrade(srq));
    }

    /// Take an SRQ out (it is being destroyed). Locks: the table's.
    pub(crate) fn remove(&self, srqn: u32) {
        self.srqs.write().remove(&srqn);
    }

    /// The XRC SRQ numbered `srqn` if it belongs to XRC domain `xrcd`:
    /// another domain's SRQ, a basic SRQ (never in the table) or none at
    /// all is `None`. Locks: the table's, shared (a QP lock may be held).
    pub(crate) fn get(&self, srqn: u32, xrcd: u32) -> Option<Arc<SrqShared>> {
        let srq = self.srqs.read().get(&srqn)?.upgrade()?;
        (srq.xrc().map(|x| x.xrcd) == Some(xrcd)).then_some(srq)
    }
}
