//! Start-up time against the size of the catalogue, beside nginx `proxy_cache`, in one run:
//!
//! - **clean**: exec of `vcache serve` → the first cached 206 of `v0`, with `BENCH_VIDEOS` upload
//!   videos of 1 MiB (each holding 64 KiB) after a clean stop;
//! - **recovering**: the same while the config's first video, `big` (`BENCH_DIRTY_MB` MiB, filled by
//!   PUTs in `interval` mode), recovers from a kill -9 that left its data dirty in the page cache: its
//!   data file must be synced before its record is trusted. Printed: exec → first 206 of `v0`, and of
//!   `big` (which waits for its sync), and the `Dirty:` of /proc/meminfo at the kill;
//! - **nginx**: exec of nginx (proxy_cache, the same number of cached 64 KiB objects, its origin
//!   stopped so that only a cache hit can answer) → the first 206 of `v0`.
//!
//! Rounds are interleaved (clean, recovering, nginx) and medians printed with the ratios. The data
//! directory and the nginx cache are prepared once (`BENCH_DIR` keeps them between runs); preparing
//! also times creating the videos on a fresh data_dir (exec → /healthz, and → every video opened).
//! `VCACHE_BIN` picks the binary (default: target/release/vcache).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::origin::{nginx_common, nginx_temp_paths, start_nginx};
use common::{Proc, env_or, free_port, median, spawn, wait_port};

const VIDEO_LEN: u64 = 1 << 20;
const PIECE: usize = 64 << 10;
const PUT_CHUNK: usize = 16 << 20;

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

fn get(id: &str) -> String {
    format!(
        "GET /videos/{id} HTTP/1.1\r\nHost: b\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n"
    )
}

fn put_head(id: &str, start: u64, len: usize, total: u64) -> String {
    format!(
        "PUT /videos/{id} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\
         Content-Range: bytes {start}-{}/{total}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n",
        start + len as u64 - 1
    )
}

fn config(dir: &Path, port: u16, videos: usize, big: u64) -> String {
    let mut c = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nwrite_token = \"t\"\n\
         sync = \"interval\"\ncheckpoint_interval_ms = 3600000\n\n\
         [[video]]\nid = \"big\"\nkind = \"upload\"\nsize = {big}\n\n",
        dir.join("data").display()
    );
    for i in 0..videos {
        c.push_str(&format!(
            "[[video]]\nid = \"v{i}\"\nkind = \"upload\"\nsize = {VIDEO_LEN}\n\n"
        ));
    }
    c
}

