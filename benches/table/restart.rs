//! `restart`: time from the exec of the server to its first cached 206, with several GiB cached —
//! vcache with BENCH_RESTART_SLOTS (8) upload slots of BENCH_RESTART_SLOT_MIB (1024) filled once, beside
//! nginx `proxy_cache` holding the same number of objects of the same size (its origin stopped, so
//! only a HIT can answer).

use crate::common::*;
use crate::{Ctx, Report, Samples, exchange, nginx_conf, nginx_path, start_nginx, start_vcache};

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Poll `path` (bytes 0-65535) until a 206 (with `X-Cache: HIT` when `hit`); ms since `t0`.
fn first_206(port: u16, path: &str, hit: bool, t0: Instant) -> f64 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: b\r\nRange: bytes=0-65535\r\n\r\n");
    let mut scratch = vec![0u8; 1 << 17];
    let mut last = String::from("nothing listened");
    while t0.elapsed() < Duration::from_secs(60) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        match exchange(&mut s, req.as_bytes(), &[], &mut scratch) {
            Ok((206, h, _)) if !hit || crate::header(&h, "x-cache") == Some("hit") => {
                return t0.elapsed().as_secs_f64() * 1e3;
            }
            Ok((_, h, _)) => last = h,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("restart: no cached 206 from {path} within 60 s; last: {last}");
}

fn vcache_body(slots: u64, size: u64) -> String {
    let mut b = format!("[limits]\nmax_body_bytes = {size}\n\n");
    for i in 0..slots {
        b += &format!("[[video]]\nid = \"r{i}\"\nkind = \"upload\"\nsize = {size}\n\n");
    }
    b
}

/// Fill every slot with one PUT of its whole size, then stop vcache gracefully.
fn fill_vcache(ctx: &Ctx, slots: u64, size: u64) {
    let (mut p, port) = start_vcache(ctx, "restart", &vcache_body(slots, size), &[]);
    let buf = random_bytes(16 << 20);
    let mut scratch = vec![0u8; 16384];
    for i in 0..slots {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let head = format!(
            "PUT /videos/r{i} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\nContent-Length: {size}\r\n\
             Content-Range: bytes 0-{}/{size}\r\n\r\n",
            size - 1
        );
        s.write_all(head.as_bytes()).expect("head");
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).expect("body");
            left -= n as u64;
        }
        let (status, h, _) = crate::read_answer(&mut s, &mut scratch).expect("answer");
        assert!(status == 200, "restart: filling r{i}: {h}");
    }
    assert!(
        p.stop_with(libc::SIGTERM, Duration::from_secs(300)),
        "restart: vcache did not stop"
    );
}

fn cache_http(ctx: &Ctx, origin: u16) -> String {
    format!(
        "proxy_cache_path {}/pcache levels=1:2 keys_zone=rc:32m max_size=100g inactive=7d use_temp_path=off;\n\
         server {{ listen 127.0.0.1:{{port}}; location / {{ proxy_pass http://127.0.0.1:{origin};\n\
         proxy_cache rc; proxy_cache_key $uri; proxy_cache_valid 200 7d;\n\
         add_header X-Cache $upstream_cache_status always; }} }}\n",
        ctx.dir.display()
    )
}

/// Objects /m0 … through nginx proxy_cache (the origin serves sparse files); returns the cache's
/// http block, to be started again once the origin is gone.
fn fill_nginx(ctx: &Ctx, slots: u64, size: u64) -> String {
    let www = ctx.dir.join("www-restart");
    std::fs::create_dir_all(&www).expect("www");
    for i in 0..slots {
        let f = std::fs::File::create(www.join(format!("m{i}"))).expect("origin file");
        f.set_len(size).expect("sparse origin file");
    }
    let o = format!(
        "server {{ listen 127.0.0.1:{{port}}; root {}; location / {{ }} }}\n",
        www.display()
    );
    let (_origin, op) = start_nginx(ctx, "restart-origin", 1, 1024, &o);
    let http = cache_http(ctx, op);
    let (_cache, port) = start_nginx(ctx, "restart-cache", 1, 1024, &http);
    let mut scratch = vec![0u8; 1 << 20];
    for i in 0..slots {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let req = format!("GET /m{i} HTTP/1.1\r\nHost: b\r\n\r\n");
        let (status, h, n) = exchange(&mut s, req.as_bytes(), &[], &mut scratch).expect("fill");
        assert!(
            status == 200 && n == size,
            "restart: filling nginx /m{i}: {h}"
        );
    }
    first_206(port, "/m0", true, Instant::now());
    http
}

pub fn run(ctx: &Ctx, report: &mut Report) {
    let slots: u64 = env_or("BENCH_RESTART_SLOTS", 8);
    let size = env_or::<u64>("BENCH_RESTART_SLOT_MIB", 1024) * MIB;
    eprintln!(
        "restart: filling {slots} x {} MiB in vcache and in nginx proxy_cache",
        size / MIB
    );
    fill_vcache(ctx, slots, size);
    let http = fill_nginx(ctx, slots, size);
    let mut s = Samples::default();
    for round in 0..ctx.rounds as u64 {
        let port = free_port();
        let cfg = crate::vcache_config(ctx, "restart", port, &vcache_body(slots, size));
        let t0 = Instant::now();
        let mut p = spawn(
            &mut crate::vcache_cmd(&cfg),
            &ctx.dir.join("vcache-restart.log"),
            libc::SIGTERM,
        )
        .expect("spawn vcache");
        s.add(
            "vcache",
            first_206(port, &format!("/videos/r{}", round % slots), false, t0),
        );
        p.stop_with(libc::SIGTERM, Duration::from_secs(60));
        let (conf, port) = nginx_conf(ctx, "restart-cache", 1, 1024, &http);
        let path = ctx.dir.join("restart-cache.conf");
        std::fs::write(&path, conf).expect("nginx conf");
        let t0 = Instant::now();
        let mut cmd = Command::new(nginx_path());
        cmd.arg("-c").arg(&path).arg("-p").arg(&ctx.dir);
        let mut p = spawn(&mut cmd, &ctx.dir.join("restart-cache.out"), libc::SIGQUIT)
            .expect("spawn nginx");
        s.add(
            "nginx",
            first_206(port, &format!("/m{}", round % slots), true, t0),
        );
        p.stop_with(libc::SIGQUIT, Duration::from_secs(30));
        eprintln!(
            "restart round {round}: vcache {:.1} ms, nginx {:.1} ms",
            s.med("vcache"),
            s.med("nginx")
        );
    }
    report.row(
        &format!(
            "restart: exec to first cached 206 (ms), {slots} x {} MiB cached",
            size / MIB
        ),
        Some(s.med("vcache")),
        "nginx proxy_cache, 1 worker (HIT)",
        Some(s.med("nginx")),
    );
    report.notes.push(
        "restart: the clock starts just before spawn; the client retries connect every 0.2 ms; nginx's \
         origin is stopped, so only a HIT from its on-disk cache can answer"
            .into(),
    );
}
