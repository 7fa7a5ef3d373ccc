//! Cache within a disk budget (issue 15): vcache with one origin mount and `[cache] max_size` beside nginx
//! `proxy_cache` (`slice 1m`, `max_size=` the same budget), both in front of the same nginx origin serving
//! a catalogue of random objects 10× the budget, driven in the same run by the same Zipf trace of Range
//! GETs (the generator of `--bench eviction`, benches/common/trace.rs). Printed per cache: origin bytes
//! per client byte (the origin logs `$body_bytes_sent`), block hit ratio (1 − origin 1 MiB blocks fetched
//! / client blocks touched), and disk use sampled every 0.5 s — nginx: st_blocks of everything under its
//! cache directory; vcache: st_blocks of the `*.data` files under its data_dir and its
//! `vcache_cache_allocated_bytes` gauge — as the maximum over the run beside the budget. Every
//! `BENCH_CHECK_EVERY`-th response is compared byte for byte with the object.
//!
//! Run: `cargo bench --bench cache` (needs nginx with the slice module: Debian's nginx-light).
//! Environment: BENCH_OBJECTS (default 160), BENCH_OBJECT_MIB (default 4), BENCH_BUDGET_MIB (default
//! 64), BENCH_ALPHA (default 1.0), BENCH_READS (per round, default 2000; the first fifth warms the cache
//! and is not counted), BENCH_ROUNDS (default 1; rounds use trace seeds 0, 1, … and alternate which
//! cache goes first; figures are medians over rounds), BENCH_CHECK_EVERY (default 4), BENCH_CLIENTS
//! (concurrent keep-alive clients sharing the trace, default 1: the trace's order exactly),
//! BENCH_RATE_MIBS (cap on the clients' total read rate, so that both caches run for the same time —
//! nginx's cache manager enforces max_size only when it wakes; default 0: no cap), BENCH_ONLY (`vcache`
//! or `nginx`), BENCH_VCACHE_LISTED=1 (vcache lists every object as an `origin` [[video]] with the same
//! fill_block instead of mounting the catalogue), BENCH_KEEP=1 (keep the state directory, with the
//! origin's log of what each cache fetched).

mod common;
use common::origin::{Conn, Origin, nginx_common, nginx_temp_paths, start_nginx, start_origin};
use common::origin::{mib, wait_ready};
use common::policy::{Tally, policy, simulate};
use common::trace::{Read, Shape, SplitMix, reads};
use common::*;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Vcache,
    Nginx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vcache => "vcache (mount, [cache] max_size)",
            Kind::Nginx => "nginx proxy_cache slice 1m max_size",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Kind::Vcache => "vcache",
            Kind::Nginx => "nginx",
        }
    }
}

/// The catalogue: `objects[i]` is served by the origin as `/films/obj<i>.bin`.
struct Catalogue {
    objects: Vec<Vec<u8>>,
}

impl Catalogue {
    /// Random objects (a different stream per object, so a mixed-up object is caught) written under
    /// `dir/www/films`, plus the small `www/film.mp4` the origin's readiness check reads.
    fn write(dir: &Path, n: usize, len: u64) -> Result<Catalogue, String> {
        let films = dir.join("www/films");
        std::fs::create_dir_all(&films).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("www/film.mp4"), vec![0u8; 4096]).map_err(|e| e.to_string())?;
        let mut objects = Vec::with_capacity(n);
        for i in 0..n {
            let mut rng = SplitMix::new(0x0B1E_C700 + i as u64);
            let mut data = vec![0u8; len as usize];
            for chunk in data.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
            }
            std::fs::write(films.join(format!("obj{i}.bin")), &data).map_err(|e| e.to_string())?;
            objects.push(data);
        }
        Ok(Catalogue { objects })
    }
}

/// A running cache: its process, port, URL prefix of the catalogue, and where its disk use is counted.
struct Running {
    kind: Kind,
    proc: Proc,
    port: u16,
    prefix: &'static str,
    disk_dir: PathBuf,
}

