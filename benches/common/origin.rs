//! The origin-cache measurements (moved from benches/origin.rs so that `table` reuses them): vcache's
//! `origin` videos beside nginx `proxy_cache` + `slice 1m` and Varnish, all in front of the same nginx
//! origin serving the same random file: cold-miss time to first body byte, origin bytes per client byte
//! over a cold pass of random 1 MiB ranges, hit throughput on those ranges (several keep-alive clients),
//! and origin bytes re-fetched when the cache is restarted and the same ranges are read again. The
//! origin counts its bytes with an access log of `$body_bytes_sent`.

use super::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const RANGE: u64 = MIB;

/// One response: status, time from sending the request to the first body byte and to the last.
pub struct Got {
    pub status: u16,
    pub ttfb: Duration,
    pub total: Duration,
    pub len: u64,
}

/// A keep-alive HTTP/1.1 client that reconnects when the server closes.
pub struct Conn {
    port: u16,
    s: Option<TcpStream>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    pub fn new(port: u16) -> Conn {
        Conn {
            port,
            s: None,
            buf: Vec::new(),
            scratch: vec![0u8; 256 * 1024],
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        if self.s.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(120))).ok();
            self.s = Some(s);
            self.buf.clear();
        }
        Ok(())
    }

    /// GET `path` bytes [first, last]; the body is compared with `expect` when given.
    pub fn get(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
        expect: Option<&[u8]>,
    ) -> Result<Got, String> {
        let fresh = self.s.is_none();
        match self.try_get(path, range, expect) {
            Err(e) if !fresh && e == "closed before an answer" => {
                self.s = None;
                self.try_get(path, range, expect)
            }
            other => other,
        }
    }

    fn try_get(
        &mut self,
        path: &str,
        range: Option<(u64, u64)>,
        expect: Option<&[u8]>,
    ) -> Result<Got, String> {
        self.connect()?;
        let s = self.s.as_mut().expect("connected");
        let range_line = match range {
            Some((a, b)) => format!("Range: bytes={a}-{b}\r\n"),
            None => String::new(),
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{range_line}\r\n");
        let t0 = Instant::now();
        if s.write_all(req.as_bytes()).is_err() {
            self.s = None;
            return Err("closed before an answer".into());
        }
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = match s.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) => {
                    self.s = None;
                    return Err(format!("reading the head: {e}"));
                }
            };
            if n == 0 {
                let empty = self.buf.is_empty();
                self.s = None;
                return Err(if empty {
                    "closed before an answer".into()
                } else {
                    "closed inside the head".into()
                });
            }
            self.buf.extend_from_slice(&self.scratch[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let cl: u64 = match header("content-length:").and_then(|v| v.parse().ok()) {
            Some(cl) => cl,
            None if status == 204 || status == 304 => 0,
            None => return Err(format!("no content-length: {head:?}")),
        };
        let close = header("connection:").is_some_and(|v| v == "close");
        let mut ttfb = None;
        let mut body = Vec::new();
        let keep = expect.is_some() || status != 206;
        let leftover = self.buf.split_off(head_end);
        self.buf.clear();
        let mut got = leftover.len() as u64;
        if got > cl {
            return Err("more bytes than content-length (pipelining not used)".into());
        }
        if got > 0 {
            ttfb = Some(t0.elapsed());
            if keep {
                body.extend_from_slice(&leftover);
            }
        }
        while got < cl {
            let want = ((cl - got) as usize).min(self.scratch.len());
            let n = match s.read(&mut self.scratch[..want]) {
                Ok(n) => n,
                Err(e) => {
                    self.s = None;
                    return Err(format!("reading the body at {got}/{cl}: {e}"));
                }
            };
            if n == 0 {
                self.s = None;
                return Err(format!("closed inside the body at {got}/{cl}"));
            }
            if ttfb.is_none() {
                ttfb = Some(t0.elapsed());
            }
            if keep {
                body.extend_from_slice(&self.scratch[..n]);
            }
            got += n as u64;
        }
        let total = t0.elapsed();
        if close {
            self.s = None;
        }
        if status != 206 && status != 200 && status != 204 {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        if let (Some(want), Some((a, b))) = (expect, range) {
            if status != 206 {
                return Err(format!("status {status} for a range request"));
            }
            let want = &want[a as usize..=b as usize];
            if body != want {
                let at = body
                    .iter()
                    .zip(want)
                    .position(|(x, y)| x != y)
                    .unwrap_or(body.len().min(want.len()));
                return Err(format!(
                    "wrong bytes for {a}-{b}: {} bytes, first difference at +{at}",
                    body.len()
                ));
            }
        }
        Ok(Got {
            status,
            ttfb: ttfb.unwrap_or(total),
            total,
            len: cl,
        })
    }
}

/// The origin: nginx serving `www/film.mp4`, one access log line per response: `$body_bytes_sent`,
/// then the path and the Range asked for (to see what a cache fetched).
pub struct Origin {
    _p: Proc,
    pub port: u16,
    log: PathBuf,
}

impl Origin {
    fn bytes(&self) -> u64 {
        self.responses().iter().sum()
    }

    /// The body bytes of each origin response so far, in the order they ended.
    pub fn responses(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .collect()
    }

    /// The byte count once it stopped moving (responses are logged when they end).
    pub fn settled(&self) -> u64 {
        let start = Instant::now();
        let mut last = self.bytes();
        let mut stable = 0;
        while start.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.bytes();
            if now == last {
                stable += 1;
                if stable >= 4 {
                    break;
                }
            } else {
                stable = 0;
                last = now;
            }
        }
        last
    }
}

