//! A cache that fits its disk: origin content within `[cache] max_size` under a workload ten times
//! the budget (allocated bytes never pass it, on the gauge and in the files' `st_blocks`; every read
//! byte-exact; hot blocks stay), open-ended reads that fetch a window ahead instead of the object,
//! kill -9 during eviction storms, an origin mount serving hundreds of unlisted objects, and the
//! origin's 404. nginx is the origin; its access log counts what it sent.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

const KIB: u64 = 1024;
const BLOCK: u64 = 64 * KIB;

/// A config with one mount `films` on `url`, a budget and extra `[cache]` lines.
fn mount_config(url: &str, max_size: &str, cache_extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[limits]\nshutdown_timeout_ms = 1000\n\n\
         [cache]\nmax_size = \"{max_size}\"\n{cache_extra}\n\n\
         [[mount]]\nprefix = \"films\"\nurl = \"{url}\"\nfill_block = \"64KiB\"\n"
    )
}

/// Objects `o<i>.bin` of `len` bytes each at the origin's root; their bytes.
fn put_objects(ng: &Nginx, n: usize, len: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let data = source(len, 1000 + i as u64);
            ng.put(&format!("o{i}.bin"), &data, 1_600_000_000);
            data
        })
        .collect()
}

/// GET bytes [first, last] of a mounted object; they must be exactly the origin's.
fn read_exact(d: &Daemon, name: &str, data: &[u8], first: u64, last: u64) {
    let range = format!("bytes={first}-{last}");
    let r = d.get(&format!("/videos/films/{name}"), &[("Range", &range)]);
    assert_eq!(r.status, 206, "{name} {range}: {}", r.text());
    assert_bytes(
        &r.body,
        &data[first as usize..=last as usize],
        &format!("{name} {range}"),
    );
}

/// Bytes the data files occupy on disk (st_blocks × 512), and how many files there are.
fn data_files_on_disk(dir: &Path) -> (u64, u64) {
    std::fs::read_dir(dir.join("data"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
                .filter_map(|e| e.metadata().ok())
                .fold((0, 0), |(bytes, n), m| (bytes + m.blocks() * 512, n + 1))
        })
        .unwrap_or((0, 0))
}

/// A sparse file with many extents takes a file-system block of extent index beside its data
/// (ext4); st_blocks counts it.
const EXTENT_INDEX: u64 = 4096;

/// The allocated gauge is within the budget, and the files on disk hold no more than it (and their
/// extent indexes).
fn assert_within(d: &Daemon, dir: &Path, budget: u64, when: &str) {
    let gauge = d.metric("vcache_cache_allocated_bytes");
    assert!(
        gauge <= budget,
        "{when}: allocated {gauge} > budget {budget}"
    );
    let (on_disk, files) = data_files_on_disk(dir);
    assert!(
        on_disk <= gauge + files * EXTENT_INDEX,
        "{when}: the {files} data files occupy {on_disk} bytes, more than the {gauge} allocated"
    );
}

/// A small deterministic generator of read places: a hot set and a long tail.
fn next_read(rng: &mut Rng, objects: usize, len: u64) -> (usize, u64, u64) {
    let obj = if rng.below(10) < 6 {
        rng.below(3) as usize // 60 % of reads go to three hot objects
    } else {
        rng.below(objects as u64) as usize
    };
    let first = rng.below(len);
    let last = (first + rng.below(3 * BLOCK)).min(len - 1);
    (obj, first, last)
}

#[test]
fn a_budget_bounds_disk_use_under_ten_times_its_size_and_hot_blocks_stay() {
    let dir = TestDir::new("cache-budget");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let (objects, len, budget) = (40, 1 << 20, 4 << 20);
    let data = put_objects(&ng, objects, len);
    let d = Daemon::start(&dir.path, &mount_config(&ng.url("/"), "4MiB", ""));
    let mut rng = Rng(7);
    for i in 0..300 {
        let (obj, first, last) = next_read(&mut rng, objects, len);
        read_exact(&d, &format!("o{obj}.bin"), &data[obj], first, last);
        if i % 25 == 0 {
            assert_within(&d, &dir.path, budget, &format!("after read {i}"));
        }
    }
    assert_within(&d, &dir.path, budget, "after the workload");
    assert!(
        d.metric("vcache_cache_evicted_blocks_total") > 0,
        "a workload ten times the budget evicted nothing"
    );
    // The hot object, read whole twice: the second read costs the origin nothing.
    let whole = |d: &Daemon| read_exact(d, "o0.bin", &data[0], 0, len - 1);
    whole(&d);
    let before = bytes_of(&ng.settled_log());
    whole(&d);
    assert_eq!(
        bytes_of(&ng.settled_log()),
        before,
        "a hot object just read whole was evicted"
    );
}

