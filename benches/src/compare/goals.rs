//! The goals: each a ratio of two measures (or of a measure and a
//! constant) against a target. A missed goal is reported, never fatal.

use super::{Results, MIB};

/// A goal: `num / den` compared with `target`.
pub(super) struct Goal {
    pub(super) what: &'static str,
    num: &'static str,
    den: Den,
    at_least: bool,
    target: f64,
}

enum Den {
    Measure(&'static str),
    Const(f64),
}

pub(super) const GOALS: &[Goal] = &[
    Goal {
        what: "between hosts, MTU 9000: softrdma WRITE 64 KiB vs UCX tcp tag_bw",
        num: "hosts_wbw_9000",
        den: Den::Measure("hosts_ucx_bw_9000"),
        at_least: true,
        target: 1.5,
    },
    Goal {
        what: "between hosts, MTU 1500: softrdma WRITE 64 KiB vs UCX tcp tag_bw",
        num: "hosts_wbw_1500",
        den: Den::Measure("hosts_ucx_bw_1500"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "between hosts, MTU 9000: softrdma READ 64 KiB vs UCX tcp tag_bw",
        num: "hosts_rbw_9000",
        den: Den::Measure("hosts_ucx_bw_9000"),
        at_least: true,
        target: 1.5,
    },
    Goal {
        what: "between hosts, MTU 1500: softrdma READ 64 KiB vs UCX tcp tag_bw",
        num: "hosts_rbw_1500",
        den: Den::Measure("hosts_ucx_bw_1500"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "between hosts, MTU 9000: softrdma SEND 64 KiB vs UCX tcp tag_bw",
        num: "hosts_sbw_9000",
        den: Den::Measure("hosts_ucx_bw_9000"),
        at_least: true,
        target: 1.5,
    },
    Goal {
        what: "between hosts, MTU 1500: softrdma SEND 64 KiB vs UCX tcp tag_bw",
        num: "hosts_sbw_1500",
        den: Den::Measure("hosts_ucx_bw_1500"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "between hosts, MTU 9000: softrdma WRITE 64 KiB vs iperf3 TCP",
        num: "hosts_wbw_9000",
        den: Den::Measure("hosts_tcp_9000"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "between hosts, MTU 1500: softrdma write_lat 2 B vs UCX tcp tag_lat",
        num: "hosts_wlat_1500",
        den: Den::Measure("hosts_ucx_lat_1500"),
        at_least: false,
        target: 1.0,
    },
    Goal {
        what: "ib_write_bw 64 KiB RC --odp vs TCP loopback stream",
        num: "wbw_odp",
        den: Den::Measure("tcp_64k"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "(stretch) ib_write_bw 64 KiB RC --odp vs memcpy",
        num: "wbw_odp",
        den: Den::Measure("memcpy"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "ib_write_bw 64 KiB: ODP vs pinned",
        num: "wbw_odp",
        den: Den::Measure("wbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "(also) ib_read_bw 64 KiB: ODP vs pinned",
        num: "rbw_odp",
        den: Den::Measure("rbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "(also) ib_send_bw 64 KiB: ODP vs pinned",
        num: "sbw_odp",
        den: Den::Measure("sbw_pinned"),
        at_least: true,
        target: 0.95,
    },
    Goal {
        what: "write_bw over a fresh ODP buffer vs steady state, 4 KiB pages",
        num: "fresh",
        den: Den::Measure("steady"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "write_bw over a fresh ODP buffer vs steady state, huge pages advised",
        num: "fresh_thp",
        den: Den::Measure("steady_thp"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "(also) the machine: populating fresh 4 KiB memory alone vs steady state (below 1, a fresh 4 KiB run cannot reach 0.5)",
        num: "populate",
        den: Den::Measure("steady"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "(also) write_bw over a fresh ODP buffer vs populating fresh memory alone, 4 KiB",
        num: "fresh",
        den: Den::Measure("populate"),
        at_least: true,
        target: 0.5,
    },
    Goal {
        what: "ib_write_lat 2 B t_typical vs UDP one-way",
        num: "wlat",
        den: Den::Measure("udp_oneway"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "(also) ib_write_lat 2 B vs the hand-off UDP one-way (its floor here)",
        num: "wlat",
        den: Den::Measure("udp_oneway_handoff"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "(also) ib_send_lat 2 B t_typical vs UDP one-way",
        num: "slat",
        den: Den::Measure("udp_oneway"),
        at_least: false,
        target: 1.2,
    },
    Goal {
        what: "ib_write_bw 64 B msg rate vs UDP 64 B datagram rate",
        num: "wbw64_rate",
        den: Den::Measure("udp64_rate"),
        at_least: true,
        target: 0.8,
    },
    Goal {
        what: "ib_write_bw 64 KiB -q 16 vs -q 1",
        num: "wbw_q16",
        den: Den::Measure("wbw_odp"),
        at_least: true,
        target: 0.9,
    },
    Goal {
        what: "implicit ODP, 1 TiB space, 1 GiB touched: per-page state vs 1 MiB",
        num: "implicit_fp",
        den: Den::Const(MIB),
        at_least: false,
        target: 1.0,
    },
    Goal {
        what: "one host: ib_write_lat 2 B t_typical vs 1.0 usec",
        num: "wlat",
        den: Den::Const(1.0),
        at_least: false,
        target: 1.0,
    },
    Goal {
        what: "one host: ib_write_bw 64 B message rate vs 5 Mpps",
        num: "wbw64_rate",
        den: Den::Const(5.0),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "one host: ib_write_bw 64 KiB RC --odp vs UCX posix,cma tag_bw",
        num: "wbw_odp",
        den: Den::Measure("ucx_bw_sm_1h"),
        at_least: true,
        target: 1.0,
    },
    Goal {
        what: "one host: ib_write_bw 64 KiB RC --odp vs memcpy",
        num: "wbw_odp",
        den: Den::Measure("memcpy"),
        at_least: true,
        target: 0.8,
    },
    Goal {
        what: "RC WRITE 64 KiB dropping 1 packet in 1 000 vs no loss (embedded, --odp --verify)",
        num: "loss_0001",
        den: Den::Measure("loss_none"),
        at_least: true,
        target: 0.8,
    },
    Goal {
        what: "RC WRITE 64 KiB dropping 1 packet in 100 vs no loss (embedded, --odp --verify)",
        num: "loss_001",
        den: Den::Measure("loss_none"),
        at_least: true,
        target: 0.3,
    },
    Goal {
        what: "write_bw over a fresh 1 GiB ODP buffer vs populating fresh memory alone, 4 KiB",
        num: "fresh",
        den: Den::Measure("populate"),
        at_least: true,
        target: 0.9,
    },
    Goal {
        what: "ib_write_bw 64 KiB RC --odp: 1000 QPs vs 1",
        num: "wbw_q1000",
        den: Den::Measure("wbw_odp"),
        at_least: true,
        target: 0.9,
    },
    Goal {
        what: "the README's main job embedded vs the same run as two processes",
        num: "main_embedded",
        den: Den::Measure("main_2proc"),
        at_least: true,
        target: 0.9,
    },
    Goal {
        what: "rdma_cm: 1000 connections set up at once, per second, vs 1000/s",
        num: "cm_connect",
        den: Den::Const(1000.0),
        at_least: true,
        target: 1.0,
    },
];

impl Goal {
    /// Whether every measure behind the goal was run (failed or not).
    fn measured(&self, r: &Results) -> bool {
        let ran = |k: &str| r.rows.iter().any(|m| m.key == k);
        ran(self.num) && !matches!(self.den, Den::Measure(k) if !ran(k))
    }

    /// The goal's row: the ratio, the target, and whether it is met (n/a
    /// when a measure behind it failed).
    pub(super) fn row(&self, r: &Results) -> (String, String, &'static str) {
        let den = match self.den {
            Den::Measure(k) => r.get(k),
            Den::Const(c) => Some(c),
        };
        let (ratio, met) = match (r.get(self.num), den) {
            (Some(a), Some(b)) if b > 0.0 => {
                let x = a / b;
                let ok = if self.at_least {
                    x >= self.target
                } else {
                    x <= self.target
                };
                (format!("{x:.2}x"), if ok { "PASS" } else { "FAIL" })
            }
            _ if !self.measured(r) => ("n/a".into(), "n/a (not run: --only)"),
            _ => ("n/a".into(), "n/a (a run failed)"),
        };
        let target = format!(
            "{} {:.2}x",
            if self.at_least { ">=" } else { "<=" },
            self.target
        );
        (ratio, target, met)
    }
}
