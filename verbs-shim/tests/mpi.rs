//! Open MPI (Debian `openmpi-bin` 4.1) over UCX over the soft device, every
//! byte checked: `tests/c/mpi_data.c` (ping-pong 1 B–4 MiB, Bcast,
//! Allreduce, Alltoall, Barrier, a ring of Isend/Irecv) in two ranks, `--mca
//! pml ucx` with UCX on `rc_verbs` only and no btl but `self`, on one host
//! and between two network-namespace hosts.
//!
//! `UCX_TLS=rc_verbs,ud_verbs:aux,self`: RC endpoints are wired up through
//! an auxiliary transport that can reach an interface (`ud_verbs`, only for
//! that); with `rc_verbs,self` alone UCX's endpoint creation fails ("no
//! auxiliary transport") whatever the device — UCX's `rc` alias is the same
//! set. That the data crossed our device, and not shared memory, each rank
//! shows at the end: it prints the bytes it sent and its device's published
//! counters (`softrdma stats PID`), and its packets must be able to carry
//! them (at most 4096 bytes each).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;
use test_support::net::{two_hosts, TwoHosts};
use test_support::procs::{all_text, finish};
use test_support::serial::serial;
use test_support::{shim, tools};

/// The ranks' transports (see the module's comment).
const TLS: &str = "rc_verbs,ud_verbs:aux,self";
/// The largest payload a RoCE packet carries (IB MTU 4096).
const MAX_PAYLOAD: u64 = 4096;
/// Less than any rank of `mpi_data` sends (55–60 MiB each).
const MIN_SENT: u64 = 50 << 20;
/// The steps `mpi_data` reports (rank 0, each after a barrier).
const STEPS: [&str; 6] = [
    "pingpong",
    "bcast",
    "allreduce",
    "alltoall",
    "barrier",
    "ring",
];

/// `softrdma` beside the shim (built with the face, once per test process).
fn softrdma() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = lib_dir();
        shim::ensure_built(dir, true);
        dir.join("softrdma")
    })
}

/// `tests/c/mpi_data.c` compiled with `mpicc` (Debian `libopenmpi-dev`) in
/// `dir`; None (skipped, unless tools are required) without Open MPI.
fn mpi_data(dir: &Path) -> Option<PathBuf> {
    if !tools::have("mpicc") || !tools::have("mpirun") {
        return None;
    }
    let c = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let exe = dir.join("mpi_data");
    let out = Command::new("mpicc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-I"])
        .arg(&c)
        .arg("-o")
        .arg(&exe)
        .arg(c.join("mpi_data.c"))
        .output()
        .expect("run mpicc");
    assert!(out.status.success(), "mpicc: {}", all_text(&out));
    Some(exe)
}

/// A scratch directory of this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("verbs-shim-mpi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `softrdma run -- mpirun … mpi_data softrdma`: two ranks, pml ucx over
/// [`TLS`] on our device, no btl but `self`; `launch` adds mpirun's
/// placement arguments. The shim and the face reach the ranks through
/// `-x` (mpirun's daemons start them with its environment plus those).
/// With `host`, mpirun runs in network namespace `ns` with the device on
/// address `addr` (`ip netns exec` keeps the environment).
fn mpirun(exe: &Path, host: Option<(&str, &str)>, launch: &[&str], odp: bool) -> Command {
    let dir = softrdma().parent().unwrap();
    let mut c = shim::run_on(dir, host, "mpirun", &["--allow-run-as-root", "-np", "2"]);
    // mpirun ends a job that hangs (and its ranks) itself.
    c.args(["--timeout", "240", "--tag-output"]).args(launch);
    c.args(["--mca", "pml", "ucx", "--mca", "btl", "self"]);
    c.args(["-x", "LD_LIBRARY_PATH", "-x", "LD_PRELOAD"]);
    c.args(["-x", &format!("UCX_TLS={TLS}")]);
    c.args(["-x", "UCX_NET_DEVICES=softrdma0:1"]);
    if odp {
        // Implicit ODP, the only registration method: the device must have it.
        c.args(["-x", "UCX_IB_REG_METHODS=odp"]);
    }
    c.arg(exe).arg(softrdma());
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// Rank `r`'s lines (`--tag-output`: `[JOB,RANK]<stdout>:`), without the tag.
fn rank_lines(all: &str, r: u32) -> Vec<&str> {
    let tag = format!(",{r}]<");
    all.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let at = rest.find(&tag)?;
            rest[at..].split_once(">:").map(|(_, t)| t)
        })
        .collect()
}

/// The number after word `key` on the first of `lines` starting with
/// `prefix` that has it.
fn figure(lines: &[&str], prefix: &str, key: &str) -> Option<u64> {
    lines
        .iter()
        .filter(|l| l.starts_with(prefix))
        .find_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != key);
            w.nth(1)?.parse().ok()
        })
}

