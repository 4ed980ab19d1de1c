//! `softrdma devinfo [-v]`: `ibv_devinfo`'s layout for the one soft device.

use crate::{runtime, CliResult};
use soft_rdma::verbs::{Device, Mtu};

fn mtu_enum(m: Mtu) -> u32 {
    match m {
        Mtu::M256 => 1,
        Mtu::M512 => 2,
        Mtu::M1024 => 3,
        Mtu::M2048 => 4,
        Mtu::M4096 => 5,
    }
}

pub fn guid_str(g: u64) -> String {
    format!(
        "{:04x}:{:04x}:{:04x}:{:04x}",
        g >> 48,
        (g >> 32) & 0xffff,
        (g >> 16) & 0xffff,
        g & 0xffff
    )
}

fn caps(bits: u64, names: &[(u64, &str)]) -> String {
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "NO SUPPORT".to_string()
    } else {
        v.join(" ")
    }
}

const TRANSPORT_CAPS: &[(u64, &str)] = &[
    (1, "SUPPORT_SEND"),
    (2, "SUPPORT_RECV"),
    (4, "SUPPORT_WRITE"),
    (8, "SUPPORT_READ"),
    (16, "SUPPORT_ATOMIC"),
    (32, "SUPPORT_SRQ"),
    (64, "SUPPORT_FLUSH"),
    (128, "SUPPORT_ATOMIC_WRITE"),
];

pub fn run(verbose: bool) -> CliResult<()> {
    let dev = Device::open().or_else(|e| runtime(format!("cannot open the device: {e}")))?;
    print!("{}", render(&dev, verbose));
    Ok(())
}

pub fn render(dev: &Device, verbose: bool) -> String {
    let a = dev.attr();
    let p = dev.port_attr();
    let mut o = String::new();
    let mut l = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    l(format!("hca_id:\t{}", dev.name()));
    l("\ttransport:\t\t\tInfiniBand (0)".into());
    l(format!("\tfw_ver:\t\t\t\t{}", a.fw_ver));
    l(format!("\tnode_guid:\t\t\t{}", guid_str(a.node_guid)));
    l(format!("\tsys_image_guid:\t\t\t{}", guid_str(a.node_guid)));
    l(format!("\tvendor_id:\t\t\t{:#06x}", a.vendor_id));
    l("\tvendor_part_id:\t\t\t0".into());
    l("\thw_ver:\t\t\t\t0x0".into());
    if verbose {
        l(format!("\tmax_mr_size:\t\t\t{:#x}", a.max_mr_size));
        l("\tpage_size_cap:\t\t\t0xfffff000".into());
        l(format!("\tmax_qp:\t\t\t\t{}", a.max_qp));
        l(format!("\tmax_qp_wr:\t\t\t{}", a.max_qp_wr));
        l(format!("\tmax_sge:\t\t\t{}", a.max_sge));
        l(format!("\tmax_sge_rd:\t\t\t{}", a.max_sge));
        l(format!("\tmax_cq:\t\t\t\t{}", a.max_cq));
        l(format!("\tmax_cqe:\t\t\t{}", a.max_cqe));
        l(format!("\tmax_mr:\t\t\t\t{}", a.max_mr));
        l(format!("\tmax_qp_rd_atom:\t\t\t{}", a.max_qp_rd_atom));
        l(format!(
            "\tmax_qp_init_rd_atom:\t\t{}",
            a.max_qp_init_rd_atom
        ));
        l("\tatomic_cap:\t\t\tATOMIC_HCA (1)".into());
        l(format!("\tmax_inline_data:\t\t{}", a.max_inline));
        l("\tmax_pkeys:\t\t\t1".into());
        l("\tlocal_ca_ack_delay:\t\t15".into());
        l(format!(
            "\tgeneral_odp_caps:\t\t{}",
            caps(
                a.odp.general,
                &[(1, "ODP_SUPPORT"), (2, "ODP_SUPPORT_IMPLICIT")]
            )
        ));
        l(format!(
            "\trc_odp_caps:\t\t\t{}",
            caps(u64::from(a.odp.rc), TRANSPORT_CAPS)
        ));
        l(format!(
            "\tuc_odp_caps:\t\t\t{}",
            caps(u64::from(a.odp.uc), TRANSPORT_CAPS)
        ));
        l(format!(
            "\tud_odp_caps:\t\t\t{}",
            caps(u64::from(a.odp.ud), TRANSPORT_CAPS)
        ));
        l("\txrc_odp_caps:\t\t\tNO SUPPORT".into());
        l(format!("\todp_invalidation:\t\t{}", dev.odp_source()));
    }
    l(format!("\tphys_port_cnt:\t\t\t{}", a.phys_port_cnt));
    l("\t\tport:\t1".into());
    l(format!(
        "\t\t\tstate:\t\t\t{}",
        if p.state_active {
            "PORT_ACTIVE (4)"
        } else {
            "PORT_DOWN (1)"
        }
    ));
    l(format!(
        "\t\t\tmax_mtu:\t\t{} ({})",
        p.max_mtu.bytes(),
        mtu_enum(p.max_mtu)
    ));
    l(format!(
        "\t\t\tactive_mtu:\t\t{} ({})",
        p.active_mtu.bytes(),
        mtu_enum(p.active_mtu)
    ));
    l("\t\t\tsm_lid:\t\t\t0".into());
    l(format!("\t\t\tport_lid:\t\t{}", p.lid));
    l("\t\t\tport_lmc:\t\t0x00".into());
    l("\t\t\tlink_layer:\t\tEthernet".into());
    if verbose {
        l(format!("\t\t\tmax_msg_sz:\t\t{:#x}", a.max_msg));
        l("\t\t\tmax_vl_num:\t\tinvalid value (0)".into());
        l("\t\t\tpkey_tbl_len:\t\t1".into());
        l(format!("\t\t\tgid_tbl_len:\t\t{}", p.gid_tbl_len));
        l(format!("\t\t\tlocal_addr:\t\t{}", dev.local_addr()));
        for (i, g) in dev.gids() {
            let ip = std::net::Ipv6Addr::from(g.0);
            l(format!("\t\t\tGID[{i:>3}]:\t\t{ip}, RoCE v2"));
        }
    }
    o
}
