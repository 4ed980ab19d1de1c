//! C programs of our own (`tests/c/*.c`), compiled against the installed
//! <infiniband/verbs.h> and run on the shim: what no Debian program
//! exercises (the extended CQ and QP APIs, XRC's domain and QP calls).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_support::procs::{all_text, finish};
use test_support::serial::serial;

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
    let Some(exe) = compile("ex_api") else {
        return;
    };
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
    let Some(exe) = compile("limits") else {
        return;
    };
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
    let Some(exe) = compile("lifetimes") else {
        return;
    };
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
fn memory_windows_through_the_inline_verbs() {
    let Some(exe) = compile("mw") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK device caps",
        "OK alloc_mw wrong type",
        "OK ibv_bind_mw type 1",
        "OK ibv_bind_mw checks, dereg_mr EBUSY",
        "OK IBV_WR_BIND_MW type 2, SEND_WITH_INV",
        "OK IBV_WR_LOCAL_INV",
        "OK dealloc_mw",
        "OK qp_ex builders",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn open_device_out_of_descriptors_is_null_with_errno() {
    let Some(exe) = compile("open_fails") else {
        return;
    };
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

/// ATOMIC WRITE and FLUSH through `ibv_wr_atomic_write` / `ibv_wr_flush`
/// (`tests/c/placement.c`). rdma-core 44's header predates `ibv_wr_flush`:
/// the program then declares rdma-core 45's ABI for it itself.
#[test]
fn atomic_write_and_flush_through_the_qp_ex_builders() {
    let header = std::fs::read_to_string("/usr/include/infiniband/verbs.h").unwrap_or_default();
    let defines: &[&str] = if header.contains("ibv_wr_flush") {
        &["-DHAVE_IBV_WR_FLUSH"]
    } else {
        &[]
    };
    let Some(exe) = compile_with("placement", defines) else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK device caps",
        "OK reg_mr flush access",
        "OK qp_ex builders",
        "OK wr_atomic_write wr_flush",
        "OK wr_flush length",
        "OK flush type not allowed",
        "OK misaligned atomic write",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn forked_children_get_devices_of_their_own() {
    let Some(exe) = compile("fork") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK the parent's QPs talk",
        "OK the parent's objects are ENODEV in a child",
        "OK a child's QP talks to another child's",
        "OK the data arrived",
        "OK both children exited",
        "OK the parent's traffic after the children",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn several_contexts_talk_and_refuse_each_others_objects() {
    let Some(exe) = compile("contexts") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK two contexts",
        "OK QPs of two contexts talk",
        "OK another context's objects are EINVAL",
        "OK another context's AH is EINVAL",
        "OK another context's MR is a protection error",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn import_through_the_command_descriptor() {
    let Some(exe) = compile("import") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK import device, PD, MR",
        "OK traffic through imported objects",
        "OK bad imports",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn rereg_resize_and_gid_queries() {
    let Some(exe) = compile("rereg_resize") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK rereg bad flows",
        "OK rereg translation",
        "OK rereg PD",
        "OK resize",
        "OK gids",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn parent_domains_and_their_allocators() {
    let Some(exe) = compile("parent_domain") else {
        return;
    };
    let _g = serial();
    let out = run(&exe);
    let _ = std::fs::remove_file(&exe);
    for step in [
        "OK bad attributes",
        "OK allocator places QP, SRQ, CQ",
        "OK traffic through the parent domain",
        "OK default and failing allocators",
        "OK no allocators",
        "ALL OK",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

#[test]
fn xrc_domains_srqs_and_qps() {
    let Some(exe) = compile("xrc") else {
        return;
    };
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
