//! Pinned MRs keep to their pages (issue 19, finding 9): an application
//! that unmaps a registered (non-ODP) buffer and gets other memory mapped
//! there must not see a peer's RDMA WRITE land in it. As on hardware the
//! WRITE completes (its bytes go to the orphaned pages); a READ of them
//! gives zeros here (hardware: the old contents).

use soft_rdma::transport::Hub;
use soft_rdma::verbs::*;
use std::sync::Arc;
use test_support::verbs::{all_access, connect, signaled, wait, Buf, Node};

const PAGE: usize = 4096;
const CANARY: u8 = 0xca;

fn hub_node(hub: &Arc<Hub>, last: u8) -> Node {
    Node::on_hub(hub, ([127, 34, 0, last], 4791).into(), 256)
}

#[test]
fn a_remote_write_to_an_unmapped_pinned_buffer_spares_the_new_mapping() {
    let hub = Hub::new();
    let (a, b) = (hub_node(&hub, 1), hub_node(&hub, 2));
    let (qa, _qb) = connect(&a, &b, QpType::Rc);
    let len = 4 * PAGE;
    let src = Buf::new(len, |i| (i * 7 + 1) as u8 | 1);
    let mra =
        a.pd.reg_mr(src.addr(), len as u64, Access::LOCAL_WRITE)
            .unwrap();

    let mut target = odp::Mapping::anon(len).unwrap();
    let addr = target.addr() as u64;
    let mrb = b.pd.reg_mr(addr, len as u64, all_access()).unwrap();
    // The owner frees pages 1 and 2 while still registered, and new memory
    // (malloc's, say) is mapped there and filled.
    // SAFETY: no reference into the mapping is live; replace maps over the
    // range in one step, so nobody else can map there meanwhile.
    unsafe { target.replace(PAGE, 2 * PAGE, odp::Prot::ReadWrite) }.unwrap();
    // SAFETY: the mapping is whole and writable; the device does not write
    // it now (nothing is posted).
    let fresh = unsafe { target.as_mut_slice() };
    fresh[PAGE..3 * PAGE].fill(CANARY);

    let write = |wr_id, off: usize, n: usize| {
        qa.post_send(&[SendWr {
            wr_id,
            sg_list: &[src.sge(&mra, off, n)],
            op: SendOp::Write {
                remote_addr: addr + off as u64,
                rkey: mrb.rkey(),
            },
            flags: signaled(),
            ud: None,
        }])
        .unwrap();
        wait(&a.cq, 1)[0].status
    };
    // The whole buffer, and a WRITE wholly inside the orphaned pages.
    assert_eq!(write(1, 0, len), WcStatus::Success);
    assert_eq!(write(2, PAGE + 8, 100), WcStatus::Success);

    // SAFETY: the mapping is whole and readable; the WRITEs completed (and
    // their responder ran before the ACK), nothing else is posted.
    let mem = unsafe { target.as_slice() };
    assert!(
        mem[PAGE..3 * PAGE].iter().all(|&b| b == CANARY),
        "a remote WRITE reached the memory mapped over the unmapped buffer"
    );
    assert_eq!(mem[..PAGE], src.0[..PAGE], "the live pages got the data");
    assert_eq!(mem[3 * PAGE..], src.0[3 * PAGE..]);

    // A READ across them: zeros from the orphaned pages.
    let back = Buf::new(len, |_| 0xff);
    let mrr = a.pd.reg_mr(back.addr(), len as u64, all_access()).unwrap();
    qa.post_send(&[SendWr {
        wr_id: 3,
        sg_list: &[back.sge(&mrr, 0, len)],
        op: SendOp::Read {
            remote_addr: addr,
            rkey: mrb.rkey(),
        },
        flags: signaled(),
        ud: None,
    }])
    .unwrap();
    assert_eq!(wait(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(back.0[..PAGE], src.0[..PAGE]);
    assert!(back.0[PAGE..3 * PAGE].iter().all(|&b| b == 0));
    assert_eq!(back.0[3 * PAGE..], src.0[3 * PAGE..]);
    let orphaned = mrb.odp_counters().orphan_accesses;
    assert!(orphaned >= 3);
    // The device's table counts them too, live and after deregistration.
    assert_eq!(b.dev.stats().odp_orphan_accesses, orphaned);
    drop(mrb);
    assert_eq!(b.dev.stats().odp_orphan_accesses, orphaned);
}
