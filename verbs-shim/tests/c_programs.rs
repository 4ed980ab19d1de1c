//! C programs of our own (`tests/c/*.c`), compiled against the installed
//! <infiniband/verbs.h> and run on the shim: what no Debian program
//! exercises (the extended CQ and QP APIs, XRC's domain and QP calls).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_support::procs::{all_text, finish, text};
use test_support::serial::serial;

/// Compile `tests/c/NAME.c` (linked with -libverbs: the installed library's
/// symbol versions, which ours exports too) into a temporary directory.
fn compile(name: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("verbs-shim-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(["-libverbs", "-pthread"])
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{cc} failed on {} (needs libibverbs-dev):\n{}",
        src.display(),
        text(&out.stderr)
    );
    exe
}

/// Run a compiled program on the shim (deadline 60 s); it must exit 0.
fn run(exe: &PathBuf) -> String {
    let child = Command::new(exe)
        .env("LD_LIBRARY_PATH", lib_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = finish(&exe.display().to_string(), child, Duration::from_secs(60));
    let all = all_text(&out);
    assert!(
        out.status.success(),
        "{}: {}\n{all}",
        exe.display(),
        out.status
    );
    all
}

#[test]
fn cq_ex_and_qp_ex_end_to_end() {
    let exe = compile("ex_api");
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK cq_ex_create",
        "OK qp_ex_create",
        "OK wr_send wr_send_imm wr_set_sge wr_set_inline_data wr_set_sge_list",
        "OK wr_rdma_write wr_rdma_write_imm wr_rdma_read wr_atomic_fetch_add wr_atomic_cmp_swp wr_set_inline_data_list ibv_poll_cq",
        "OK wr_abort wr_complete_errors unsignaled",
        "OK wr_start_from_two_threads",
        "OK wr_set_ud_addr",
        "OK wr_send_inv",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn limits_are_refused_with_the_providers_errnos() {
    let exe = compile("limits");
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK create_cq max_cqe",
        "OK create_qp caps",
        "OK modify_qp rd_atomic",
        "OK post_recv past the queue",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn busy_objects_hostile_num_sge_and_foreign_objects() {
    let exe = compile("lifetimes");
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK busy objects",
        "OK num_sge checked first",
        "OK another context's objects",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn open_device_out_of_descriptors_is_null_with_errno() {
    let exe = compile("open_fails");
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK open without descriptors",
        "OK open afterwards",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn xrc_domains_srqs_and_qps() {
    let exe = compile("xrc");
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK open_xrcd",
        "OK create_srq_ex get_srq_num",
        "OK create_qp_ex open_qp",
        "OK receives refused",
        "OK close_xrcd busy",
        "OK traffic",
        "OK teardown",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}
