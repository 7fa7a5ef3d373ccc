//! Acknowledged PUTs per second on a fragmented presence map (`sync = "interval"`): the cost of the
//! fast record each acknowledgement waits for. One upload slot is first cut into `BENCH_RANGES`
//! separate ranges (32 bytes every 64); then `BENCH_CONNS` keep-alive clients PUT 8-byte pieces that
//! extend those ranges (the map keeps its size) for `BENCH_SECS`. Prints the figure.
//! `VCACHE_BIN` picks the binary (default: target/release/vcache), so two builds can be compared.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{env_or, free_port, spawn, wait_port};

const SPACING: u64 = 64;
/// BENCH_RANGES, for the piece-to-offset functions.
static RANGES: AtomicU64 = AtomicU64::new(1);
const SIZE: u64 = 8 << 20;

/// One PUT on a keep-alive connection; true on 200.
fn put(s: &mut BufReader<TcpStream>, start: u64, body: &[u8]) -> bool {
    let head = format!(
        "PUT /videos/slot HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\
         Content-Range: bytes {start}-{}/{SIZE}\r\nContent-Length: {}\r\n\r\n",
        start + body.len() as u64 - 1,
        body.len()
    );
    let stream = s.get_mut();
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return false;
    }
    let mut line = String::new();
    if s.read_line(&mut line).is_err() {
        return false;
    }
    let ok = line.starts_with("HTTP/1.1 200");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if s.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut sink = vec![0u8; len];
    ok && s.read_exact(&mut sink).is_ok()
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    BufReader::new(s)
}

/// Run `conns` clients taking piece numbers from a shared counter until `stop` says so; each piece
/// `i` is PUT at `at(i)`. Returns the number of 200s.
fn storm(
    port: u16,
    conns: usize,
    pieces: usize,
    len: usize,
    deadline: Option<Instant>,
    at: fn(u64) -> u64,
) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (next, ok) = (next.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut s = connect(port);
                let body = vec![0x5Au8; len];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pieces || deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    if put(&mut s, at(i as u64), &body) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        s = connect(port);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    ok.load(Ordering::Relaxed)
}

fn main() {
    let ranges: usize = env_or("BENCH_RANGES", 64_900);
    let conns: usize = env_or("BENCH_CONNS", 16);
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let bin = std::env::var("VCACHE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/vcache")
        });
    assert!((ranges as u64) * SPACING <= SIZE, "BENCH_RANGES too large");
    RANGES.store(ranges as u64, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vcache-bench-records-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nwrite_token = \"t\"\n\
         sync = \"interval\"\ncheckpoint_interval_ms = 1000\n\n[limits]\nmax_presence_ranges = 65000\n\
         max_connections = 256\n\n[[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = {SIZE}\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("vcache.toml"), config).expect("config");
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("vcache.toml"));
    let mut daemon = spawn(&mut cmd, &dir.join("vcache.log"), libc::SIGTERM).expect("vcache");
    wait_port(port);
    println!(
        "records benchmark: {} ({}), one upload slot of {SIZE} bytes, sync = interval, {conns} keep-alive clients",
        bin.display(),
        std::env::var("BENCH_LABEL").unwrap_or_default()
    );
    let t = Instant::now();
    let made = storm(port, conns, ranges, 32, None, |i| i * SPACING);
    assert_eq!(
        made, ranges as u64,
        "every range of the fragmented map was PUT"
    );
    let fill = t.elapsed().as_secs_f64();
    println!(
        "  cutting the map into {ranges} ranges: {fill:.1} s ({:.0} PUTs/s while it grows)",
        ranges as f64 / fill
    );
    let t = Instant::now();
    let deadline = t + Duration::from_secs_f64(secs);
    let done = storm(port, conns, ranges * 3, 8, Some(deadline), |i| {
        let n = RANGES.load(Ordering::Relaxed);
        let (range, round) = (i % n, i / n);
        range * SPACING + 32 + 8 * round
    });
    let rate = done as f64 / t.elapsed().as_secs_f64();
    println!("  acknowledged PUTs/s on the {ranges}-range map: {rate:.0} ({done} in {secs} s)");
    assert!(
        daemon.stop_with(libc::SIGTERM, Duration::from_secs(30)),
        "vcache stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