/// Judge one run. Every step passed and each rank's device sent packets
/// enough for the bytes the rank sent (and, with `odp`, faulted pages in),
/// from the address in `addrs` (one per
/// rank, any order) when given. The job must end well — except with
/// implicit ODP for UCX 1.13.1's own crash in `uct_ib_md_close` at
/// `MPI_Finalize` (see `ucx.rs`' `ended_well`): a rank may die of it after
/// its checks and counters, and of nothing else.
fn judge(out: &Output, odp: bool, addrs: Option<&[String; 2]>) {
    let all = all_text(out);
    for s in STEPS {
        assert!(all.contains(&format!("OK {s}\n")), "no OK {s}:\n{all}");
    }
    let mut seen = vec![];
    for r in 0..2 {
        let lines = rank_lines(&all, r);
        let sent = figure(&lines, "SENT ", "bytes");
        let sent = sent.unwrap_or_else(|| panic!("rank {r} sent what?\n{all}"));
        let pkts = figure(&lines, "STATS ", "sent_pkts");
        let pkts = pkts.unwrap_or_else(|| panic!("rank {r}: no counters\n{all}"));
        assert!(
            sent > MIN_SENT && pkts * MAX_PAYLOAD >= sent,
            "rank {r} sent {sent} bytes in {pkts} packets of its device:\n{all}"
        );
        if odp {
            // UCX's implicit-ODP key served the data: pages were faulted in.
            let faulted = figure(&lines, "STATS ", "odp_pages_faulted");
            assert!(faulted > Some(0), "rank {r}: no ODP faults\n{all}");
        }
        let head = lines
            .iter()
            .find(|l| l.contains("STATS rank") && l.contains("(pid "));
        let head = head.unwrap_or_else(|| panic!("rank {r}: no device\n{all}"));
        seen.push(head.to_string());
        let crashed = lines.iter().any(|l| l.contains("Caught signal"));
        let ucx_bug = lines.iter().any(|l| l.contains("(uct_ib_md_close+"));
        assert!(!crashed || (odp && ucx_bug), "rank {r} crashed:\n{all}");
    }
    if let Some(addrs) = addrs {
        for a in addrs {
            let at = format!(", {a}:");
            assert!(
                seen.iter().filter(|h| h.contains(&at)).count() == 1,
                "one rank's device on {a}: {seen:?}"
            );
        }
    }
    let clean = out.status.success() && all.contains("OK done\n");
    let ucx_bug = odp && all.contains("(uct_ib_md_close+");
    assert!(clean || ucx_bug, "mpirun: {}\n{all}", out.status);
}

fn one_host(odp: bool) {
    let dir = scratch(if odp { "odp" } else { "pinned" });
    let Some(exe) = mpi_data(&dir) else { return };
    let _g = serial();
    let child = mpirun(&exe, None, &["--oversubscribe"], odp)
        .spawn()
        .expect("softrdma run mpirun");
    let out = finish("mpirun", child, Duration::from_secs(300));
    judge(&out, odp, None);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn open_mpi_over_ucx_rc_verbs_moves_every_byte() {
    one_host(false);
}

#[test]
fn open_mpi_over_ucx_rc_verbs_with_implicit_odp() {
    one_host(true);
}

/// mpirun's launch agent (instead of ssh): `agent HOST COMMAND…` runs the
/// command line on the namespace host whose address HOST is, with its
/// device on that address.
fn launch_agent(dir: &Path, hosts: &TwoHosts) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut arms = String::new();
    for k in 0..2 {
        arms.push_str(&format!("{}) ns={} ;;\n", hosts.addr[k], hosts.ns[k]));
    }
    let script = format!(
        "#!/bin/sh\nhost=$1; shift\ncase $host in\n{arms}\
         *) echo \"agent: no host $host\" >&2; exit 1 ;;\nesac\n\
         exec ip netns exec \"$ns\" env SOFTRDMA_ADDR=\"$host\" /bin/sh -c \"$*\"\n"
    );
    let path = dir.join("agent.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn open_mpi_between_two_network_namespace_hosts() {
    let dir = scratch("hosts");
    let Some(exe) = mpi_data(&dir) else { return };
    let Some(hosts) = two_hosts("mpi", [10, 79, 2]) else {
        return;
    };
    let _g = serial();
    let hostfile = dir.join("hosts");
    let list: String = hosts
        .addr
        .iter()
        .map(|a| format!("{a} slots=1\n"))
        .collect();
    std::fs::write(&hostfile, list).unwrap();
    let agent = launch_agent(&dir, &hosts);
    let (hostfile, agent) = (hostfile.to_str().unwrap(), agent.to_str().unwrap());
    // mpirun runs on the first host (the rank there is its own child); the
    // daemon on the other connects back over the veth (TCP).
    let launch = [
        "--hostfile",
        hostfile,
        "--map-by",
        "node",
        "--mca",
        "plm_rsh_agent",
        agent,
        "--mca",
        "plm_rsh_no_tree_spawn",
        "1",
        "--mca",
        "oob_tcp_if_include",
        "10.79.2.0/24",
        // Each "host" binds its rank to its first core, and both are this
        // machine's core 0: the polling rank then starved the other (this
        // kernel left a runnable rank unscheduled for minutes).
        "--bind-to",
        "none",
    ];
    let first = Some((hosts.ns[0].as_str(), hosts.addr[0].as_str()));
    let child = mpirun(&exe, first, &launch, false)
        .spawn()
        .expect("ip netns exec softrdma run mpirun");
    let out = finish("mpirun", child, Duration::from_secs(300));
    judge(&out, false, Some(&hosts.addr));
    let _ = std::fs::remove_dir_all(dir);
}
