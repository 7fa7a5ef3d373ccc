//! Start-up time against the size of the catalogue: from exec of `vcache serve` to the first cached
//! 206, with `BENCH_VIDEOS` upload videos of 1 MiB (each holding 64 KiB). The data directory is
//! prepared once (the daemon runs, every video gets its PUT, SIGTERM); then the daemon is started
//! `BENCH_RUNS` times and the median is printed. `VCACHE_BIN` picks the binary (default:
//! target/release/vcache), so two builds can be compared on the same data directory
//! (`BENCH_DIR` keeps it between runs).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{env_or, free_port, median, spawn, wait_port};

const VIDEO_LEN: u64 = 1 << 20;
const PIECE: usize = 64 << 10;

/// One request on a fresh connection; the status code, or None if nothing answered.
fn request(port: u16, head: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let line = String::from_utf8_lossy(out.get(..12)?).into_owned();
    line.get(9..12)?.parse().ok()
}

fn config(dir: &std::path::Path, port: u16, videos: usize) -> String {
    let mut c = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nwrite_token = \"t\"\n\n",
        dir.join("data").display()
    );
    for i in 0..videos {
        c.push_str(&format!(
            "[[video]]\nid = \"v{i}\"\nkind = \"upload\"\nsize = {VIDEO_LEN}\n\n"
        ));
    }
    c
}

fn main() {
    let videos: usize = env_or("BENCH_VIDEOS", 1000);
    let runs: usize = env_or("BENCH_RUNS", 5);
    let bin = std::env::var("VCACHE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/vcache")
        });
    let dir = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("vcache-bench-startup-{videos}")));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let port = free_port();
    std::fs::write(dir.join("vcache.toml"), config(&dir, port, videos)).expect("config");
    let serve = || {
        let mut cmd = std::process::Command::new(&bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(dir.join("vcache.toml"));
        spawn(&mut cmd, &dir.join("vcache.log"), libc::SIGTERM).expect("vcache")
    };
    let get = "GET /videos/v0 HTTP/1.1
Host: b
Range: bytes=0-99
Connection: close

";
    if !dir.join("prepared").exists() {
        let mut d = serve();
        wait_port(port);
        let body = vec![0x42u8; PIECE];
        for i in 0..videos {
            let head = format!(
                "PUT /videos/v{i} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\
                 Content-Range: bytes 0-{}/{VIDEO_LEN}\r\nContent-Length: {PIECE}\r\n\
                 Connection: close\r\n\r\n",
                PIECE - 1
            );
            assert_eq!(request(port, &head, &body), Some(200), "PUT v{i}");
        }
        assert!(d.stop_with(libc::SIGTERM, Duration::from_secs(60)));
        std::fs::write(dir.join("prepared"), b"").expect("mark");
    }
    println!(
        "startup benchmark: {} ({}), {videos} upload videos of {VIDEO_LEN} bytes, exec -> first 206",
        bin.display(),
        std::env::var("BENCH_LABEL").unwrap_or_default()
    );
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut d = serve();
        let status = loop {
            if let Some(s) = request(port, get, b"") {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "no answer");
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = t.elapsed().as_secs_f64();
        assert_eq!(status, 206);
        times.push(took);
        assert!(d.stop_with(libc::SIGTERM, Duration::from_secs(60)));
    }
    println!(
        "  exec -> first 206: median {:.3} s over {runs} runs (min {:.3}, max {:.3})",
        median(&times),
        times.iter().cloned().fold(f64::MAX, f64::min),
        times.iter().cloned().fold(0.0, f64::max)
    );
}
