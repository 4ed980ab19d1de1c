//! Running the soft device's programs: unmodified perftest pairs (server,
//! then client on 127.0.0.1) with our `libibverbs.so.1` first on
//! `LD_LIBRARY_PATH`, and `softrdma perf` in its embedded mode; parsing
//! their result rows.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What the soft-device runs need, found next to the harness executable
/// (`target/<profile>/`): the shim, `softrdma`, and the perftest programs.
pub struct Tools {
    /// Directory holding `libibverbs.so.1` (a symlink to the shim we made).
    pub lib_dir: PathBuf,
    pub softrdma: PathBuf,
    /// Where the programs' output goes, one file per run.
    pub logs: PathBuf,
    pub timeout: Duration,
    /// Runs that failed once and passed when run again: (name, first error).
    pub retried: std::cell::RefCell<Vec<(String, String)>>,
    /// Whether our `librdmacm.so.1` (rdmacm-shim) is beside the shim.
    pub rdmacm: bool,
}

pub const PERFTEST: [&str; 5] = [
    "ib_write_bw",
    "ib_read_bw",
    "ib_send_bw",
    "ib_write_lat",
    "ib_send_lat",
];

pub(super) fn in_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

impl Tools {
    /// Finds everything or says, in one line, what to build or install.
    pub fn find(exe_dir: &Path, out: &Path, timeout: Duration) -> Result<Tools, String> {
        let shim = exe_dir.join("libibverbs.so");
        let softrdma = exe_dir.join("softrdma");
        let release = exe_dir.file_name().is_some_and(|n| n == "release");
        let flag = if release { " --release" } else { "" };
        if !shim.is_file() || !softrdma.is_file() {
            return Err(format!(
                "missing {} or {}: build them first with `cargo build{flag} -p verbs-shim -p soft-rdma`",
                shim.display(),
                softrdma.display()
            ));
        }
        let missing: Vec<&str> = PERFTEST.iter().copied().filter(|p| !in_path(p)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing {} (Debian perftest): install it with `apt-get install perftest`",
                missing.join(", ")
            ));
        }
        // Our own symlink, so the harness needs no `link.sh` step.
        let lib_dir = out.join("lib");
        std::fs::create_dir_all(&lib_dir).map_err(|e| format!("{}: {e}", lib_dir.display()))?;
        let link = lib_dir.join("libibverbs.so.1");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&shim, &link).map_err(|e| format!("{}: {e}", link.display()))?;
        // rdma_cm programs need our librdmacm too (`cargo build -p rdmacm-shim`).
        let cm = exe_dir.join("librdmacm.so");
        let cm_link = lib_dir.join("librdmacm.so.1");
        let _ = std::fs::remove_file(&cm_link);
        let rdmacm = cm.is_file() && std::os::unix::fs::symlink(&cm, &cm_link).is_ok();
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        Ok(Tools {
            lib_dir,
            softrdma,
            logs,
            timeout,
            retried: Default::default(),
            rdmacm,
        })
    }

    pub(super) fn log(&self, name: &str) -> Result<(PathBuf, File, File), String> {
        let p = self.logs.join(format!("{name}.txt"));
        let f = File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let g = f.try_clone().map_err(|e| e.to_string())?;
        Ok((p, f, g))
    }

    /// What the client of perftest run `name` printed (last attempt).
    pub fn client_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{name}.client.txt"))).unwrap_or_default()
    }

    /// A run failing once on a shared, loaded machine is retried once; the
    /// first failure is kept for the report (the lead should see it).
    pub(super) fn twice(
        &self,
        name: &str,
        run: impl Fn() -> Result<String, String>,
    ) -> Result<String, String> {
        run().or_else(|first| {
            eprintln!("compare: {name} failed, running it again: {first}");
            // Keep the failed attempt's output beside the retry's.
            for role in ["", ".client", ".server"] {
                let f = self.logs.join(format!("{name}{role}.txt"));
                let _ = std::fs::rename(&f, self.logs.join(format!("{name}{role}.failed.txt")));
            }
            let r = run();
            if r.is_ok() {
                self.retried.borrow_mut().push((name.to_string(), first));
            }
            r
        })
    }

    /// A perftest pair: `prog args` as server, then `prog args -p P
    /// 127.0.0.1`; both must exit 0. Returns the client's output.
    pub fn perftest(&self, name: &str, prog: &str, args: &[&str]) -> Result<String, String> {
        self.perftest_env(name, prog, args, &[])
    }

    /// [`Tools::perftest`] with environment variables set for both sides.
    pub fn perftest_env(
        &self,
        name: &str,
        prog: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        self.twice(name, || self.perftest_once(name, prog, args, env))
    }

    fn perftest_once(
        &self,
        name: &str,
        prog: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        let port = free_port()?;
        let p = port.to_string();
        let mut common: Vec<&str> = vec!["-d", "softrdma0", "-x", "1", "-F", "-p", &p];
        common.extend_from_slice(args);
        let mut client = common.clone();
        client.push("127.0.0.1");
        // Ready once its out-of-band port listens (a probe connection would
        // use up the one connection the server accepts).
        self.pair_once(name, prog, (&common, &client), env, true, || {
            listening(port)
        })
    }

    /// An rdma_cm program pair (`prog server_args`, then `prog
    /// client_args` once `ready`), both through our libraries; the client
    /// must exit 0, the server (which serves until killed, as cmtime's
    /// does) is then killed. Returns the client's output. `None` when our
    /// librdmacm was not built.
    pub fn cm_pair(
        &self,
        name: &str,
        prog: &str,
        args: (&[&str], &[&str]),
        ready: impl Fn() -> bool,
    ) -> Option<Result<String, String>> {
        self.rdmacm.then(|| {
            self.twice(name, || {
                self.pair_once(name, prog, args, &[], false, &ready)
            })
        })
    }

    /// Server, then client once `ready()`; the client must exit 0 within
    /// the timeout, and the server, if `server_exits`, 30 s after it (else
    /// it is killed once the client is done).
    fn pair_once(
        &self,
        name: &str,
        prog: &str,
        (server_args, client_args): (&[&str], &[&str]),
        env: &[(&str, &str)],
        server_exits: bool,
        ready: impl Fn() -> bool,
    ) -> Result<String, String> {
        let spawn = |role: &str, args: &[&str]| -> Result<(PathBuf, Child), String> {
            let (path, out, err) = self.log(&format!("{name}.{role}"))?;
            let child = Command::new(prog)
                .args(args)
                .env("LD_LIBRARY_PATH", &self.lib_dir)
                .env_remove("SOFTRDMA_ADDR")
                .env_remove("SOFTRDMA_SHM")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("{prog}: {e}"))?;
            Ok((path, child))
        };
        let (slog, mut server) = spawn("server", server_args)?;
        let t = Instant::now();
        while !ready() {
            if let Ok(Some(st)) = server.try_wait() {
                return Err(format!(
                    "{prog} server exited ({st}) before it was ready: {}",
                    tail(&slog)
                ));
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = server.kill();
                let _ = server.wait();
                return Err(format!("{prog} server not ready after 20 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let (clog, client) = match spawn("client", client_args) {
            Ok(c) => c,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        };
        let cst = wait(client, self.timeout);
        let sst = wait(
            server,
            if cst.is_ok() && server_exits {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            },
        );
        let out = std::fs::read_to_string(&clog).unwrap_or_default();
        let server_ok = !server_exits || matches!(&sst, Ok(s) if s.success());
        match cst {
            Ok(c) if c.success() && server_ok => Ok(out),
            c => Err(format!(
                "{prog} {}: client {}, server {}; client said: {} | server said: {}",
                client_args.join(" "),
                status(&c),
                status(&sst),
                tail(&clog),
                tail(&slog)
            )),
        }
    }

    /// `softrdma perf ARGS` as two processes on this host (`--server`,
    /// then `--client 127.0.0.1` once the server's exchange port listens).
    pub fn softrdma_pair(&self, name: &str, args: &[&str]) -> Result<String, String> {
        self.twice(name, || {
            let port = free_port()?;
            let p = port.to_string();
            let common = [&["perf"][..], args, &["-p", &p]].concat();
            let server = [&common[..], &["--server"]].concat();
            let client = [&common[..], &["--client", "127.0.0.1"]].concat();
            let prog = self.softrdma.to_str().ok_or("softrdma: not a UTF-8 path")?;
            self.pair_once(name, prog, (&server, &client), &[], true, || {
                listening(port)
            })
        })
    }

    /// `softrdma perf ARGS` (embedded: both sides in one process).
    pub fn softrdma(&self, name: &str, args: &[&str]) -> Result<String, String> {
        self.softrdma_env(name, args, &[])
    }

    /// [`Tools::softrdma`] with `env` set for the run (e.g. `SOFTRDMA_FAULTS`).
    pub fn softrdma_env(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        self.twice(name, || self.softrdma_once(name, args, env))
    }

    fn softrdma_once(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        let (path, out, err) = self.log(name)?;
        let child = Command::new(&self.softrdma)
            .arg("perf")
            .args(args)
            .env_remove("SOFTRDMA_ADDR")
            .env_remove("SOFTRDMA_FAULTS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.softrdma.display()))?;
        let st = wait(child, self.timeout);
        match st {
            Ok(s) if s.success() => Ok(std::fs::read_to_string(&path).unwrap_or_default()),
            s => Err(format!(
                "softrdma perf {}: {}; it said: {}",
                args.join(" "),
                status(&s),
                tail(&path)
            )),
        }
    }
}

pub(super) fn status(s: &Result<ExitStatus, String>) -> String {
    match s {
        Ok(s) => s.to_string(),
        Err(e) => e.clone(),
    }
}

/// The last lines of a log, on one line.
pub(super) fn tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(3);
    format!("{} (log: {})", lines[from..].join(" / "), p.display())
}

/// Wait at most `limit`, then kill.
pub(super) fn wait(mut child: Child, limit: Duration) -> Result<ExitStatus, String> {
    let t = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Ok(st),
            Ok(None) if t.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no exit after {} s (killed)", limit.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A TCP port nobody listens on, below the ephemeral range (so concurrent
/// connections elsewhere cannot take it between our probe and perftest's
/// bind), starting from a per-process offset.
pub(super) fn free_port() -> Result<u16, String> {
    let start = (std::process::id() % 1000) as u16;
    for k in 0..1000u16 {
        let port = 19000 + (start + k) % 1000;
        if !listening(port) && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free TCP port in 19000..20000".into())
}

/// Whether some socket listens on TCP `port` (IPv4 or IPv6), from /proc.
pub fn listening(port: u16) -> bool {
    test_support::net::listening(port)
}

/// A bw result row: `#bytes #iterations peak avg Mpps` (MB = 2^20 bytes,
/// perftest's unit).
#[derive(Debug, Clone, Copy)]
pub struct BwRow {
    pub bytes: u64,
    pub avg_mbs: f64,
    pub mpps: f64,
}

fn numeric_rows(out: &str) -> Vec<Vec<f64>> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|t| t.len() >= 5 && t[0].parse::<u64>().is_ok() && t[1].parse::<u64>().is_ok())
        .filter_map(|t| {
            t.iter()
                .map(|x| x.parse::<f64>().ok())
                .collect::<Option<Vec<f64>>>()
        })
        .collect()
}

pub fn bw_rows(out: &str) -> Vec<BwRow> {
    numeric_rows(out)
        .into_iter()
        .map(|r| BwRow {
            bytes: r[0] as u64,
            avg_mbs: r[3],
            mpps: r[4],
        })
        .collect()
}

/// The one bw row of a single-size run.
pub fn bw_row(out: &str) -> Result<BwRow, String> {
    match bw_rows(out).as_slice() {
        [r] if r.avg_mbs > 0.0 => Ok(*r),
        rows => Err(format!("expected one result row, found {}", rows.len())),
    }
}

/// `t_typical` (usec) of a latency run's row.
pub fn lat_typical(out: &str) -> Result<f64, String> {
    match numeric_rows(out).as_slice() {
        [r] if r.len() >= 9 && r[4] > 0.0 => Ok(r[4]),
        rows => Err(format!("expected one latency row, found {}", rows.len())),
    }
}

/// The rdma_cm TCP port space.
pub const RDMA_PS_TCP: u16 = 0x0106;

/// What `cmtime`'s client measured, total milliseconds per step.
#[derive(Clone, Copy)]
pub struct CmtimeSteps {
    pub connect: f64,
    /// create id + resolve addr + resolve route + create qp + connect.
    pub until_connected: f64,
}

/// Parses cmtime's table (`step : total ms  max ms  min us  us/conn`).
pub fn cmtime_steps(out: &str) -> Result<CmtimeSteps, String> {
    let total = |step: &str| -> Result<f64, String> {
        out.lines()
            .find_map(|l| {
                let (name, rest) = l.split_once(':')?;
                (name.trim() == step).then(|| rest.split_whitespace().next()?.parse().ok())?
            })
            .ok_or_else(|| format!("no `{step}` row in cmtime's output"))
    };
    let mut until_connected = 0.0;
    for step in [
        "create id",
        "resolve addr",
        "resolve route",
        "create qp",
        "connect",
    ] {
        until_connected += total(step)?;
    }
    Ok(CmtimeSteps {
        connect: total("connect")?,
        until_connected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perftest_rows() {
        let bw = " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n 65536      2000             732.73             699.29 \t\t   0.011189\n---\n";
        let r = bw_row(bw).unwrap();
        assert_eq!(r.bytes, 65536);
        assert_eq!(r.avg_mbs, 699.29);
        assert_eq!(r.mpps, 0.011189);
        let lat = " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] \n 2       2000          23.29          2925.41      49.44    \t       50.32       \t29.88  \t\t77.80   \t\t937.37 \n";
        assert_eq!(lat_typical(lat).unwrap(), 49.44);
        assert!(bw_row("no rows here").is_err());
    }

    #[test]
    fn parses_cmtime_steps() {
        let out = "step              total ms     max ms     min us  us / conn\ncreate id    :        1.07       0.06       0.00       1.07\nresolve addr :       48.65       0.20      32.00      48.65\nresolve route:        1.70       0.57      12.00       1.70\ncreate qp    :        1.22       0.04       0.00       1.22\nconnect      :      209.50       8.68     353.00     209.50\ndisconnect   :      548.43     537.60     455.00     548.43\n";
        let s = cmtime_steps(out).unwrap();
        assert_eq!(s.connect, 209.50);
        assert!((s.until_connected - 262.14).abs() < 1e-9);
        assert!(cmtime_steps("connect : 1.0").is_err());
    }
}