pub fn nginx_common(d: &Path, name: &str, workers: usize) -> String {
    let d = d.display();
    format!(
        "daemon off;\nworker_processes {workers};\npid {d}/{name}.pid;\nerror_log {d}/{name}-error.log;\n\
         events {{ worker_connections 4096; }}\n"
    )
}

pub fn nginx_temp_paths(d: &Path) -> String {
    let d = d.display();
    format!(
        "client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; \
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n"
    )
}

pub fn start_nginx(dir: &Path, name: &str, conf: String) -> Result<Proc, String> {
    let bin = nginx_bin().ok_or("nginx not installed (apt-get install nginx-light)")?;
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&path).arg("-p").arg(dir);
    spawn(&mut cmd, &dir.join(format!("{name}.out")), libc::SIGTERM)
}

pub fn start_origin(dir: &Path, rate: &str) -> Result<Origin, String> {
    let port = free_port();
    let log = dir.join("origin-access.log");
    let d = dir.display();
    let limit = if rate.is_empty() {
        String::new()
    } else {
        format!("limit_rate {rate};")
    };
    let conf = format!(
        "{}http {{ log_format bytes '$body_bytes_sent $uri $http_range'; access_log {} bytes;\n\
         sendfile on; tcp_nopush on; keepalive_requests 1000000; keepalive_timeout 300s;\n{}\
         server {{ listen 127.0.0.1:{port}; root {d}/www; location / {{ {limit} }} }} }}\n",
        nginx_common(dir, "origin", 1),
        log.display(),
        nginx_temp_paths(dir),
    );
    let p = start_nginx(dir, "origin", conf)?;
    wait_ready(port, "/film.mp4", 206)?;
    Ok(Origin { _p: p, port, log })
}

/// What `prepare` made.
pub struct Prepared {
    pub origin: Origin,
    pub data: Vec<u8>,
    pub ranges: Vec<u64>,
    pub cold_offsets: Vec<u64>,
}