/// vcache's config: the budget and one mount for the catalogue, or (`listed`: the catalogue's size)
/// every object listed as an `origin` video instead.
fn vcache_config(port: u16, origin_port: u16, budget: u64, listed: Option<usize>) -> String {
    let mut cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n\
         [cache]\nmax_size = \"{}KiB\"\n\n",
        budget / 1024
    );
    match listed {
        None => cfg.push_str(&format!(
            "[[mount]]\nprefix = \"films\"\nurl = \"http://127.0.0.1:{origin_port}/films/\"\n\
             fill_block = \"1MiB\"\n"
        )),
        Some(n) => {
            for i in 0..n {
                cfg.push_str(&format!(
                    "[[video]]\nid = \"obj{i}.bin\"\nkind = \"origin\"\n\
                     url = \"http://127.0.0.1:{origin_port}/films/obj{i}.bin\"\nfill_block = \"1MiB\"\n\n"
                ));
            }
        }
    }
    cfg
}

fn start_vcache(
    dir: &Path,
    origin_port: u16,
    budget: u64,
    listed: Option<usize>,
) -> Result<Running, String> {
    let port = free_port();
    let cfg = dir.join("vcache.toml");
    std::fs::write(&cfg, vcache_config(port, origin_port, budget, listed))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcache"));
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    let log = dir.join("vcache.out");
    let proc = spawn(&mut cmd, &log, libc::SIGTERM)?;
    if let Err(e) = wait_ready(port, "/healthz", 200) {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(format!("{e}; vcache said: {}", out.trim()));
    }
    Ok(Running {
        kind: Kind::Vcache,
        proc,
        port,
        prefix: if listed.is_some() {
            "/videos/"
        } else {
            "/videos/films/"
        },
        disk_dir: dir.join("data"),
    })
}

fn start_nginx_cache(dir: &Path, origin_port: u16, budget: u64) -> Result<Running, String> {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "{}http {{ access_log off; sendfile on; keepalive_requests 1000000;\n{}\
         upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}\n\
         proxy_cache_path {d}/cache levels=1:2 keys_zone=vc:16m max_size={}k inactive=1h use_temp_path=off;\n\
         server {{ listen 127.0.0.1:{port};\n\
         location = /__ready {{ return 204; }}\n\
         location / {{ slice 1m; proxy_cache vc; proxy_cache_key $uri$slice_range;\n\
         proxy_set_header Range $slice_range; proxy_cache_valid 200 206 1h;\n\
         proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://origin; }} }} }}\n",
        nginx_common(dir, "cache", 1),
        nginx_temp_paths(dir),
        budget / 1024,
    );
    let proc = start_nginx(dir, "cache", conf)?;
    wait_ready(port, "/__ready", 204)?;
    Ok(Running {
        kind: Kind::Nginx,
        proc,
        port,
        prefix: "/films/",
        disk_dir: dir.join("cache"),
    })
}

/// Bytes allocated (st_blocks × 512) by the files under `dir`, only `*.data` files when `data_only`.
fn allocated_under(dir: &Path, data_only: bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut sum = 0;
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue; // removed (evicted) since the listing
        };
        if meta.is_dir() {
            sum += allocated_under(&e.path(), data_only);
        } else if !data_only || e.path().extension().is_some_and(|x| x == "data") {
            sum += meta.blocks() * 512;
        }
    }
    sum
}

/// A gauge or counter from vcache's /metrics (one unlabelled sample line), on a fresh connection.
fn metric(port: u16, name: &str) -> Option<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

/// One disk-use sample: seconds since the start, allocated bytes, and vcache's gauge when it has one.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    disk: u64,
    gauge: Option<u64>,
}

/// Samples disk use every 0.5 s on its own thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(c: &Running) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, dir, port, kind) = (stop.clone(), c.disk_dir.clone(), c.port, c.kind);
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut v = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let disk = allocated_under(&dir, kind == Kind::Vcache);
                let gauge = match kind {
                    Kind::Vcache => metric(port, "vcache_cache_allocated_bytes"),
                    Kind::Nginx => None,
                };
                let secs = t0.elapsed().as_secs_f64();
                v.push(Sample { secs, disk, gauge });
                std::thread::sleep(SAMPLE_EVERY);
            }
            v
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

