//! Serving benchmark: random byte ranges of one file video over loopback, from vcache with each send
//! path (sendfile, map slice), from nginx on the same file, and the loopback ceiling (a plain socket
//! writer) — printed side by side. Run: `cargo bench --bench serve` (nginx from Debian's nginx-light;
//! skipped with a note when absent). Environment: BENCH_SECS (default 5), BENCH_FILE_MIB (default 256).

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Figures {
    requests: u64,
    bytes: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Figures {
    fn line(&mut self, name: &str) -> String {
        self.lat_us.sort_unstable();
        let pct = |p: f64| {
            if self.lat_us.is_empty() {
                0
            } else {
                self.lat_us[((self.lat_us.len() as f64 - 1.0) * p) as usize]
            }
        };
        format!(
            "{name:<28} {:>10.0} req/s {:>9.1} MiB/s   p50 {:>7} us   p99 {:>7} us",
            self.requests as f64 / self.secs,
            self.bytes as f64 / self.secs / (1 << 20) as f64,
            pct(0.5),
            pct(0.99)
        )
    }
}

/// `conns` keep-alive clients asking random `range`-byte ranges of a `len`-byte file for `secs`.
fn load(port: u16, path: &str, len: u64, range: u64, conns: usize, secs: f64) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for c in 0..conns {
        let stop = stop.clone();
        let path = path.to_string();
        handles.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_nodelay(true).ok();
            let mut buf = vec![0u8; (range as usize).max(64 * 1024)];
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1);
            let (mut reqs, mut bytes, mut lat) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let start = x % (len - range);
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: b\r\nRange: bytes={start}-{}\r\n\r\n",
                    start + range - 1
                );
                let t = Instant::now();
                s.write_all(req.as_bytes()).expect("send");
                // Read the head.
                let mut head = Vec::new();
                let mut one = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut one).expect("head");
                    head.push(one[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(text.starts_with("http/1.1 206"), "unexpected {text}");
                let cl: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                let mut left = cl;
                let cap = buf.len();
                while left > 0 {
                    let n = s.read(&mut buf[..left.min(cap)]).expect("body");
                    assert!(n > 0, "early close");
                    left -= n;
                }
                lat.push(t.elapsed().as_micros() as u64);
                reqs += 1;
                bytes += cl as u64;
            }
            (reqs, bytes, lat)
        }));
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut f = Figures {
        requests: 0,
        bytes: 0,
        secs: 0.0,
        lat_us: Vec::new(),
    };
    for h in handles {
        let (r, b, l) = h.join().expect("client thread");
        f.requests += r;
        f.bytes += b;
        f.lat_us.extend(l);
    }
    f.secs = t0.elapsed().as_secs_f64();
    f
}

/// The loopback ceiling: one writer thread per connection pushing a 1 MiB buffer, readers draining.
fn loopback_ceiling(conns: usize, secs: f64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let server = std::thread::spawn(move || {
        let mut writers = Vec::new();
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            let stop = s2.clone();
            writers.push(std::thread::spawn(move || {
                let buf = vec![7u8; 1 << 20];
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                }
            }));
        }
        for w in writers {
            let _ = w.join();
        }
    });
    let mut readers = Vec::new();
    for _ in 0..conns {
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n as u64,
                }
            }
            total
        }));
    }
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|r| r.join().unwrap_or(0)).sum();
    let secs = t0.elapsed().as_secs_f64();
    let _ = server.join();
    total as f64 / secs / (1 << 20) as f64
}

fn start_vcache(dir: &Path, send_path: &str) -> (Killer, u16) {
    let port = free_port();
    let cfg = dir.join(format!("vcache-{send_path}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"movie\"\nkind = \"file\"\npath = \"movie.ts\"\n"
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_vcache"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("VCACHE_SEND_PATH", send_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vcache");
    wait_port(port);
    (Killer(child), port)
}

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn start_nginx(dir: &Path, workers: usize) -> Option<(Killer, u16)> {
    let bin = nginx_bin()?;
    let port = free_port();
    let conf = dir.join(format!("nginx-{workers}.conf"));
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes {workers};\npid {d}/nginx-{workers}.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; root {d}; location / {{ }} }} }}\n"
        ),
    )
    .ok()?;
    std::fs::create_dir_all(dir.join("tmp")).ok()?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_port(port);
    Some((Killer(child), port))
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let mib: u64 = std::env::var("BENCH_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = std::env::temp_dir().join(format!("vcache-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let len = mib << 20;
    let mut data = vec![0u8; len as usize];
    let mut x = 88172645463325252u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(dir.join("movie.ts"), &data).expect("write file");
    drop(data);
    // Warm the page cache so every server serves from memory.
    let _ = std::fs::read(dir.join("movie.ts"));

    println!(
        "serve benchmark: {mib} MiB file, random ranges, {secs} s per row, {} cores, loopback",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let workloads: [(u64, usize); 3] = [(1 << 20, 8), (1 << 20, 64), (4096, 64)];
    for (range, conns) in workloads {
        println!(
            "\n-- {} ranges, {conns} keep-alive connections",
            if range >= 1 << 20 {
                format!("{} MiB", range >> 20)
            } else {
                format!("{} KiB", range >> 10)
            }
        );
        for send_path in ["sendfile", "mmap"] {
            let (_d, port) = start_vcache(&dir, send_path);
            let mut f = load(port, "/videos/movie", len, range, conns, secs);
            println!("{}", f.line(&format!("vcache ({send_path})")));
        }
        for workers in [1, 2] {
            match start_nginx(&dir, workers) {
                Some((_n, port)) => {
                    let mut f = load(port, "/movie.ts", len, range, conns, secs);
                    println!("{}", f.line(&format!("nginx ({workers} worker)")));
                }
                None => println!("nginx: not installed (apt-get install nginx-light); row skipped"),
            }
        }
    }
    println!(
        "\nloopback ceiling (plain socket writes, 8 connections): {:.1} MiB/s",
        loopback_ceiling(8, secs)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
