//! The face as a real directory tree, made once a process (by the process
//! that first looks into it; a forked child uses its parent's) and removed
//! when that process exits normally.

#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The device, its port and its `uverbs` name (as the shim's `ibv_device`).
const DEV: &str = "softrdma0";
const UVERBS: &str = "uverbs0";

/// The GID indexes the device fills (0: link-local, 1: the IPv4-mapped
/// address), both RoCE v2 as the device's port is.
const GIDS: [u32; 2] = [0, 1];

/// Make a fresh private directory under the temporary directory and write
/// the face into it; `ndev` is the network interface behind the device's
/// address, if known. Returns the directory.
pub fn build(ndev: Option<&str>) -> io::Result<PathBuf> {
    let root = fresh_dir()?;
    sweep(&root);
    if let Err(e) = write(&root, ndev) {
        let _ = fs::remove_dir_all(&root);
        return Err(e);
    }
    Ok(root)
}

/// This process's PID namespace (the inode of `/proc/self/ns/pid`): a pid
/// names a process only there, so only trees of this namespace are swept.
fn pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// Remove the trees of this user's processes that are gone: a process that
/// ends without running its exit handlers (`_exit`, a signal) leaves its tree,
/// and the next one to make a tree (in the same PID namespace) clears it.
fn sweep(mine: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(dir), Ok(me)) = (mine.parent(), fs::symlink_metadata(mine)) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let mut parts = name
            .to_str()
            .and_then(|n| n.strip_prefix("softrdma-face."))
            .unwrap_or("")
            .split('.');
        let (Some(ns), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        if ns != pid_ns().to_string() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let ours = fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me.uid());
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A new directory (mode 0700) named after this process and its PID
/// namespace; `mkdir` never follows a planted link, and a name taken is skipped.
fn fresh_dir() -> io::Result<PathBuf> {
    let tmp = std::env::temp_dir();
    // A tree inside the face would be looked up through the face while it is made.
    if crate::paths::in_face(tmp.as_os_str().as_encoded_bytes()) {
        return Err(io::Error::other("the temporary directory is in the face"));
    }
    let pid = std::process::id();
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for n in 0..16u32 {
        let p = tmp.join(format!("softrdma-face.{}.{pid}.{salt:x}.{n}", pid_ns()));
        match fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no fresh directory")))
}

fn file(path: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text)
}

/// The files, with the text the kernel's sysfs gives for an rxe device.
fn write(root: &Path, ndev: Option<&str>) -> io::Result<()> {
    let ib = root.join("sys/class/infiniband").join(DEV);
    file(&ib.join("node_type"), "1: CA\n")?;
    let port = ib.join("ports/1");
    file(&port.join("state"), "4: ACTIVE\n")?;
    file(&port.join("phys_state"), "5: LinkUp\n")?;
    file(&port.join("link_layer"), "Ethernet\n")?;
    for i in GIDS {
        file(&port.join(format!("gid_attrs/types/{i}")), "RoCE v2\n")?;
        if let Some(n) = ndev {
            file(
                &port.join(format!("gid_attrs/ndevs/{i}")),
                &format!("{n}\n"),
            )?;
        }
    }
    // No NUMA node and no local_cpus: a software device is near every CPU.
    file(&ib.join("device/numa_node"), "-1\n")?;
    let net = ib.join("device/net");
    fs::create_dir_all(&net)?;
    if let Some(n) = ndev {
        fs::create_dir_all(net.join(n))?;
    }
    let uv = root.join("sys/class/infiniband_verbs");
    file(&uv.join("abi_version"), "6\n")?;
    file(&uv.join(UVERBS).join("ibdev"), &format!("{DEV}\n"))?;
    file(&uv.join(UVERBS).join("abi_version"), "1\n")?;
    // The command file: a character device any user may open (UCX checks
    // S_ISCHR and R_OK|W_OK; the shim never opens it).
    let dev = root.join("dev/infiniband");
    fs::create_dir_all(&dev)?;
    std::os::unix::fs::symlink("/dev/null", dev.join(UVERBS))?;
    Ok(())
}

/// Remove a tree `build` made.
pub fn remove(root: &Path) {
    let _ = fs::remove_dir_all(root);
}