/// What the client saw driving the trace through one cache.
#[derive(Default)]
struct Drive {
    client_bytes: u64,
    blocks_touched: u64,
    checked: u64,
    errors: Vec<String>,
    secs: f64,
    /// Seconds from sending each request to its last byte.
    times: Vec<f64>,
}

/// Reads `trace` through the cache on `clients` keep-alive connections (client k takes reads k,
/// k + clients, …; one client keeps the trace's order exactly).
fn drive(c: &Running, s: &Setup, trace: &[Read]) -> Drive {
    let t0 = Instant::now();
    let parts: Vec<Drive> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..s.clients)
            .map(|k| scope.spawn(move || drive_one(c, s, trace, k)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut d = Drive::default();
    for p in parts {
        d.client_bytes += p.client_bytes;
        d.blocks_touched += p.blocks_touched;
        d.checked += p.checked;
        d.errors.extend(p.errors);
        d.times.extend(p.times);
    }
    d.secs = t0.elapsed().as_secs_f64();
    d
}

fn drive_one(c: &Running, s: &Setup, trace: &[Read], k: usize) -> Drive {
    let mut d = Drive::default();
    let mut conn = Conn::new(c.port);
    let t0 = Instant::now();
    for (i, r) in trace.iter().enumerate().skip(k).step_by(s.clients) {
        pace(s, d.client_bytes, t0);
        let path = format!("{}obj{}.bin", c.prefix, r.obj);
        let (a, b) = (r.start, r.start + r.len - 1);
        let check = s.check_every > 0 && i % s.check_every == 0;
        let expect = check.then(|| s.cat.objects[r.obj].as_slice());
        match conn.get(&path, Some((a, b)), expect) {
            Ok(g) if g.status == 206 && g.len == r.len => {
                d.times.push(g.total.as_secs_f64());
                d.client_bytes += r.len;
                d.blocks_touched += b / MIB - a / MIB + 1;
                d.checked += check as u64;
            }
            Ok(g) => d.errors.push(format!(
                "{path} bytes={a}-{b}: status {} with {} bytes",
                g.status, g.len
            )),
            Err(e) => d.errors.push(format!("{path} bytes={a}-{b}: {e}")),
        }
    }
    d
}

/// With BENCH_RATE_MIBS, hold this client to its share of the rate (as players read at a bit rate).
fn pace(s: &Setup, bytes: u64, t0: Instant) {
    if s.rate_mibs > 0.0 {
        let share = s.rate_mibs * MIB as f64 / s.clients as f64;
        let due = Duration::from_secs_f64(bytes as f64 / share);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// The `q` quantile of some samples (0 when there are none).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// One cache's figures in one round.
struct Row {
    kind: Kind,
    client: u64,
    origin: u64,
    block_hit: f64,
    disk_max: u64,
    disk_max_at: f64,
    disk_end: u64,
    disk_mean: u64,
    over_budget: usize,
    gauge_over: usize,
    samples: usize,
    gauge_max: Option<u64>,
    timeline: String,
    drive: Drive,
    exited_cleanly: bool,
}

/// What every round shares.
struct Setup {
    origin: Origin,
    budget: u64,
    cat: Catalogue,
    check_every: usize,
    /// Concurrent keep-alive clients sharing the trace.
    clients: usize,
    /// Most client MiB/s over all clients (0: as fast as the cache answers).
    rate_mibs: f64,
    /// vcache lists each object as an `origin` video instead of a mount (BENCH_VCACHE_LISTED=1).
    listed: bool,
}

fn measure(kind: Kind, dir: &Path, s: &Setup, trace: &[Read]) -> Result<Row, String> {
    let (origin, budget, cat) = (&s.origin, s.budget, &s.cat);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let listed = s.listed.then_some(cat.objects.len());
    let mut c = match kind {
        Kind::Vcache => start_vcache(dir, origin.port, budget, listed)?,
        Kind::Nginx => start_nginx_cache(dir, origin.port, budget)?,
    };
    let sampler = Sampler::start(&c);
    // The first fifth of the trace warms the cache (as in the study) and is not counted.
    let warm = trace.len() / 5;
    let warmup = drive(&c, s, &trace[..warm]);
    origin.settled();
    let before = origin.responses().len();
    let mut drive = drive(&c, s, &trace[warm..]);
    drive.checked += warmup.checked;
    drive.errors.splice(0..0, warmup.errors);
    origin.settled();
    std::thread::sleep(2 * SAMPLE_EVERY);
    let samples = sampler.finish();
    let fetched: Vec<u64> = origin.responses().split_off(before);
    let stop_sig = if kind == Kind::Nginx {
        libc::SIGQUIT
    } else {
        libc::SIGTERM
    };
    let exited_cleanly = c.proc.stop_with(stop_sig, Duration::from_secs(30));
    let origin_bytes: u64 = fetched.iter().sum();
    let blocks_fetched: u64 = fetched.iter().map(|b| b.div_ceil(MIB)).sum();
    let max = samples.iter().max_by_key(|s| s.disk).copied();
    Ok(Row {
        kind,
        client: drive.client_bytes,
        origin: origin_bytes,
        block_hit: 1.0 - blocks_fetched as f64 / drive.blocks_touched.max(1) as f64,
        disk_max: max.map_or(0, |s| s.disk),
        disk_max_at: max.map_or(0.0, |s| s.secs),
        disk_end: samples.last().map_or(0, |s| s.disk),
        disk_mean: samples.iter().map(|s| s.disk).sum::<u64>() / samples.len().max(1) as u64,
        over_budget: samples.iter().filter(|s| s.disk > budget).count(),
        gauge_over: samples.iter().filter(|s| s.gauge > Some(budget)).count(),
        samples: samples.len(),
        gauge_max: samples.iter().filter_map(|s| s.gauge).max(),
        timeline: timeline(&samples, 4),
        drive,
        exited_cleanly,
    })
}

/// Disk use over the run, one figure (MiB) every `every` samples.
fn timeline(samples: &[Sample], every: usize) -> String {
    samples
        .iter()
        .step_by(every.max(1))
        .map(|s| format!("{:.0}", s.disk as f64 / MIB as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_round(r: usize, row: &Row, budget: u64) {
    let d = &row.drive;
    println!(
        "round {r} {:<6} {:>6.1} s  client {:>9}  origin {:>9}  origin/client {:.3}  block hit {:.3}  \
         disk max {} at {:.1} s ({:.3} of budget, {}/{} samples over), mean {}, at end {}{}  checked {}  errors {}{}",
        row.kind.tag(),
        d.secs,
        mib(row.client),
        mib(row.origin),
        row.origin as f64 / row.client.max(1) as f64,
        row.block_hit,
        mib(row.disk_max),
        row.disk_max_at,
        row.disk_max as f64 / budget as f64,
        row.over_budget,
        row.samples,
        mib(row.disk_mean),
        mib(row.disk_end),
        row.gauge_max
            .map_or(String::new(), |g| format!("  gauge max {}", mib(g))),
        d.checked,
        d.errors.len(),
        if row.exited_cleanly {
            ""
        } else {
            "  (killed at stop)"
        },
    );
    println!("  disk use over time (MiB, every 2 s): {}", row.timeline);
    if row.over_budget > 0 {
        println!(
            "  over budget: max {} bytes = budget + {} bytes (st_blocks); samples with the gauge over: {}",
            row.disk_max,
            row.disk_max - budget,
            row.gauge_over
        );
    }
    for e in d.errors.iter().take(3) {
        println!("  error: {e}");
    }
}

/// Figures of the simulated policies on one trace.
type Simulated = [(&'static str, Tally); 4];

/// The trace played through the simulated FIFO, CLOCK, LRU and S3-FIFO with the budget in 1 MiB blocks (the
/// same warm-up): what a cache that never passes its budget can expect.
fn simulated(sizes: &[u64], trace: &[Read], budget: u64) -> Simulated {
    let cap = (budget / MIB) as usize;
    ["FIFO", "CLOCK", "LRU", "S3-FIFO"].map(|name| {
        let mut p = policy(name, cap);
        (
            name,
            simulate(p.as_mut(), cap, sizes, trace, trace.len() / 5),
        )
    })
}

type Figure<'a> = (&'static str, &'a dyn Fn(&Row) -> f64);

/// The simulated reference, medians over rounds.
fn print_simulated(sims: &[Simulated], budget: u64) {
    for k in 0..4 {
        let name = sims.first().map_or("", |s| s[k].0);
        let hit: Vec<f64> = sims.iter().map(|s| s[k].1.block_hit()).collect();
        let opc: Vec<f64> = sims.iter().map(|s| s[k].1.origin_per_client()).collect();
        println!(
            "simulated {name:<8} at the budget ({} blocks): block hit {:.3}, origin per client byte {:.3}",
            budget / MIB,
            median(&hit),
            median(&opc)
        );
    }
}

/// Medians over rounds of each figure, vcache beside nginx with the ratio.
fn print_summary(rows: &[Row], sims: &[Simulated], budget: u64) {
    let of = |k: Kind, f: &dyn Fn(&Row) -> f64| -> Option<f64> {
        let v: Vec<f64> = rows.iter().filter(|r| r.kind == k).map(f).collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let figures: [Figure; 9] = [
        ("origin bytes per client byte", &|r| {
            r.origin as f64 / r.client.max(1) as f64
        }),
        ("block hit ratio (1 - fetched/touched)", &|r| r.block_hit),
        ("disk use max, MiB (st_blocks)", &|r| {
            r.disk_max as f64 / MIB as f64
        }),
        ("disk use max / budget", &|r| {
            r.disk_max as f64 / budget as f64
        }),
        ("disk use mean over samples / budget", &|r| {
            r.disk_mean as f64 / budget as f64
        }),
        ("samples over budget (0.5 s apart)", &|r| {
            r.over_budget as f64
        }),
        ("request time p50, ms", &|r| {
            1e3 * quantile(&r.drive.times, 0.5)
        }),
        ("request time p99, ms", &|r| {
            1e3 * quantile(&r.drive.times, 0.99)
        }),
        ("client MiB/s", &|r| {
            r.client as f64 / MIB as f64 / r.drive.secs.max(1e-9)
        }),
    ];
    println!(
        "\n{:<40} {:>10} {:>10} {:>13}",
        "figure (median over rounds)", "vcache", "nginx", "vcache/nginx"
    );
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for (name, f) in figures {
        let (v, n) = (of(Kind::Vcache, f), of(Kind::Nginx, f));
        let ratio = match (v, n) {
            (Some(v), Some(n)) if n != 0.0 => format!("{:.2}", v / n),
            _ => "-".into(),
        };
        println!("{name:<40} {:>10} {:>10} {ratio:>13}", cell(v), cell(n));
    }
    let gauge = of(Kind::Vcache, &|r| {
        r.gauge_max.map_or(f64::NAN, |g| g as f64 / MIB as f64)
    });
    println!(
        "{:<40} {:>10} {:>10} {:>13}",
        "vcache_cache_allocated_bytes max, MiB",
        cell(gauge),
        "-",
        "-"
    );
    print_simulated(sims, budget);
    let errors: usize = rows.iter().map(|r| r.drive.errors.len()).sum();
    let checked: u64 = rows.iter().map(|r| r.drive.checked).sum();
    println!("responses checked byte for byte: {checked}; failed or wrong responses: {errors}");
    if rows
        .iter()
        .any(|r| r.kind == Kind::Vcache && r.over_budget > 0)
    {
        println!("VCACHE PASSED ITS BUDGET in some sample (it must never)");
    }
}

/// Every round: a trace (seed = round), its simulated reference, and each cache on it (order
/// alternating by round).
fn run_rounds(
    setup: &Setup,
    dir: &Path,
    kinds: &[Kind],
    sizes: &[u64],
    shape: Shape,
    n_reads: usize,
    rounds: usize,
) -> (Vec<Row>, Vec<Simulated>) {
    let (mut rows, mut sims) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let trace = reads(sizes, shape, n_reads, 0x7ACE_0000 + r as u64);
        sims.push(simulated(sizes, &trace, setup.budget));
        let mut order = kinds.to_vec();
        if r % 2 == 1 {
            order.reverse();
        }
        for k in order {
            match measure(k, &dir.join(k.tag()), setup, &trace) {
                Ok(row) => {
                    print_round(r, &row, setup.budget);
                    rows.push(row);
                }
                Err(e) => println!("round {r} {}: did not run: {e}", k.tag()),
            }
        }
    }
    (rows, sims)
}

/// What the run is, printed before it.
fn print_header(s: &Setup, n: usize, obj_mib: u64, alpha: f64, n_reads: usize, rounds: usize) {
    println!(
        "cache benchmark: {n} objects of {obj_mib} MiB ({} MiB) behind an nginx origin, budget {} MiB \
         (catalogue/{:.0}); Zipf({alpha}) popularity, a read starts at 0 with p 0.5 else at a uniform byte, \
         geometric length mean 8 MiB, one Range GET per read, {n_reads} reads per round on {} keep-alive \
         client(s){}, {rounds} round(s) (trace seeds 0..{rounds}), caches alternate order; every {}th \
         response checked byte for byte",
        n as u64 * obj_mib,
        s.budget / MIB,
        (n as u64 * obj_mib * MIB) as f64 / s.budget as f64,
        s.clients,
        if s.rate_mibs > 0.0 {
            format!(" held to {} MiB/s in all", s.rate_mibs)
        } else {
            String::new()
        },
        s.check_every,
    );
    println!(
        "{}",
        [Kind::Vcache, Kind::Nginx].map(Kind::name).join(" | ")
    );
    if s.listed {
        println!(
            "vcache: every object listed as an `origin` [[video]] (BENCH_VCACHE_LISTED=1), not a mount"
        );
    }
}

fn main() {
    let n: usize = env_or("BENCH_OBJECTS", 160);
    let obj_mib: u64 = env_or("BENCH_OBJECT_MIB", 4);
    let budget_mib: u64 = env_or("BENCH_BUDGET_MIB", 64);
    let alpha: f64 = env_or("BENCH_ALPHA", 1.0);
    let n_reads: usize = env_or("BENCH_READS", 2000);
    let rounds: usize = env_or("BENCH_ROUNDS", 1);
    let check_every: usize = env_or("BENCH_CHECK_EVERY", 4);
    let only: String = env_or("BENCH_ONLY", String::new());
    let clients: usize = env_or("BENCH_CLIENTS", 1);
    let rate_mibs: f64 = env_or("BENCH_RATE_MIBS", 0.0);
    assert!(
        n > 0 && obj_mib > 0 && budget_mib > 0 && n_reads > 0 && clients > 0,
        "BENCH_* sizes must be positive"
    );
    let budget = budget_mib * MIB;
    let kinds: Vec<Kind> = [Kind::Vcache, Kind::Nginx]
        .into_iter()
        .filter(|k| only.is_empty() || only.split(',').any(|o| o == k.tag()))
        .collect();

    let dir = std::env::temp_dir().join(format!("vcache-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    let cat = Catalogue::write(&dir, n, obj_mib * MIB).expect("writing the catalogue");
    let origin =
        start_origin(&dir, "").unwrap_or_else(|e| panic!("origin nginx did not start: {e}"));
    let sizes = vec![obj_mib * MIB; n];
    let listed = env_or("BENCH_VCACHE_LISTED", 0) == 1;
    let setup = Setup {
        origin,
        budget,
        cat,
        check_every,
        clients,
        rate_mibs,
        listed,
    };
    print_header(&setup, n, obj_mib, alpha, n_reads, rounds);
    let (rows, sims) = run_rounds(
        &setup,
        &dir,
        &kinds,
        &sizes,
        Shape::video(alpha),
        n_reads,
        rounds,
    );
    print_summary(&rows, &sims, budget);
    drop(setup);
    if env_or("BENCH_KEEP", 0) == 1 {
        println!(
            "kept {} (origin-access.log: bytes, path, Range of each origin response)",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