/// Read `take` bytes of an open-ended GET, then hang up.
fn read_then_hang_up(d: &Daemon, path: &str, from: u64, take: usize) {
    let mut s = TcpStream::connect(d.addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={from}-\r\n\r\n"
    )
    .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while got < take {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    drop(s);
}

#[test]
fn an_open_ended_read_fetches_a_window_ahead_not_the_object() {
    let dir = TestDir::new("cache-window");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 16 << 20;
    put_objects(&ng, 1, len);
    let d = Daemon::start(
        &dir.path,
        &mount_config(&ng.url("/"), "64MiB", "read_ahead_blocks = 2"),
    );
    read_then_hang_up(&d, "/videos/films/o0.bin", 0, 100_000);
    read_then_hang_up(&d, "/videos/films/o0.bin", 8 << 20, 100_000);
    // Whatever was in flight when the reader left may land; nothing more is asked for.
    let log = ng.settled_log();
    let fetched = bytes_of(&log);
    // Per read: what the sockets' buffers took beyond the 100 KB read (loopback buffers hold up to
    // a few MiB), the window of two blocks ahead of that, and a fetch in flight. Without the window
    // the two reads fetched the 16 MiB object whole, and 8 MiB of it.
    let bound = 2 * (2 << 20);
    assert!(
        fetched <= bound,
        "two 100 KB reads of a 16 MiB object fetched {fetched} bytes (bound {bound}): {log:?}"
    );
    assert!(fetched >= 200_000, "the reads were served: {fetched}");
}

#[test]
fn a_mount_serves_hundreds_of_unlisted_objects_and_an_origin_404_is_a_404() {
    let dir = TestDir::new("cache-mount");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let (objects, len) = (300, 8 * KIB);
    let data = put_objects(&ng, objects, len);
    let d = Daemon::start(&dir.path, &mount_config(&ng.url("/"), "64MiB", ""));
    for (i, bytes) in data.iter().enumerate() {
        let r = d.get(&format!("/videos/films/o{i}.bin"), &[]);
        assert_eq!(r.status, 200, "o{i}: {}", r.text());
        assert_bytes(&r.body, bytes, &format!("o{i}"));
    }
    let list = d.get("/videos", &[]).text();
    for i in [0, 150, 299] {
        assert!(
            list.contains(&format!("\"films/o{i}.bin\"")),
            "GET /videos lists cached mounted objects: {list}"
        );
    }
    // A name the origin lacks: 404, and asked of the origin once while it is remembered.
    let before = ng.settled_log().len();
    for _ in 0..3 {
        let r = d.get("/videos/films/missing.bin", &[]);
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let asked = ng.settled_log().len() - before;
    assert_eq!(asked, 1, "a remembered 404 was asked of the origin again");
    // Names are checked: no path tricks reach the origin.
    let r = d.get("/videos/films/..%2Fetc", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    // After a restart the cached objects serve without the origin.
    let mut d = d;
    assert!(d.stop(Duration::from_secs(15)).success());
    let d = Daemon::start(&dir.path, &mount_config(&ng.url("/"), "64MiB", ""));
    let before = bytes_of(&ng.settled_log());
    for i in [0, 77, 299] {
        read_exact(&d, &format!("o{i}.bin"), &data[i], 0, len - 1);
    }
    assert_eq!(
        bytes_of(&ng.settled_log()),
        before,
        "cached objects refetched after a restart"
    );
}

#[test]
fn kill9_during_eviction_storms_leaves_every_claimed_byte_intact() {
    let dir = TestDir::new("cache-kill9");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let (objects, len, budget) = (24, 512 * KIB, 2 << 20);
    let data = put_objects(&ng, objects, len);
    let cfg = mount_config(&ng.url("/"), "2MiB", "");
    let mut rng = Rng(99);
    for round in 0..8 {
        let mut d = Daemon::start(&dir.path, &cfg);
        // What survived the last kill is intact, and within the budget.
        let checked = check_cached(&d, &data, &format!("round {round}, after restart"));
        assert!(
            round == 0 || checked > 0,
            "round {round}: nothing survived the kill"
        );
        assert_within(
            &d,
            &dir.path,
            budget,
            &format!("round {round}, after restart"),
        );
        let storm = 20 + rng.below(40);
        for _ in 0..storm {
            let (obj, first, last) = next_read(&mut rng, objects, len);
            read_exact(&d, &format!("o{obj}.bin"), &data[obj], first, last);
        }
        d.kill9();
    }
}

/// Every byte `GET /videos` reports cached for a mounted object equals the origin's; the bytes
/// checked.
fn check_cached(d: &Daemon, data: &[Vec<u8>], when: &str) -> u64 {
    let list = d.get("/videos", &[]).text();
    let mut checked = 0;
    for (i, bytes) in data.iter().enumerate() {
        let name = format!("o{i}.bin");
        let key = format!("{{\"id\":\"films/{name}\"");
        let Some(at) = list.find(&key) else {
            continue; // not cached (never read, or every block evicted)
        };
        let entry = &list[at..];
        let entry = &entry[..entry[1..].find("{\"id\":").map_or(entry.len(), |n| n + 1)];
        let ranges = &entry[entry.find("\"cached_ranges\":[").expect("cached_ranges")..];
        let ranges = &ranges[..ranges.find(']').expect("end of cached_ranges")];
        let spans = numbers_after(ranges, "\"start\":")
            .into_iter()
            .zip(numbers_after(ranges, "\"end\":"));
        for (a, e) in spans {
            assert!(e as usize <= bytes.len(), "{when}: {name} claims {a}-{e}");
            read_exact(d, &name, bytes, a, e - 1);
            checked += e - a;
        }
    }
    checked
}
