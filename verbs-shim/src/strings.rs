//! The enum-to-string helpers and the static-rate conversions: pure
//! functions of the verbs ABI, returning the strings the real library prints.

use crate::ffi::*;

/// Static NUL-terminated strings (so the returned pointers live forever).
macro_rules! cstrs {
    ($($s:literal),* $(,)?) => { [$(concat!($s, "\0")),*] };
}

fn pick(table: &'static [&'static str], i: u32) -> *const c_char {
    table
        .get(i as usize)
        .copied()
        .unwrap_or("unknown\0")
        .as_ptr() as *const c_char
}

static NODE_TYPES: [&str; 7] = cstrs![
    "InfiniBand channel adapter",
    "InfiniBand switch",
    "InfiniBand router",
    "iWARP NIC",
    "usNIC",
    "usNIC UDP",
    "unspecified"
];
static PORT_STATES: [&str; 6] = cstrs![
    "no state change (NOP)",
    "down",
    "init",
    "armed",
    "active",
    "active defer"
];
static EVENT_TYPES: [&str; 20] = cstrs![
    "CQ error",
    "local work queue catastrophic error",
    "invalid request local work queue error",
    "local access violation work queue error",
    "communication established",
    "send queue drained",
    "path migrated",
    "path migration request error",
    "local catastrophic error",
    "port active",
    "port error",
    "LID change",
    "P_Key change",
    "SM change",
    "SRQ catastrophic error",
    "SRQ limit reached",
    "last WQE reached",
    "client reregistration",
    "GID table change",
    "WQ fatal",
];
static WC_STATUSES: [&str; 24] = cstrs![
    "success",
    "local length error",
    "local QP operation error",
    "local EE context operation error",
    "local protection error",
    "Work Request Flushed Error",
    "memory management operation error",
    "bad response error",
    "local access error",
    "remote invalid request error",
    "remote access error",
    "remote operation error",
    "transport retry counter exceeded",
    "RNR retry counter exceeded",
    "local RDD violation error",
    "remote invalid RD request",
    "aborted error",
    "invalid EE context number",
    "invalid EE context state",
    "fatal error",
    "response timeout error",
    "general error",
    "TM error",
    "TM software rendezvous",
];

pub extern "C" fn shim_ibv_node_type_str(t: ibv_node_type) -> *const c_char {
    // IBV_NODE_CA is 1; below it (IBV_NODE_UNKNOWN) and beyond the table are "unknown".
    if t < IBV_NODE_CA {
        return pick(&[], 0);
    }
    pick(&NODE_TYPES, (t - IBV_NODE_CA) as u32)
}

pub extern "C" fn shim_ibv_port_state_str(s: ibv_port_state) -> *const c_char {
    pick(&PORT_STATES, s)
}

pub extern "C" fn shim_ibv_event_type_str(e: ibv_event_type) -> *const c_char {
    pick(&EVENT_TYPES, e)
}

pub extern "C" fn shim_ibv_wc_status_str(s: ibv_wc_status) -> *const c_char {
    pick(&WC_STATUSES, s)
}

/// (rate, multiple of 2.5 Gb/s or -1, Mb/s)
const RATES: &[(ibv_rate, c_int, c_int)] = &[
    (IBV_RATE_2_5_GBPS, 1, 2500),
    (IBV_RATE_5_GBPS, 2, 5000),
    (IBV_RATE_10_GBPS, 4, 10000),
    (IBV_RATE_20_GBPS, 8, 20000),
    (IBV_RATE_30_GBPS, 12, 30000),
    (IBV_RATE_40_GBPS, 16, 40000),
    (IBV_RATE_60_GBPS, 24, 60000),
    (IBV_RATE_80_GBPS, 32, 80000),
    (IBV_RATE_120_GBPS, 48, 120000),
    (IBV_RATE_14_GBPS, -1, 14062),
    (IBV_RATE_56_GBPS, -1, 56250),
    (IBV_RATE_112_GBPS, -1, 112500),
    (IBV_RATE_168_GBPS, -1, 168750),
    (IBV_RATE_25_GBPS, -1, 25781),
    (IBV_RATE_100_GBPS, -1, 103125),
    (IBV_RATE_200_GBPS, -1, 206250),
    (IBV_RATE_300_GBPS, -1, 309375),
    (IBV_RATE_28_GBPS, 11, 28125),
    (IBV_RATE_50_GBPS, 20, 53125),
    (IBV_RATE_400_GBPS, 160, 425000),
    (IBV_RATE_600_GBPS, 240, 637500),
];

pub extern "C" fn shim_ibv_rate_to_mult(rate: ibv_rate) -> c_int {
    RATES.iter().find(|r| r.0 == rate).map_or(-1, |r| r.1)
}

pub extern "C" fn shim_mult_to_ibv_rate(mult: c_int) -> ibv_rate {
    RATES
        .iter()
        .find(|r| r.1 == mult && mult > 0)
        .map_or(IBV_RATE_MAX, |r| r.0)
}

pub extern "C" fn shim_ibv_rate_to_mbps(rate: ibv_rate) -> c_int {
    RATES.iter().find(|r| r.0 == rate).map_or(-1, |r| r.2)
}

pub extern "C" fn shim_mbps_to_ibv_rate(mbps: c_int) -> ibv_rate {
    RATES
        .iter()
        .find(|r| r.2 == mbps)
        .map_or(IBV_RATE_MAX, |r| r.0)
}
