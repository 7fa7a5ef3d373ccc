//! `origin`: the pull-through measurements of `cargo bench --bench origin` (common/origin.rs), one
//! fresh cache per round and kind, interleaved: hit throughput on 1 MiB ranges and cold-miss time to
//! first byte, vcache beside nginx proxy_cache + slice 1m (1 worker) and Varnish (malloc).

use crate::common::origin::{Kind, Prepared, Setup, bench_cache, prepare};
use crate::common::*;
use crate::{Ctx, Report, Samples};

const KINDS: [(Kind, &str); 3] = [
    (Kind::Vcache, "vcache"),
    (Kind::Nginx, "nginx"),
    (Kind::Varnish, "varnish"),
];

const BASES: [(&str, &str); 2] = [
    ("nginx", "nginx proxy_cache slice 1m, 1 worker"),
    ("varnish", "varnish (malloc)"),
];

pub fn run(ctx: &Ctx, report: &mut Report) {
    require(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx-light");
    require(&["/usr/sbin/varnishd", "/usr/bin/varnishd"], "varnish");
    let len = env_or::<u64>("BENCH_ORIGIN_FILE_MIB", 256) * MIB;
    let dir = ctx.dir.join("origin");
    let p: Prepared = prepare(&dir, len, "", 64, 3).unwrap_or_else(|e| panic!("origin: {e}"));
    let setup = Setup {
        dir: &dir,
        origin: &p.origin,
        data: &p.data,
        ranges: &p.ranges,
        cold_offsets: &p.cold_offsets,
        conns: 8,
        secs: ctx.secs,
        workers: 1,
    };
    let mut s = Samples::default();
    for round in 0..ctx.rounds {
        for (kind, tag) in KINDS {
            let row = bench_cache(kind, &setup).unwrap_or_else(|e| panic!("origin: {tag}: {e}"));
            eprintln!(
                "origin round {round}: {tag} hit {:.0} MiB/s cold ttfb {:?}",
                row.hit_mibs, row.cold_ttfb
            );
            s.add(&format!("{tag}/hit"), row.hit_mibs);
            s.add(&format!("{tag}/cold"), row.cold_ttfb.as_secs_f64() * 1e3);
            s.add(&format!("{tag}/pass"), row.pass_ttfb.as_secs_f64() * 1e3);
        }
    }
    let rows = [
        ("hit", "origin hits, random 1 MiB ranges x8 conns, MiB/s"),
        ("cold", "origin cold miss on a fresh cache, first byte (ms)"),
        ("pass", "origin cold block in a used cache, first byte (ms)"),
    ];
    for (key, name) in rows {
        for (tag, base) in BASES {
            let (v, b) = (
                s.med(&format!("vcache/{key}")),
                s.med(&format!("{tag}/{key}")),
            );
            report.row(name, Some(v), base, Some(b));
        }
    }
    report.notes.push(format!(
        "origin: {} MiB file behind an nginx origin; cold first byte: median of 3 fresh caches per round, \
         vcache's includes creating its fully allocated data file; cold block in a used cache: median first byte \
         over a cold pass of 64 ranges (Varnish: mostly hits, its first miss pulled the whole object); hits: the 64 ranges of a cold pass, 8 \
         keep-alive clients; Varnish fetches whole objects (see `cargo bench --bench origin` for origin \
         bytes and restarts)",
        len / MIB
    ));
}
