//! `connections`: BENCH_IDLE_CONNS (18,000) idle keep-alive connections, each after one small request;
//! the server's resident memory growth per connection (VmRSS before and after) — vcache beside nginx
//! with one worker (worker_connections big enough).

use crate::common::*;
use crate::{Ctx, Report, Samples, exchange, start_nginx, start_vcache};

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Open `n` connections, one request each, kept open; returns them.
fn open(port: u16, n: usize, req: &[u8]) -> Vec<TcpStream> {
    let mut scratch = vec![0u8; 16384];
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("connections: connect #{i}: {e}"));
            let (status, head, _) = exchange(&mut s, req, &[], &mut scratch)
                .unwrap_or_else(|e| panic!("connections: request on #{i}: {e}"));
            assert!(status == 200, "connections: #{i}: {head}");
            s
        })
        .collect()
}

/// Close with a reset (SO_LINGER 0): no TIME_WAIT left behind for the next run's ports.
fn reset(conns: Vec<TcpStream>) {
    for s in conns {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            );
        }
    }
}

/// RSS growth per connection of `pid` while `n` connections are open.
fn per_conn(pid: i32, port: u16, n: usize, req: &[u8]) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_bytes(pid);
    let conns = open(port, n, req);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes(pid);
    reset(conns);
    (after as f64 - before as f64) / n as f64
}

pub fn run(ctx: &Ctx, report: &mut Report) {
    let n: usize = env_or("BENCH_IDLE_CONNS", 18000);
    let nofile = raise_nofile();
    assert!(
        nofile as usize > n + 500,
        "connections: RLIMIT_NOFILE {nofile} is too small for {n} connections (lower BENCH_IDLE_CONNS)"
    );
    std::fs::write(ctx.dir.join("small.txt"), b"ok\n").expect("small file");
    let body = format!(
        "[limits]\nmax_connections = {}\nidle_timeout_ms = 600000\n",
        n + 100
    );
    let http = format!(
        "server {{ listen 127.0.0.1:{{port}} backlog=4096; root {}; location / {{ }} }}\n",
        ctx.dir.display()
    );
    let mut s = Samples::default();
    for round in 0..ctx.rounds {
        let (p, port) = start_vcache(ctx, "conns", &body, &[]);
        let v = per_conn(
            p.pid(),
            port,
            n,
            b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n",
        );
        drop(p);
        let (p, port) = start_nginx(ctx, "conns", 1, n + 100, &http);
        let worker = *children(p.pid()).first().expect("nginx worker");
        let x = per_conn(
            worker,
            port,
            n,
            b"GET /small.txt HTTP/1.1\r\nHost: b\r\n\r\n",
        );
        drop(p);
        eprintln!("connections round {round}: vcache {v:.0} B/conn, nginx {x:.0} B/conn");
        s.add("vcache", v);
        s.add("nginx", x);
    }
    report.row(
        &format!("connections: RSS growth per idle keep-alive conn (bytes), {n} conns"),
        Some(s.med("vcache")),
        "nginx, 1 worker",
        Some(s.med("nginx")),
    );
    report.notes.push(
        "connections: each connection made one request (vcache GET /healthz, nginx a 3-byte file) and \
         then idles; RSS of the vcache process / the nginx worker; kernel socket memory is in neither; \
         nginx allocates its worker_connections array at start, so that part is in its 'before'"
            .into(),
    );
}
