//! One table: every row a vcache figure beside its baseline measured in the same run, and the ratio
//! (vcache / baseline). Groups: `serve` (random ranges of a file video vs nginx sendfile, 1 and 2
//! workers), `ingest` (1 MiB ranged PUTs vs nginx DAV and a plain socket sink), `live` (1,000 followers
//! of a 1.3 Mbit/s channel vs a minimal in-bench relay, same epoll client), `connections` (RSS per idle
//! keep-alive connection vs nginx), `restart` (exec to first cached 206 vs nginx proxy_cache) and
//! `origin` (pull-through hits and cold first byte vs nginx slice and Varnish, `common/origin.rs`).
//! Within a group, rounds interleave vcache and its baselines; the table shows medians over rounds.
//!
//! Run: `cargo bench --bench table`. Needs nginx-light and varnish (a missing tool fails the run).
//! Environment: BENCH_SECS (seconds per measurement, default 4), BENCH_ROUNDS (default 3), BENCH_ONLY
//! (comma-separated groups, default all), BENCH_DIR (scratch directory, default a fresh one in $TMPDIR),
//! and per group: BENCH_SERVE_MIB (1024), BENCH_INGEST_SLOT_GIB (4), BENCH_INGEST_SLOTS (4),
//! BENCH_LIVE_FOLLOWERS (1000), BENCH_LIVE_TICK_MS (50), BENCH_IDLE_CONNS (18000),
//! BENCH_RESTART_SLOTS (8), BENCH_RESTART_SLOT_MIB (1024), BENCH_ORIGIN_FILE_MIB (256).

mod common;
use common::*;

#[path = "table/conns.rs"]
mod conns;
#[path = "table/ingest.rs"]
mod ingest;
#[path = "table/live.rs"]
mod live;
#[path = "table/origin.rs"]
mod origin_group;
#[path = "table/restart.rs"]
mod restart;
#[path = "table/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

/// What every group gets.
pub struct Ctx {
    pub dir: PathBuf,
    pub secs: f64,
    pub rounds: usize,
}

/// Figures per label, one per round.
#[derive(Default)]
pub struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    pub fn add(&mut self, key: &str, v: f64) {
        self.0.entry(key.to_string()).or_default().push(v);
    }

    pub fn med(&self, key: &str) -> f64 {
        median(self.0.get(key).map_or(&[][..], |v| v))
    }
}

/// One printed row. `None` prints as n/a.
pub struct Row {
    pub name: String,
    pub vcache: Option<f64>,
    pub base_name: String,
    pub base: Option<f64>,
}

/// The rows and the notes printed under the table.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn row(&mut self, name: &str, vcache: Option<f64>, base_name: &str, base: Option<f64>) {
        self.rows.push(Row {
            name: name.to_string(),
            vcache,
            base_name: base_name.to_string(),
            base,
        });
    }
}

/// Start vcache on a fresh port with `body` (limits and videos) after a `[server]` section; data in
/// `dir/data-<tag>`. Stopped with SIGKILL when dropped unless told otherwise.
pub fn start_vcache(ctx: &Ctx, tag: &str, body: &str, env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let cfg = vcache_config(ctx, tag, port, body);
    let mut cmd = vcache_cmd(&cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let p = spawn(
        &mut cmd,
        &ctx.dir.join(format!("vcache-{tag}.log")),
        libc::SIGKILL,
    )
    .expect("spawn vcache");
    wait_port(port);
    (p, port)
}

pub fn vcache_config(ctx: &Ctx, tag: &str, port: u16, body: &str) -> PathBuf {
    let cfg = ctx.dir.join(format!("vcache-{tag}.toml"));
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data-{tag}\"\nwrite_token = \"t\"\n\n{body}"
    );
    std::fs::write(&cfg, text).expect("vcache config");
    cfg
}

