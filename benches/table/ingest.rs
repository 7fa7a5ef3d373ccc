//! `ingest`: 1 MiB PUTs over 4 keep-alive connections for BENCH_SECS. vcache: ranged PUTs
//! (`Content-Range: bytes a-b/N`) into fresh `upload` slots, written front to back, connection c owning
//! chunks c, c+4, c+8, …; nginx DAV: whole-file PUTs of the same bodies, one file per chunk; the
//! ceiling: the same bodies written to a plain socket sink (reader threads, no HTTP). GiB/s, and CPU
//! ms per GiB of the server processes from /proc/<pid>/stat.

use crate::common::*;
use crate::{Ctx, Report, Samples, nginx_cpu, read_answer, start_nginx, start_vcache};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CHUNK: u64 = MIB;
const CONNS: u64 = 4;
const GIB: f64 = (1u64 << 30) as f64;

/// Where chunk k goes.
#[derive(Clone)]
enum Target {
    /// Slots `in0`, `in1`, … of `slot` bytes each.
    Vcache { slot: u64, slots: u64 },
    /// `/dav/r<round>/c<k>.bin`.
    Dav { round: usize },
    /// Plain bytes, no HTTP.
    Sink,
}

impl Target {
    fn head(&self, k: u64) -> Option<String> {
        match self {
            Target::Vcache { slot, slots } => {
                let per = slot / CHUNK;
                (k < per * slots).then(|| {
                    let a = (k % per) * CHUNK;
                    format!(
                        "PUT /videos/in{} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\n\
                         Content-Length: {CHUNK}\r\nContent-Range: bytes {a}-{}/{slot}\r\n\r\n",
                        k / per,
                        a + CHUNK - 1
                    )
                })
            }
            Target::Dav { round } => Some(format!(
                "PUT /dav/r{round}/c{k}.bin HTTP/1.1\r\nHost: b\r\nContent-Length: {CHUNK}\r\n\r\n"
            )),
            Target::Sink => Some(String::new()),
        }
    }
}

/// One connection: chunks c, c+CONNS, … until `stop` or the target is full; bytes acknowledged.
fn client(port: u16, target: Target, c: u64, body: Arc<Vec<u8>>, stop: Arc<AtomicBool>) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    let mut scratch = vec![0u8; 16384];
    let (mut k, mut done) = (c, 0);
    while !stop.load(Ordering::Relaxed) {
        let Some(head) = target.head(k) else { break };
        s.write_all(head.as_bytes()).expect("send head");
        s.write_all(&body).expect("send body");
        if !matches!(target, Target::Sink) {
            let (status, h, _) = read_answer(&mut s, &mut scratch).expect("answer");
            assert!((200..300).contains(&status), "ingest: chunk {k}: {h}");
        }
        done += CHUNK;
        k += CONNS;
    }
    done
}