/// Poll until `head` answers (2 ms apart); the time since `t` and the status.
fn first_answer(port: u16, head: &str, t: Instant) -> (f64, u16) {
    loop {
        if let Some(s) = request(port, head, b"") {
            return (t.elapsed().as_secs_f64(), s);
        }
        assert!(t.elapsed() < Duration::from_secs(600), "no answer");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn dirty_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Dirty:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Bench {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    videos: usize,
    big: u64,
}

impl Bench {
    fn serve(&self) -> Proc {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.dir.join("vcache.toml"));
        spawn(&mut cmd, &self.dir.join("vcache.log"), libc::SIGTERM).expect("vcache")
    }

    /// Create every video on a fresh data_dir and give each its 64 KiB; print how long creating took.
    fn prepare(&self) {
        let t = Instant::now();
        let mut d = self.serve();
        let (healthz, _) = first_answer(
            self.port,
            "GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
            t,
        );
        let readyz = "GET /readyz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
        while request(self.port, readyz, b"") != Some(200) {
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "  fresh data_dir: exec -> /healthz {:.3} s, -> /readyz 200 (all {} videos created) {:.1} s",
            healthz,
            self.videos + 1,
            t.elapsed().as_secs_f64()
        );
        let body = vec![0x42u8; PIECE];
        for i in 0..self.videos {
            let head = put_head(&format!("v{i}"), 0, PIECE, VIDEO_LEN);
            assert_eq!(request(self.port, &head, &body), Some(200), "PUT v{i}");
        }
        assert!(d.stop_with(libc::SIGTERM, Duration::from_secs(120)));
    }

    /// Fill `big` with PUTs (after a DELETE of what an earlier round left), kill -9; the dirty KiB then.
    fn dirty_big(&self) -> u64 {
        let mut d = self.serve();
        wait_port(self.port);
        let del = "DELETE /videos/big HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\
                   Connection: close\r\n\r\n";
        let mut status = None;
        for _ in 0..30_000 {
            status = request(self.port, del, b"");
            if matches!(status, Some(200 | 204)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(matches!(status, Some(200 | 204)), "DELETE big: {status:?}");
        let chunk = vec![0x5Au8; PUT_CHUNK];
        let mut at = 0u64;
        while at < self.big {
            let n = (self.big - at).min(PUT_CHUNK as u64) as usize;
            let head = put_head("big", at, n, self.big);
            assert_eq!(
                request(self.port, &head, &chunk[..n]),
                Some(200),
                "PUT big@{at}"
            );
            at += n as u64;
        }
        let dirty = dirty_kib();
        assert!(d.stop_with(libc::SIGKILL, Duration::from_secs(10)));
        dirty
    }

    /// exec → /healthz answered (reading the config and listening: no video need be open), then a
    /// clean stop.
    fn healthz_round(&self) -> f64 {
        let t = Instant::now();
        let mut d = self.serve();
        let (took, status) = first_answer(
            self.port,
            "GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
            t,
        );
        assert_eq!(status, 200, "/healthz");
        assert!(d.stop_with(libc::SIGTERM, Duration::from_secs(600)));
        took
    }

    /// exec → first 206 of `v0` (and of `big` if asked), then a clean stop.
    fn round(&self, also_big: bool) -> (f64, Option<f64>) {
        let t = Instant::now();
        let mut d = self.serve();
        let (v0, status) = first_answer(self.port, &get("v0"), t);
        assert_eq!(status, 206, "v0");
        let big = also_big.then(|| {
            let (took, status) = first_answer(self.port, &get("big"), t);
            assert_eq!(status, 206, "big");
            took
        });
        assert!(d.stop_with(libc::SIGTERM, Duration::from_secs(600)));
        (v0, big)
    }
}

/// nginx proxy_cache holding `videos` objects of 64 KiB: the origin (nginx over `www/`) fills the
/// cache once and is stopped; each round starts the cache alone.
struct Nginx {
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn conf(&self, origin_port: u16) -> String {
        let d = self.dir.display();
        format!(
            "{}http {{ access_log off; {}\
             proxy_cache_path {d}/cache levels=1:2 keys_zone=c:64m max_size=8g inactive=30d \
             use_temp_path=off;\n\
             server {{ listen 127.0.0.1:{}; location /videos/ {{ proxy_cache c; \
             proxy_cache_valid 200 206 30d; proxy_cache_key $uri; \
             proxy_pass http://127.0.0.1:{origin_port}/; }} }} }}\n",
            nginx_common(&self.dir, "cache", 1),
            nginx_temp_paths(&self.dir),
            self.port,
        )
    }

    fn prepare(&self, videos: usize) {
        let www = self.dir.join("www");
        std::fs::create_dir_all(&www).expect("www");
        let body = vec![0x42u8; PIECE];
        for i in 0..videos {
            std::fs::write(www.join(format!("v{i}")), &body).expect("origin file");
        }
        let origin_port = free_port();
        let d = self.dir.display();
        let origin_conf = format!(
            "{}http {{ access_log off; {}server {{ listen 127.0.0.1:{origin_port}; root {d}/www; }} }}\n",
            nginx_common(&self.dir, "origin", 1),
            nginx_temp_paths(&self.dir),
        );
        let _origin = start_nginx(&self.dir, "origin", origin_conf).expect("origin nginx");
        wait_port(origin_port);
        let _cache = start_nginx(&self.dir, "cache", self.conf(origin_port)).expect("cache nginx");
        wait_port(self.port);
        for i in 0..videos {
            assert_eq!(request(self.port, &get(&format!("v{i}")), b""), Some(206));
        }
        std::fs::write(self.dir.join("origin-port"), origin_port.to_string()).expect("mark");
    }

    fn round(&self) -> f64 {
        // The origin's port, now closed: only a cache hit can answer 206.
        let origin_port = std::fs::read_to_string(self.dir.join("origin-port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(1);
        let t = Instant::now();
        let _cache = start_nginx(&self.dir, "cache", self.conf(origin_port)).expect("cache nginx");
        let (took, status) = first_answer(self.port, &get("v0"), t);
        assert_eq!(status, 206, "nginx: v0 not a cache hit");
        took
    }
}

/// Two descriptors per video (data, metadata): raise the limit the daemon inherits to what
/// systemd/vcache.service sets (LimitNOFILE=131072); a hard limit can only be raised as root.
fn raise_fd_limit() -> u64 {
    const WANT: libc::rlim_t = 131_072;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_max < WANT {
            let raised = libc::rlimit {
                rlim_cur: WANT,
                rlim_max: WANT,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
    common::raise_nofile()
}

fn main() {
    let asked: usize = env_or("BENCH_VIDEOS", 10_000);
    let fds = raise_fd_limit() as usize;
    // `big`, and ~100 descriptors for the listener, the loop, logs and connections.
    let videos = asked.min(fds.saturating_sub(100) / 2 - 1);
    if videos < asked {
        println!(
            "  NOTE: RLIMIT_NOFILE is {fds} and cannot be raised here (not root, or no \
             CAP_SYS_RESOURCE): {videos} videos instead of {asked} (two descriptors each)"
        );
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let big: u64 = env_or::<u64>("BENCH_DIRTY_MB", 6144) << 20;
    let bin = std::env::var("VCACHE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/vcache")
        });
    let dir = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("vcache-bench-startup-{videos}")));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let b = Bench {
        bin,
        dir: dir.clone(),
        port: free_port(),
        videos,
        big,
    };
    std::fs::write(dir.join("vcache.toml"), config(&dir, b.port, videos, big)).expect("config");
    let nginx = Nginx {
        dir: dir.join("nginx"),
        port: free_port(),
    };
    println!(
        "startup benchmark: {} ({}), {videos} upload videos of {VIDEO_LEN} bytes (64 KiB each \
         present) + `big` of {} MiB; nginx proxy_cache with {videos} cached objects of 64 KiB",
        b.bin.display(),
        std::env::var("BENCH_LABEL").unwrap_or_default(),
        big >> 20
    );
    if !dir.join("prepared").exists() {
        let _ = std::fs::remove_dir_all(dir.join("data"));
        let _ = std::fs::remove_dir_all(&nginx.dir);
        b.prepare();
        nginx.prepare(videos);
        std::fs::write(dir.join("prepared"), b"").expect("mark");
    }
    let meta: u64 = std::fs::read_dir(dir.join("data"))
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "meta"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!("  metadata of {} videos: {} MiB", videos + 1, meta >> 20);
    let (mut clean, mut during, mut big_ready, mut ng, mut dirty, mut healthz) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..runs {
        healthz.push(b.healthz_round());
        clean.push(b.round(false).0);
        dirty.push(b.dirty_big() as f64 / (1 << 20) as f64);
        let (v0, big_t) = b.round(true);
        during.push(v0);
        big_ready.push(big_t.unwrap_or(0.0));
        ng.push(nginx.round());
    }
    let show = |name: &str, v: &[f64]| {
        println!(
            "  {name}: median {:.1} ms (min {:.1}, max {:.1}), {:.2}x nginx",
            median(v) * 1e3,
            v.iter().cloned().fold(f64::MAX, f64::min) * 1e3,
            v.iter().cloned().fold(0.0, f64::max) * 1e3,
            median(v) / median(&ng)
        );
    };
    println!("  {runs} interleaved rounds; exec -> first answer:");
    show("vcache, /healthz (the config read, listening)", &healthz);
    show("vcache, clean stop, v0", &clean);
    show("vcache, v0 while `big` recovers", &during);
    show("vcache, `big` itself (after its sync)", &big_ready);
    show("nginx proxy_cache, v0 (hit)", &ng);
    println!(
        "  dirty at the kill: median {:.2} GiB (min {:.2}, max {:.2})",
        median(&dirty),
        dirty.iter().cloned().fold(f64::MAX, f64::min),
        dirty.iter().cloned().fold(0.0, f64::max)
    );
}
