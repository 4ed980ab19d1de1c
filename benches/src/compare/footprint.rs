//! Device memory of implicit ODP: the per-page state of an implicit umem
//! (the object behind a soft-rdma implicit MR, `reg_mr(0, u64::MAX,
//! ON_DEMAND)`) after the device faulted `touched` bytes spread evenly over a
//! 1 TiB reservation — the address-space picture of "implicit ODP over
//! 1 TiB, 1 GiB touched". The same figure `benches/benches/odp.rs` prints
//! (`ImplicitUmem::footprint`), here in 2 MiB faults spread over the TiB.

use odp::umem::CHILD_SIZE;
use odp::{Access, ImplicitUmem, Mm, MmConfig, Mode};

const TIB: u64 = 1 << 40;

/// A 1 TiB reservation (and the fresh memory of `baseline::populate_write`).
pub(crate) mod reserve {
    /// An `odp::Mapping`, with its address at hand.
    pub struct Reservation {
        pub addr: u64,
        map: odp::Mapping,
    }

    impl Reservation {
        /// `len` bytes of private anonymous read/write memory with no
        /// swap/commit accounting (`MAP_NORESERVE`): untouched pages cost
        /// nothing.
        pub fn new(len: usize) -> Result<Reservation, String> {
            let map = odp::MapOptions::new()
                .noreserve()
                .map(len)
                .map_err(|e| format!("mmap {len} bytes: {e}"))?;
            Ok(Reservation {
                addr: map.addr() as u64,
                map,
            })
        }

        /// `madvise(MADV_HUGEPAGE)`: let the kernel back it with 2 MiB pages.
        pub fn advise_huge(&self) -> Result<(), String> {
            self.map
                .advise_huge()
                .map_err(|e| format!("MADV_HUGEPAGE: {e}"))
        }
    }
}

/// Result: bytes of per-page state, live children, bytes touched.
pub struct Footprint {
    pub bytes: usize,
    pub children: usize,
    pub touched: u64,
}

/// Fault `touched` bytes (a multiple of 2 MiB) spread evenly over 1 TiB
/// through one implicit umem; its per-page state afterwards.
pub fn implicit_1tib(touched: u64) -> Result<Footprint, String> {
    let mm = Mm::new(MmConfig::default());
    // One extra child of slack to align the base to a child boundary.
    let r = reserve::Reservation::new((TIB + CHILD_SIZE) as usize)?;
    let base = r.addr.next_multiple_of(CHILD_SIZE);
    let chunks = (touched / CHILD_SIZE).max(1);
    let stride = (TIB / chunks) & !(CHILD_SIZE - 1);
    let imp = ImplicitUmem::new(&mm, true);
    for c in 0..chunks {
        let va = base + c * stride;
        imp.with_map(va, CHILD_SIZE, Access::Write, Mode::Fault, |_| Ok(()))
            .map_err(|e| format!("implicit fault at {va:#x}: {e:?}"))?;
    }
    let fp = Footprint {
        bytes: imp.footprint(),
        children: imp.children(),
        touched: chunks * CHILD_SIZE,
    };
    drop(imp);
    drop(r);
    Ok(fp)
}
