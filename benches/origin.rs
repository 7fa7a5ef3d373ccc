//! Origin cache benchmark: vcache's `origin` videos beside nginx `proxy_cache` + `slice 1m` and Varnish,
//! all in front of the same nginx origin serving the same random file, printed side by side: cold-miss
//! time to first body byte, origin bytes per client byte over a cold pass of random 1 MiB ranges, hit
//! throughput on those ranges (several keep-alive clients), and origin bytes re-fetched when the cache
//! is restarted and the same ranges are read again. The origin counts its bytes with an access log of
//! `$body_bytes_sent`. Plain origin (nginx direct) hit throughput is the baseline. The measurements live
//! in `common/origin.rs` (shared with `--bench table`).
//!
//! Run: `cargo bench --bench origin` (needs nginx with the slice module — Debian's nginx-light has it —
//! and `varnish`; a cache that cannot start is printed as a skipped row). Environment: BENCH_SECS (hit
//! phase, default 5), BENCH_FILE_MIB (default 256), BENCH_RANGES (cold pass, default 64),
//! BENCH_COLD_SAMPLES (fresh caches for the cold-miss figure, default 5), BENCH_CONNS (hit clients,
//! default 8), BENCH_NGINX_WORKERS (cache nginx, default 1), BENCH_ORIGIN_RATE (nginx `limit_rate` on
//! the origin, e.g. `100m`; default unlimited — it throttles long transfers, while a 1 MiB response
//! mostly leaves before the limiter engages, so it shows the cost of whole-object fetches).

mod common;
use common::origin::*;
use common::*;

fn main() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let file_mib: u64 = env_or("BENCH_FILE_MIB", 256);
    let n_ranges: usize = env_or("BENCH_RANGES", 64);
    let samples: usize = env_or("BENCH_COLD_SAMPLES", 5);
    let conns: usize = env_or("BENCH_CONNS", 8);
    let workers: usize = env_or("BENCH_NGINX_WORKERS", 1);
    let rate: String = env_or("BENCH_ORIGIN_RATE", String::new());
    let len = file_mib * MIB;
    assert!(len > RANGE, "BENCH_FILE_MIB must be at least 2");

    let dir = std::env::temp_dir().join(format!("vcache-bench-origin-{}", std::process::id()));
    let Prepared {
        origin,
        data,
        ranges,
        cold_offsets,
    } = match prepare(&dir, len, &rate, n_ranges, samples) {
        Ok(p) => p,
        Err(e) => {
            println!("origin nginx did not start: {e}; nothing to measure");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };

    println!(
        "origin benchmark: {file_mib} MiB file behind an nginx origin{}, 1 MiB ranges at random (unaligned) \
         offsets, {} cores, loopback",
        if rate.is_empty() {
            String::new()
        } else {
            format!(" (limit_rate {rate})")
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let n_cold = cold_offsets.len();
    for legend in [
        format!(
            "cold TTFB / cold 1 MiB: first request of a fresh, empty cache (median of {n_cold}, one range each): \
             time to the first body byte / to the last"
        ),
        format!(
            "pass TTFB: median time to the first body byte over a cold pass of {n_ranges} ranges on one fresh cache \
             (one client)"
        ),
        "origin/client: origin body bytes / client body bytes over that pass; cold pass: its duration".into(),
        format!(
            "hit MiB/s, req/s: those {n_ranges} ranges again, {conns} keep-alive clients, {secs} s; origin in hits: \
             origin bytes meanwhile"
        ),
        format!(
            "re-fetched after restart: origin bytes from a graceful stop through a start and a re-read of the \
             {n_ranges} ranges"
        ),
        "every cold and re-read body is checked byte for byte".into(),
    ] {
        println!("  {legend}");
    }
    println!();
    let header = [
        "cache",
        "cold TTFB",
        "cold 1 MiB",
        "pass TTFB",
        "origin/client",
        "cold pass",
        "hit MiB/s",
        "hit req/s",
        "origin in hits",
        "re-fetched after restart",
    ];
    let widths = [30, 10, 10, 10, 13, 9, 9, 9, 14, 24];
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{}",
        line(&header.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    let setup = Setup {
        dir: &dir,
        origin: &origin,
        data: &data,
        ranges: &ranges,
        cold_offsets: &cold_offsets,
        conns,
        secs,
        workers,
    };
    let mut notes = Vec::new();
    for kind in [Kind::Vcache, Kind::Nginx, Kind::Varnish] {
        match bench_cache(kind, &setup) {
            Ok(row) => {
                let mut cells = vec![row.name.clone()];
                cells.extend(row.cells());
                println!("{}", line(&cells));
                for n in row.notes {
                    notes.push(format!("{}: {n}", row.name));
                }
            }
            Err(e) => println!("{}: skipped ({e})", kind.name(workers)),
        }
    }
    let (rps, mibs, errors) = hit_load(origin.port, "/film.mp4", &ranges, conns, secs);
    let mut cells = vec!["origin direct (nginx, 1 worker)".to_string()];
    cells.extend(["-", "-", "-", "-", "-"].map(String::from));
    cells.extend([
        format!("{mibs:.0}"),
        format!("{rps:.0}"),
        "-".into(),
        "-".into(),
    ]);
    println!("{}", line(&cells));
    if errors > 0 {
        notes.push(format!("origin direct: {errors} failed requests"));
    }
    if !notes.is_empty() {
        println!();
        for n in notes {
            println!("note: {n}");
        }
    }
    drop(origin);
    let _ = std::fs::remove_dir_all(&dir);
}