/// The origin's file (`len` random bytes in `dir/www`), the origin started on it, the cold-pass
/// ranges (`n_ranges`) and the cold-miss offsets (`samples`), the same in every run.
pub fn prepare(
    dir: &Path,
    len: u64,
    rate: &str,
    n_ranges: usize,
    samples: usize,
) -> Result<Prepared, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("www")).map_err(|e| e.to_string())?;
    // Everyone (Varnish drops privileges) must be able to enter the state directories.
    let _ = Command::new("chmod").arg("755").arg(dir).status();
    let data = random_bytes(len as usize);
    std::fs::write(dir.join("www/film.mp4"), &data).map_err(|e| e.to_string())?;
    let origin = start_origin(dir, rate)?;
    let mut rng = Rng(0xC0FF_EE00_D15E_A5E5);
    let ranges = (0..n_ranges).map(|_| rng.next() % (len - RANGE)).collect();
    let cold_offsets = (0..samples.max(1))
        .map(|_| rng.next() % (len - RANGE))
        .collect();
    Ok(Prepared {
        origin,
        data,
        ranges,
        cold_offsets,
    })
}

/// Wait until `path` answers `status` (a HEAD-free GET read in full).
pub fn wait_ready(port: u16, path: &str, status: u16) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        let mut c = Conn::new(port);
        match c.get(path, if status == 206 { Some((0, 0)) } else { None }, None) {
            Ok(g) if g.status == status => return Ok(()),
            Ok(g) => last = format!("status {}", g.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("127.0.0.1:{port}{path} not ready: {last}"))
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Vcache,
    Nginx,
    Varnish,
}

impl Kind {
    pub fn name(self, workers: usize) -> String {
        match self {
            Kind::Vcache => "vcache (origin video)".into(),
            Kind::Nginx => format!("nginx slice 1m ({workers} worker)"),
            Kind::Varnish => "varnish (malloc)".into(),
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Kind::Vcache => "/videos/film",
            _ => "/film.mp4",
        }
    }
}

/// A running cache whose state lives in `dir` (kept across restarts).
struct Cache {
    kind: Kind,
    dir: PathBuf,
    origin_port: u16,
    workers: usize,
    port: u16,
    proc: Option<Proc>,
}

impl Cache {
    fn start(kind: Kind, dir: &Path, origin_port: u16, workers: usize) -> Result<Cache, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut c = Cache {
            kind,
            dir: dir.to_path_buf(),
            origin_port,
            workers,
            port: 0,
            proc: None,
        };
        c.launch()?;
        Ok(c)
    }

    fn launch(&mut self) -> Result<(), String> {
        let port = free_port();
        let d = self.dir.clone();
        let op = self.origin_port;
        let log = d.join(format!("{}.out", port));
        let proc = match self.kind {
            Kind::Vcache => {
                let cfg = d.join("vcache.toml");
                std::fs::write(
                    &cfg,
                    format!(
                        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n\
                         [[video]]\nid = \"film\"\nkind = \"origin\"\nurl = \"http://127.0.0.1:{op}/film.mp4\"\n\
                         fill_block = \"1MiB\"\n"
                    ),
                )
                .map_err(|e| e.to_string())?;
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcache"));
                cmd.args(["serve", "--config"])
                    .arg(&cfg)
                    .env("RUST_LOG", "warn");
                spawn(&mut cmd, &log, libc::SIGTERM)?
            }
            Kind::Nginx => {
                let conf = format!(
                    "{}http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n{}\
                     upstream origin {{ server 127.0.0.1:{op}; keepalive 32; }}\n\
                     proxy_cache_path {dd}/cache levels=1:2 keys_zone=vc:16m max_size=2g inactive=1h use_temp_path=off;\n\
                     server {{ listen 127.0.0.1:{port};\n\
                     location = /__ready {{ return 204; }}\n\
                     location / {{ slice 1m; proxy_cache vc; proxy_cache_key $uri$slice_range;\n\
                     proxy_set_header Range $slice_range; proxy_cache_valid 200 206 1h;\n\
                     proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://origin; }} }} }}\n",
                    nginx_common(&d, "cache", self.workers),
                    nginx_temp_paths(&d),
                    dd = d.display(),
                );
                start_nginx(&d, "cache", conf)?
            }
            Kind::Varnish => {
                let bin = ["/usr/sbin/varnishd", "/usr/bin/varnishd"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .ok_or("varnishd not installed (apt-get install varnish)")?;
                let vcl = d.join("bench.vcl");
                std::fs::write(
                    &vcl,
                    format!(
                        "vcl 4.1;\nbackend origin {{ .host = \"127.0.0.1\"; .port = \"{op}\"; }}\n\
                         sub vcl_recv {{ if (req.url == \"/__ready\") {{ return (synth(204)); }} }}\n"
                    ),
                )
                .map_err(|e| e.to_string())?;
                let mut cmd = Command::new(bin);
                cmd.arg("-F")
                    .arg("-a")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("-f")
                    .arg(&vcl)
                    .arg("-s")
                    .arg("malloc,1g")
                    .arg("-n")
                    .arg(d.join("varnish"))
                    .arg("-T")
                    .arg("none")
                    .arg("-t")
                    .arg("3600");
                spawn(&mut cmd, &log, libc::SIGTERM)?
            }
        };
        self.proc = Some(proc);
        self.port = port;
        let ready = match self.kind {
            Kind::Vcache => wait_ready(port, "/healthz", 200),
            _ => wait_ready(port, "/__ready", 204),
        };
        if let Err(e) = ready {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = out.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(format!("{e}; output: {tail}"));
        }
        Ok(())
    }

    /// Graceful stop (vcache and Varnish: SIGTERM; nginx: SIGQUIT); false if it had to be killed.
    fn stop(&mut self) -> bool {
        let sig = if self.kind == Kind::Nginx {
            libc::SIGQUIT
        } else {
            libc::SIGTERM
        };
        match self.proc.take() {
            Some(mut p) => p.stop_with(sig, Duration::from_secs(30)),
            None => true,
        }
    }
}