/// All connections for `secs`: (bytes, seconds).
fn drive(port: u16, target: &Target, secs: f64) -> (u64, f64) {
    let body = Arc::new(random_bytes(CHUNK as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..CONNS)
        .map(|c| {
            let (t, b, s) = (target.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || client(port, t, c, b, s))
        })
        .collect();
    while t0.elapsed().as_secs_f64() < secs && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let bytes = handles.into_iter().map(|h| h.join().expect("client")).sum();
    (bytes, t0.elapsed().as_secs_f64())
}

/// The sink: one reader thread per connection, read(2) into a 1 MiB buffer.
fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().take(CONNS as usize) {
            let mut s = s.expect("accept");
            std::thread::spawn(move || {
                let mut buf = vec![0u8; CHUNK as usize];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

fn vcache_round(ctx: &Ctx, s: &mut Samples) {
    let slot_gib: u64 = env_or("BENCH_INGEST_SLOT_GIB", 4);
    let slots: u64 = env_or("BENCH_INGEST_SLOTS", 4);
    let mut body = String::new();
    for i in 0..slots {
        body +=
            &format!("[[video]]\nid = \"in{i}\"\nkind = \"upload\"\nsize = \"{slot_gib}GiB\"\n\n");
    }
    let _ = std::fs::remove_dir_all(ctx.dir.join("data-ingest"));
    let (p, port) = start_vcache(ctx, "ingest", &body, &[]);
    let target = Target::Vcache {
        slot: slot_gib << 30,
        slots,
    };
    let cpu = cpu_secs(p.pid());
    let (bytes, secs) = drive(port, &target, ctx.secs);
    let cpu = cpu_secs(p.pid()) - cpu;
    record(s, "vcache", bytes, secs, Some(cpu));
    drop(p);
    let _ = std::fs::remove_dir_all(ctx.dir.join("data-ingest"));
}

fn nginx_round(ctx: &Ctx, round: usize, s: &mut Samples) {
    let d = ctx.dir.display();
    std::fs::create_dir_all(ctx.dir.join("dav/dav")).expect("dav dir");
    let http = format!(
        "client_max_body_size 0;\nserver {{ listen 127.0.0.1:{{port}}; root {d}/dav;\n\
         location /dav/ {{ dav_methods PUT; create_full_put_path on; client_body_temp_path {d}/dav/tmp; }} }}\n"
    );
    let (p, port) = start_nginx(ctx, "dav", 1, 4096, &http);
    let cpu = nginx_cpu(&p);
    let (bytes, secs) = drive(port, &Target::Dav { round }, ctx.secs);
    let cpu = nginx_cpu(&p) - cpu;
    record(s, "nginx", bytes, secs, Some(cpu));
    drop(p);
    let _ = std::fs::remove_dir_all(ctx.dir.join("dav"));
}

fn record(s: &mut Samples, who: &str, bytes: u64, secs: f64, cpu: Option<f64>) {
    let gib = bytes as f64 / GIB;
    eprintln!("ingest: {who} {:.2} GiB/s cpu {cpu:?} s", gib / secs);
    s.add(&format!("{who}/rate"), gib / secs);
    if let Some(cpu) = cpu {
        s.add(&format!("{who}/cpu"), cpu * 1e3 / gib.max(1e-9));
    }
}

pub fn run(ctx: &Ctx, report: &mut Report) {
    let mut s = Samples::default();
    for round in 0..ctx.rounds {
        vcache_round(ctx, &mut s);
        // SAFETY: sync(2) has no preconditions; it keeps one run's writeback out of the next.
        unsafe { libc::sync() };
        nginx_round(ctx, round, &mut s);
        unsafe { libc::sync() };
        let (bytes, secs) = drive(sink(), &Target::Sink, ctx.secs);
        record(&mut s, "sink", bytes, secs, None);
    }
    let v = s.med("vcache/rate");
    report.row(
        "ingest 1 MiB PUTs x4 conns, GiB/s",
        Some(v),
        "nginx DAV PUT, 1 worker",
        Some(s.med("nginx/rate")),
    );
    report.row(
        "ingest 1 MiB PUTs x4 conns, GiB/s",
        Some(v),
        "loopback ceiling (socket sink)",
        Some(s.med("sink/rate")),
    );
    report.row(
        "ingest server CPU ms per GiB",
        Some(s.med("vcache/cpu")),
        "nginx DAV PUT, 1 worker",
        Some(s.med("nginx/cpu")),
    );
    report.notes.push(format!(
        "ingest: vcache: ranged PUTs into fresh upload slots ({} x {} GiB, sync = \"interval\": fdatasync \
         every 1 s), killed and its data removed after each run; nginx: dav_methods PUT, client_body_temp_path \
         on the same filesystem, one new file per chunk, no fsync; ceiling: in-bench socket sink (4 reader \
         threads, read(2) into 1 MiB buffers, no HTTP, no disk); sync(2) between runs",
        env_or::<u64>("BENCH_INGEST_SLOTS", 4),
        env_or::<u64>("BENCH_INGEST_SLOT_GIB", 4)
    ));
}