pub fn vcache_cmd(cfg: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcache"));
    cmd.args(["serve", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "warn");
    cmd
}

/// An nginx config (`workers` workers, `conns` worker_connections) with `http` inside its http block,
/// `{port}` in `http` replaced by a free port; and that port.
pub fn nginx_conf(
    ctx: &Ctx,
    name: &str,
    workers: usize,
    conns: usize,
    http: &str,
) -> (String, u16) {
    let port = free_port();
    let d = ctx.dir.display();
    let conf = format!(
        "daemon off;\nuser root;\nworker_processes {workers};\nworker_rlimit_nofile {};\npid {d}/{name}.pid;\n\
         error_log {d}/{name}-error.log;\nevents {{ worker_connections {conns}; }}\n\
         http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s;\n{}{} }}\n",
        conns + 64,
        common::origin::nginx_temp_paths(&ctx.dir),
        http.replace("{port}", &port.to_string()),
    );
    (conf, port)
}

/// Start nginx on `nginx_conf` and wait until it listens.
pub fn start_nginx(ctx: &Ctx, name: &str, workers: usize, conns: usize, http: &str) -> (Proc, u16) {
    nginx_path();
    let (conf, port) = nginx_conf(ctx, name, workers, conns, http);
    let p = common::origin::start_nginx(&ctx.dir, name, conf).expect("start nginx");
    wait_port(port);
    (p, port)
}

pub fn nginx_path() -> std::path::PathBuf {
    require(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx-light")
}

/// User + system CPU seconds of an nginx master and its workers.
pub fn nginx_cpu(p: &Proc) -> f64 {
    cpu_secs(p.pid()) + children(p.pid()).into_iter().map(cpu_secs).sum::<f64>()
}

/// Read one answer: the status, the lower-cased head, and the body length (its bytes are read into
/// `scratch` and dropped).
pub fn read_answer(s: &mut TcpStream, scratch: &mut [u8]) -> io::Result<(u16, String, u64)> {
    let mut have = 0;
    let end = loop {
        if let Some(p) = scratch[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if have == scratch.len() {
            return Err(io::Error::other("answer head too long"));
        }
        match s.read(&mut scratch[have..])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => have += n,
        }
    };
    let head = String::from_utf8_lossy(&scratch[..end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|v| v.parse().ok());
    let len = header(&head, "content-length").and_then(|v| v.parse().ok());
    let mut left = len.unwrap_or(0u64).saturating_sub((have - end) as u64);
    while left > 0 {
        let want = (left as usize).min(scratch.len());
        match s.read(&mut scratch[..want])? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => left -= n as u64,
        }
    }
    Ok((status.unwrap_or(0), head, len.unwrap_or(0)))
}

/// Send `head` and then `body` (each with write(2)) and read the answer.
pub fn exchange(
    s: &mut TcpStream,
    head: &[u8],
    body: &[u8],
    scratch: &mut [u8],
) -> io::Result<(u16, String, u64)> {
    s.write_all(head)?;
    if !body.is_empty() {
        s.write_all(body)?;
    }
    read_answer(s, scratch)
}

/// A header's value in a lower-cased head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

/// A figure with about three significant digits.
fn fmt(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn print_table(report: &Report) {
    let w = report.rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    let b = report
        .rows
        .iter()
        .map(|r| r.base_name.len())
        .max()
        .unwrap_or(10);
    println!(
        "{:<w$}  {:>10}  {:<b$}  {:>10}  {:>6}",
        "row", "vcache", "baseline", "baseline", "ratio"
    );
    for r in &report.rows {
        let ratio = match (r.vcache, r.base) {
            (Some(v), Some(x)) if x != 0.0 => format!("{:.2}", v / x),
            _ => "-".into(),
        };
        println!(
            "{:<w$}  {:>10}  {:<b$}  {:>10}  {:>6}",
            r.name,
            fmt(r.vcache),
            r.base_name,
            fmt(r.base),
            ratio
        );
    }
    for n in &report.notes {
        println!("note: {n}");
    }
}

fn machine_line(secs: f64, rounds: usize) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: nproc {nproc}, kernel {}, {date}; BENCH_SECS={secs} BENCH_ROUNDS={rounds}, medians of rounds",
        kernel.trim()
    )
}

type Group = fn(&Ctx, &mut Report);

const GROUPS: [(&str, Group); 6] = [
    ("serve", serve::run),
    ("ingest", ingest::run),
    ("live", live::run),
    ("connections", conns::run),
    ("restart", restart::run),
    ("origin", origin_group::run),
];

fn main() {
    let secs: f64 = env_or("BENCH_SECS", 4.0);
    let rounds: usize = env_or::<usize>("BENCH_ROUNDS", 3).max(1);
    let all = GROUPS.map(|g| g.0).join(",");
    let only: String = env_or("BENCH_ONLY", all);
    let dir = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::temp_dir().join(format!("vcache-bench-table-{}", std::process::id()))
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    // Everyone (Varnish drops privileges) must be able to enter it.
    let _ = Command::new("chmod").arg("755").arg(&dir).status();
    raise_nofile();
    let ctx = Ctx { dir, secs, rounds };
    let mut report = Report::default();
    for (name, run) in GROUPS {
        if only.split(',').any(|g| g.trim() == name) {
            eprintln!("== {name}");
            run(&ctx, &mut report);
        }
    }
    print_table(&report);
    println!("{}", machine_line(secs, rounds));
    let _ = std::fs::remove_dir_all(&ctx.dir);
}