/// `conns` keep-alive clients reading random ranges out of `ranges` for `secs`.
pub fn hit_load(port: u16, path: &str, ranges: &[u64], conns: usize, secs: f64) -> (f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ranges = Arc::new(ranges.to_vec());
    let mut handles = Vec::new();
    for c in 0..conns {
        let stop = stop.clone();
        let ranges = ranges.clone();
        let path = path.to_string();
        handles.push(std::thread::spawn(move || {
            let mut conn = Conn::new(port);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
            let (mut reqs, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let a = ranges[(rng.next() % ranges.len() as u64) as usize];
                match conn.get(&path, Some((a, a + RANGE - 1)), None) {
                    Ok(g) if g.status == 206 && g.len == RANGE => {
                        reqs += 1;
                        bytes += g.len;
                    }
                    _ => {
                        errors += 1;
                        conn.s = None;
                    }
                }
            }
            (reqs, bytes, errors)
        }));
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut reqs, mut bytes, mut errors) = (0, 0, 0);
    for h in handles {
        let (r, b, e) = h.join().expect("client thread");
        reqs += r;
        bytes += b;
        errors += e;
    }
    let s = t0.elapsed().as_secs_f64();
    (reqs as f64 / s, bytes as f64 / s / MIB as f64, errors)
}

