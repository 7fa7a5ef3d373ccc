//! `serve`: random byte ranges of one file video (`kind = "file"`) over keep-alive connections, from
//! vcache (its default send path, a writev of a map slice, and VCACHE_SEND_PATH=sendfile) and from nginx (sendfile, 1 and 2
//! workers; the better is the baseline). One client thread per connection.

use crate::common::*;
use crate::{Ctx, Report, Samples, exchange, start_nginx, start_vcache};

use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Range size, connections, whether the figure is MiB/s (else req/s), label.
const LOADS: [(u64, usize, bool, &str); 2] = [
    (20 << 20, 8, true, "20 MiB ranges x8 conns, MiB/s"),
    (64 << 10, 256, false, "64 KiB ranges x256 conns, req/s"),
];

const SERVERS: [&str; 4] = ["vcache", "nginx1", "vcache-sendfile", "nginx2"];

/// The 1 GiB (BENCH_SERVE_MIB) random file, made once.
pub fn movie(ctx: &Ctx) -> (PathBuf, u64) {
    let len = env_or::<u64>("BENCH_SERVE_MIB", 1024) * MIB;
    let path = ctx.dir.join("movie.ts");
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(len) {
        std::fs::write(&path, random_bytes(len as usize)).expect("write movie.ts");
    }
    (path, len)
}

/// `conns` clients asking random `range`-byte ranges of `len` bytes at `path` for `secs`:
/// (MiB/s, req/s).
fn load(port: u16, path: &str, len: u64, range: u64, conns: usize, secs: f64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let (stop, path) = (stop.clone(), path.to_string());
            std::thread::spawn(move || client(port, &path, len, range, c as u64, &stop))
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut reqs, mut bytes) = (0u64, 0u64);
    for h in handles {
        let (r, b) = h.join().expect("client thread");
        reqs += r;
        bytes += b;
    }
    let s = t0.elapsed().as_secs_f64();
    (bytes as f64 / s / MIB as f64, reqs as f64 / s)
}

fn client(port: u16, path: &str, len: u64, range: u64, seed: u64, stop: &AtomicBool) -> (u64, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    let mut scratch = vec![0u8; (range as usize + 4096).min(1 << 20)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1));
    let (mut reqs, mut bytes) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let a = rng.next() % (len - range);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: b\r\nRange: bytes={a}-{}\r\n\r\n",
            a + range - 1
        );
        let (status, head, n) =
            exchange(&mut s, req.as_bytes(), &[], &mut scratch).expect("answer");
        assert!(
            status == 206 && n == range,
            "serve: unexpected answer {head}"
        );
        reqs += 1;
        bytes += n;
    }
    (reqs, bytes)
}

fn measure(ctx: &Ctx, server: &str, range: u64, conns: usize, len: u64) -> (f64, f64) {
    let vcache_body = "[limits]\nmax_connections = 4096\n\n[[video]]\nid = \"movie\"\nkind = \"file\"\npath = \"movie.ts\"\n";
    let nginx_http = format!(
        "sendfile on; sendfile_max_chunk 2m; open_file_cache max=64;\n\
         server {{ listen 127.0.0.1:{{port}}; root {}; location / {{ }} }}\n",
        ctx.dir.display()
    );
    match server {
        "vcache" | "vcache-sendfile" => {
            let env: &[(&str, &str)] = if server == "vcache" {
                &[]
            } else {
                &[("VCACHE_SEND_PATH", "sendfile")]
            };
            let (_p, port) = start_vcache(ctx, "serve", vcache_body, env);
            load(port, "/videos/movie", len, range, conns, ctx.secs)
        }
        _ => {
            let workers = if server == "nginx1" { 1 } else { 2 };
            let (_p, port) = start_nginx(ctx, "serve", workers, 4096, &nginx_http);
            load(port, "/movie.ts", len, range, conns, ctx.secs)
        }
    }
}

pub fn run(ctx: &Ctx, report: &mut Report) {
    let (path, len) = movie(ctx);
    let _ = std::fs::read(&path); // into the page cache
    let mut s = Samples::default();
    for round in 0..ctx.rounds {
        for (range, conns, mibs, label) in LOADS {
            for server in SERVERS {
                let (m, r) = measure(ctx, server, range, conns, len);
                let v = if mibs { m } else { r };
                eprintln!("serve round {round}: {label}: {server} {v:.0}");
                s.add(&format!("{label}/{server}"), v);
            }
        }
    }
    for (_, _, _, label) in LOADS {
        let n1 = s.med(&format!("{label}/nginx1"));
        let n2 = s.med(&format!("{label}/nginx2"));
        let (best, other, w, ow) = if n2 > n1 {
            (n2, n1, 2, 1)
        } else {
            (n1, n2, 1, 2)
        };
        let base = format!("nginx sendfile {w}w (best; {ow}w {other:.0})");
        for (server, name) in [
            ("vcache", "map slice, the default"),
            ("vcache-sendfile", "SEND_PATH=sendfile"),
        ] {
            let v = s.med(&format!("{label}/{server}"));
            report.row(
                &format!("serve {label} ({name})"),
                Some(v),
                &base,
                Some(best),
            );
        }
    }
    report.notes.push(format!(
        "serve: {} MiB file in the page cache, random offsets, one blocking client thread per connection \
         on the same 2 cores; nginx: sendfile on, sendfile_max_chunk 2m (the default), tcp_nopush off (the default: with it on, \
         64 KiB ranges stalled ~40 ms each at 8 connections), \
         open_file_cache, aio off (the default)",
        len / MIB
    ));
}