fn median_time(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Bytes as MiB, exact below 1 MiB (so "none" shows as 0 B, not a rounded 0.0 MiB).
pub fn mib(bytes: u64) -> String {
    if bytes < MIB {
        format!("{bytes} B")
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// One cache's figures.
pub struct Row {
    pub name: String,
    pub cold_ttfb: Duration,
    pub cold_total: Duration,
    pub pass_ttfb: Duration,
    pub origin_per_client: f64,
    pub cold_secs: f64,
    pub hit_mibs: f64,
    pub hit_rps: f64,
    pub hit_origin: u64,
    pub refetched: u64,
    pub notes: Vec<String>,
}

impl Row {
    /// The figures as printed by `cargo bench --bench origin`.
    pub fn cells(&self) -> Vec<String> {
        vec![
            ms(self.cold_ttfb),
            ms(self.cold_total),
            ms(self.pass_ttfb),
            format!("{:.2}", self.origin_per_client),
            format!("{:.1} s", self.cold_secs),
            format!("{:.0}", self.hit_mibs),
            format!("{:.0}", self.hit_rps),
            mib(self.hit_origin),
            mib(self.refetched),
        ]
    }
}

pub struct Setup<'a> {
    pub dir: &'a Path,
    pub origin: &'a Origin,
    pub data: &'a [u8],
    pub ranges: &'a [u64],
    pub cold_offsets: &'a [u64],
    pub conns: usize,
    pub secs: f64,
    pub workers: usize,
}

pub fn bench_cache(kind: Kind, s: &Setup) -> Result<Row, String> {
    let name = kind.name(s.workers);
    let path = kind.path();
    let mut notes = Vec::new();
    let tag = match kind {
        Kind::Vcache => "vcache",
        Kind::Nginx => "nginx",
        Kind::Varnish => "varnish",
    };

    // Cold misses: a fresh, empty cache per sample, one range each.
    let (mut ttfbs, mut totals) = (Vec::new(), Vec::new());
    for (i, &a) in s.cold_offsets.iter().enumerate() {
        let dir = s.dir.join(format!("{tag}-cold-{i}"));
        let mut cache = Cache::start(kind, &dir, s.origin.port, s.workers)?;
        let mut c = Conn::new(cache.port);
        c.connect()?;
        let g = c
            .get(path, Some((a, a + RANGE - 1)), Some(s.data))
            .map_err(|e| format!("cold miss at {a}: {e}"))?;
        ttfbs.push(g.ttfb);
        totals.push(g.total);
        drop(c);
        cache.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Cold pass on a fresh cache: origin bytes per client byte.
    let dir = s.dir.join(format!("{tag}-main"));
    let mut cache = Cache::start(kind, &dir, s.origin.port, s.workers)?;
    let before = s.origin.settled();
    let mut c = Conn::new(cache.port);
    let t = Instant::now();
    let mut pass_ttfbs = Vec::new();
    for &a in s.ranges {
        let g = c
            .get(path, Some((a, a + RANGE - 1)), Some(s.data))
            .map_err(|e| format!("cold pass at {a}: {e}"))?;
        pass_ttfbs.push(g.ttfb);
    }
    let cold_secs = t.elapsed().as_secs_f64();
    drop(c);
    let cold_origin = s.origin.settled() - before;
    let client = s.ranges.len() as u64 * RANGE;

    // Hits: the ranges of the cold pass again, several keep-alive clients.
    let before_hits = s.origin.settled();
    let (rps, mibs, errors) = hit_load(cache.port, path, s.ranges, s.conns, s.secs);
    let hit_origin = s.origin.settled() - before_hits;
    if errors > 0 {
        notes.push(format!("{errors} failed requests in the hit phase"));
    }

    // Restart, read the same ranges again (checked byte for byte).
    let before_restart = s.origin.settled();
    if !cache.stop() {
        notes.push("did not exit within 30 s of its stop signal (killed)".into());
    }
    cache.launch()?;
    let mut c = Conn::new(cache.port);
    for &a in s.ranges {
        c.get(path, Some((a, a + RANGE - 1)), Some(s.data))
            .map_err(|e| format!("after restart at {a}: {e}"))?;
    }
    drop(c);
    let refetched = s.origin.settled() - before_restart;
    cache.stop();
    let _ = std::fs::remove_dir_all(&dir);
    if kind == Kind::Varnish {
        notes.push(
            "malloc storage lives in the process: a restart loses every object, so the re-read \
             fetches again (Varnish streams and stores whole objects: one cold range pulls the file)"
                .into(),
        );
    }
    Ok(Row {
        name,
        cold_ttfb: median_time(ttfbs),
        cold_total: median_time(totals),
        pass_ttfb: median_time(pass_ttfbs),
        origin_per_client: cold_origin as f64 / client as f64,
        cold_secs,
        hit_mibs: mibs,
        hit_rps: rps,
        hit_origin,
        refetched,
        notes,
    })
}
