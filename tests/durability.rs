//! Durability battery: upload slots filled in any order, restarts across SIGTERM and across `kill -9`
//! in the middle of a storm of concurrent PUTs (both sync modes), DELETE, overlap refusals, a disk-full
//! start on a small tmpfs, and metadata that does not match the config or cannot be read — which is
//! reported, never reset, and leaves the files byte-identical.

mod common;
use common::*;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUTH: (&str, &str) = ("Authorization", "Bearer t");
const META_HEADER_LEN: usize = 53;

/// A config with one upload slot `slot` of `size` bytes plus `extra` (more `[[video]]` tables).
fn slot_config(sync: &str, size: u64, checkpoint_ms: u64, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\nsync = \"{sync}\"\n\
         checkpoint_interval_ms = {checkpoint_ms}\n\n[limits]\nshutdown_timeout_ms = 1000\n\
         read_wait_ms = 200\n\n[[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = {size}\n{extra}"
    )
}

fn put_range(
    addr: SocketAddr,
    id: &str,
    start: u64,
    bytes: &[u8],
    total: u64,
) -> std::io::Result<Response> {
    let cr = format!("bytes {start}-{}/{total}", start + bytes.len() as u64 - 1);
    try_request(
        addr,
        "PUT",
        &format!("/videos/{id}"),
        &[AUTH, ("Content-Range", &cr)],
        bytes,
    )
}

/// A PUT to `slot` whose body is sent in two halves with a pause between them.
fn put_range_pausing(
    addr: SocketAddr,
    start: u64,
    bytes: &[u8],
    total: u64,
    pause: Duration,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "PUT /videos/slot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\
         Content-Range: bytes {start}-{}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        start + bytes.len() as u64 - 1,
        bytes.len()
    );
    s.write_all(head.as_bytes())?;
    let half = bytes.len() / 2;
    s.write_all(&bytes[..half])?;
    // The pause is the behaviour: a body that arrives in two parts.
    std::thread::sleep(pause);
    s.write_all(&bytes[half..])?;
    read_response(&mut std::io::BufReader::new(s), false)
}

fn put_ok(d: &Daemon, id: &str, start: u64, bytes: &[u8], total: u64) {
    let r = put_range(d.addr(), id, start, bytes, total).expect("PUT");
    assert_eq!(r.status, 200, "PUT {start}+{}: {}", bytes.len(), r.text());
}

fn etag(d: &Daemon, id: &str) -> String {
    let entry = video_entry(d, id);
    let at = entry.find("\"etag\":\"").expect("etag") + 8;
    let rest = &entry[at..];
    // The ETag value is itself quoted, JSON-escaped: take up to the closing `",`.
    rest[..rest.find("\",").expect("end of etag")].to_string()
}

fn covered(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= start && end <= e)
}

/// The parts of [start, end) not in `ranges`.
fn missing(ranges: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in ranges {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// Every served byte equals the source, every acked range is served, and a hole is refused.
fn verify_served(d: &Daemon, src: &[u8], acked: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let present = cached(d, "slot");
    for &(a, b) in acked {
        assert!(
            covered(&present, a, b),
            "acknowledged bytes {a}..{b} are not cached after restart: {present:?}"
        );
    }
    const CHUNK: u64 = 8 << 20;
    for &(s, e) in &present {
        let mut at = s;
        while at < e {
            let to = (at + CHUNK).min(e);
            let r = get_range(d, "slot", at, to - 1);
            assert_eq!(r.status, 206, "range {at}..{to}: {}", r.text());
            assert_bytes(
                &r.body,
                &src[at as usize..to as usize],
                &format!("served bytes {at}..{to}"),
            );
            at = to;
        }
    }
    if let Some(&(hole, _)) = missing(&present, 0, src.len() as u64).first() {
        let r = get_range(d, "slot", hole, hole);
        assert_eq!(
            r.status,
            416,
            "a byte never written ({hole}) must not be served: {}",
            r.text()
        );
    }
    present
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn random_order_fill_reads_back_whole() {
    let dir = TestDir::new("dur-fill");
    let size: u64 = (4 << 20) + 123;
    let src = Arc::new(source(size, 11));
    let d = Daemon::start(&dir.path, &slot_config("interval", size, 1000, ""));
    let mut rng = Rng(0x5eed);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < size {
        let end = (at + 1 + rng.below(200 << 10)).min(size);
        pieces.push((at, end));
        at = end;
    }
    assert!(pieces.len() > 30, "many PUTs");
    shuffle(&mut pieces, &mut rng);
    let last = pieces.pop().unwrap();
    // Four writers take pieces from one shuffled queue.
    let queue = Arc::new(Mutex::new(pieces));
    let addr = d.addr();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (queue, src) = (queue.clone(), src.clone());
            std::thread::spawn(move || {
                loop {
                    let Some((a, b)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let r = put_range(addr, "slot", a, &src[a as usize..b as usize], size)
                        .expect("PUT");
                    assert_eq!(r.status, 200, "PUT {a}..{b}: {}", r.text());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    // One piece missing: the whole video is not served, the cached ranges say exactly what is there.
    assert_eq!(cached(&d, "slot"), missing(&[last], 0, size));
    let r = d.get("/videos/slot", &[]);
    assert!(
        !(200..300).contains(&r.status),
        "incomplete slot served whole: {}",
        r.status
    );
    put_ok(
        &d,
        "slot",
        last.0,
        &src[last.0 as usize..last.1 as usize],
        size,
    );
    let r = d.get("/videos/slot", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_bytes(&r.body, &src, "whole slot");
    assert_eq!(cached(&d, "slot"), vec![(0, size)]);
    assert!(video_entry(&d, "slot").contains("\"complete\":true"));
}

#[test]
fn sigterm_restart_keeps_acked_and_received_bytes() {
    let dir = TestDir::new("dur-term");
    let size: u64 = 1 << 20;
    let src = source(size, 22);
    // No checkpoint timer: what is durable after the restart is what shutdown committed.
    let body = slot_config("interval", size, 3_600_000, "");
    let mut d = Daemon::start(&dir.path, &body);
    let acked = [
        (0u64, 1000u64),
        (5000, 70_000),
        (300_000, 300_001),
        (500_000, 600_000),
    ];
    for &(a, b) in &acked {
        put_ok(&d, "slot", a, &src[a as usize..b as usize], size);
    }
    // An upload in flight at SIGTERM is allowed to finish; one that stalls is cut and keeps what arrived.
    let (fa, fb) = (700_000u64, 800_000u64);
    let (ca, cb, half) = (900_000u64, 1_000_000u64, 40_000u64);
    let head = |a: u64, b: u64| {
        format!(
            "PUT /videos/slot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Range: bytes {a}-{}/{size}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            b - 1,
            b - a
        )
    };
    let mut finishing = TcpStream::connect(d.addr()).unwrap();
    finishing.write_all(head(fa, fb).as_bytes()).unwrap();
    finishing
        .write_all(&src[fa as usize..(fa + half) as usize])
        .unwrap();
    let mut stalled = TcpStream::connect(d.addr()).unwrap();
    stalled.write_all(head(ca, cb).as_bytes()).unwrap();
    stalled
        .write_all(&src[ca as usize..(ca + half) as usize])
        .unwrap();
    // Both first halves received (and claimed) before the signal.
    wait_until(
        "the first halves of both PUTs to be cached",
        Duration::from_secs(10),
        || {
            let now = cached(&d, "slot");
            covered(&now, fa, fa + half) && covered(&now, ca, ca + half)
        },
    );
    let before = cached(&d, "slot");
    d.signal(15);
    wait_until(
        "the daemon to begin its shutdown",
        Duration::from_secs(10),
        || d.log().contains("shutting down:"),
    );
    finishing
        .write_all(&src[(fa + half) as usize..fb as usize])
        .unwrap();
    finishing
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(finishing), false)
        .expect("response to the finishing PUT");
    assert_eq!(r.status, 200, "{}", r.text());
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}; log:\n{}", d.log());
    drop(stalled);

    let d = Daemon::start(&dir.path, &body);
    let present = verify_served(&d, &src, &acked);
    assert!(
        covered(&present, fa, fb),
        "the PUT finished during shutdown is lost: {present:?}"
    );
    assert!(
        covered(&present, ca, ca + half),
        "received bytes of the cut PUT are lost: {present:?}"
    );
    assert!(
        missing(&present, ca + half, cb) == vec![(ca + half, cb)],
        "bytes never sent are cached: {present:?}"
    );
    // The ranges listed before the shutdown are all listed after it.
    for &(a, b) in &before {
        assert!(
            covered(&present, a, b),
            "{a}..{b} was cached before SIGTERM: {present:?}"
        );
    }
    let mut expect = acked.to_vec();
    expect.extend([(fa, fb), (ca, ca + half)]);
    expect.sort();
    // Adjacent pieces merge; none of these touch.
    assert_eq!(present, expect);
}

/// N writers PUT distinct ranges until the daemon is killed at a given fill level; restarted, every
/// acknowledged range must read back exactly and every served byte must equal what was PUT there.
fn storm_survives_kill9(sync: &str, seed: u64) {
    const SIZE: u64 = 96 << 20;
    const THREADS: usize = 16;
    let dir = TestDir::new(&format!("dur-storm-{sync}"));
    let body = slot_config(sync, SIZE, 20, "");
    let src = Arc::new(source(SIZE, seed));
    let mut rng = Rng(seed);
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < SIZE {
        let end = (at + (64 << 10) + rng.below(960 << 10)).min(SIZE);
        pieces.push((at, end));
        at = end;
    }
    let mut acked_all: Vec<(u64, u64)> = Vec::new();
    let mut d = Daemon::start(&dir.path, &body);
    // Each round kills once this many more bytes are acknowledged: right after the first
    // acknowledgement, then at several fill levels.
    for (round, step) in [1, SIZE / 32, SIZE / 16, SIZE / 32, SIZE / 16]
        .into_iter()
        .enumerate()
    {
        let present = cached(&d, "slot");
        let present_bytes: u64 = present.iter().map(|(s, e)| e - s).sum();
        let mut work: Vec<Vec<(u64, u64)>> = vec![Vec::new(); THREADS];
        for (i, &(a, b)) in pieces.iter().enumerate() {
            work[i % THREADS].extend(missing(&present, a, b));
        }
        for w in &mut work {
            shuffle(w, &mut rng);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let acked_bytes = Arc::new(AtomicU64::new(present_bytes));
        let addr = d.addr();
        let writers: Vec<_> = work
            .into_iter()
            .enumerate()
            .map(|(t, w)| {
                let (stop, acked_bytes, src) = (stop.clone(), acked_bytes.clone(), src.clone());
                // A few writers pause in the middle of each body, so that at the kill some bodies are
                // half received and their received part is claimed (and recorded by others' acks).
                let pause = if t % 4 == 0 {
                    Some(Duration::from_millis(5))
                } else {
                    None
                };
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut refused = Vec::new();
                    for (a, b) in w {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let bytes = &src[a as usize..b as usize];
                        let result = match pause {
                            Some(p) => put_range_pausing(addr, a, bytes, SIZE, p),
                            None => put_range(addr, "slot", a, bytes, SIZE),
                        };
                        match result {
                            Ok(r) if (200..300).contains(&r.status) => {
                                acked.push((a, b));
                                acked_bytes.fetch_add(b - a, Ordering::SeqCst);
                            }
                            Ok(r) => refused.push((a, b, r.status, r.text())),
                            Err(_) => break, // the daemon is gone
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        let target = present_bytes + step;
        let started = Instant::now();
        // Not a wait_until: the kill comes when the target is reached, when the writers are done,
        // or after 8 s in any case; none of these is a failure.
        while acked_bytes.load(Ordering::SeqCst) < target
            && started.elapsed() < Duration::from_secs(8)
            && !writers.iter().all(|w| w.is_finished())
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The writers tend to finish in waves; a random delay moves the kill inside a wave, where
        // bodies are half received and partly claimed.
        std::thread::sleep(Duration::from_millis(rng.below(25)));
        let in_flight = !writers.iter().all(|w| w.is_finished());
        d.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut round_acked = 0;
        for w in writers {
            let (acked, refused) = w.join().unwrap();
            assert!(
                refused.is_empty(),
                "round {round}: writes of missing, disjoint ranges refused: {refused:?}"
            );
            round_acked += acked.len();
            acked_all.extend(acked);
        }
        assert!(
            round_acked > 0,
            "round {round}: nothing was acknowledged before the kill"
        );
        assert!(
            in_flight,
            "round {round}: the storm ended before the kill; make the slot larger"
        );
        d = Daemon::start(&dir.path, &body);
        let present = verify_served(&d, &src, &acked_all);
        let acked_total: u64 = acked_all.iter().map(|(a, b)| b - a).sum();
        let present_total: u64 = present.iter().map(|(a, b)| b - a).sum();
        eprintln!(
            "storm {sync} round {round}: {round_acked} PUTs acknowledged, {acked_total} bytes acknowledged in all, \
             {present_total} bytes cached after the restart in {} ranges",
            present.len()
        );
    }
}

#[test]
fn kill9_mid_storm_interval() {
    storm_survives_kill9("interval", 0x1111);
}

#[test]
fn kill9_mid_storm_always() {
    storm_survives_kill9("always", 0x2222);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn disk_full_at_creation_is_a_clear_error() {
    let dir = TestDir::new("dur-full");
    let Some(mnt) = Tmpfs::mount(dir.join("small"), "8m") else {
        eprintln!(
            "SKIPPED disk_full_at_creation_is_a_clear_error: mounting a tmpfs is not permitted here"
        );
        return;
    };
    let movie = pseudo_random_bytes(50_000, 3);
    std::fs::write(dir.join("m.ts"), &movie).unwrap();
    let body = String::from(
        "[server]\ndata_dir = \"small/data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"big\"\nkind = \"upload\"\n\
         size = \"64MiB\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n",
    );
    let mut d = Daemon::start(&dir.path, &body);
    let entry = video_entry(&d, "big");
    assert!(entry.contains("\"error\":"), "{entry}");
    assert!(entry.contains("not enough disk space"), "{entry}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("big") && l.contains("not enough disk space")),
        "the log names the video and the problem:\n{log}"
    );
    let r = d.get("/videos/big", &[("Range", "bytes=0-0")]);
    assert_eq!(r.status, 503, "{}", r.text());
    let r = d.get("/videos/m", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, movie);
    assert!(
        !mnt.0.join("data/big.data").exists(),
        "a partial data file was left behind"
    );
    let status = d.stop(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn size_mismatch_is_reported_and_files_untouched() {
    let dir = TestDir::new("dur-size");
    let size: u64 = 1 << 20;
    let src = source(size, 55);
    let movie = pseudo_random_bytes(30_000, 5);
    std::fs::write(dir.join("m.ts"), &movie).unwrap();
    let extra = "\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n";
    let mut d = Daemon::start(&dir.path, &slot_config("interval", size, 1000, extra));
    put_ok(&d, "slot", 100, &src[100..60_000], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let (data, meta) = (dir.join("data/slot.data"), dir.join("data/slot.meta"));
    let (data_before, meta_before) = (file_bytes(&data), file_bytes(&meta));

    let mut d = Daemon::start(&dir.path, &slot_config("interval", 2 * size, 1000, extra));
    let entry = video_entry(&d, "slot");
    assert!(
        entry.contains("\"error\":") && entry.contains("size"),
        "{entry}"
    );
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("slot") && l.contains("1048576") && l.contains("2097152")),
        "the log names the video and the problem:\n{log}"
    );
    assert_eq!(
        d.get("/videos/slot", &[("Range", "bytes=100-199")]).status,
        503
    );
    let r = put_range(d.addr(), "slot", 70_000, &src[70_000..70_010], 2 * size).unwrap();
    assert!(
        !(200..300).contains(&r.status),
        "a write to a mismatched slot was taken"
    );
    let r = d.get("/videos/m", &[]);
    assert_eq!((r.status, r.body == movie), (200, true));
    assert!(d.stop(Duration::from_secs(10)).success());
    assert!(file_bytes(&data) == data_before, "data file changed");
    assert!(file_bytes(&meta) == meta_before, "metadata file changed");

    // The old size back: everything is as it was.
    let d = Daemon::start(&dir.path, &slot_config("interval", size, 1000, extra));
    assert_eq!(cached(&d, "slot"), vec![(100, 60_000)]);
    let r = get_range(&d, "slot", 100, 59_999);
    assert_bytes(
        &r.body,
        &src[100..60_000],
        "bytes after the size is restored",
    );
}

/// One metadata record as the test reads it: (slot index, seq, presence ranges).
type MetaSummary = (usize, u64, Vec<(u64, u64)>);

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// Where the first four record slots of a metadata file start (the two first durable slots, the two
/// log regions), read from its layout header ("VCACHEL1": header length, first slot, log region), or
/// the 1 MiB slots of the first format.
fn meta_slot_offsets(meta: &[u8]) -> [usize; 4] {
    if &meta[..8] != b"VCACHEL1" {
        return [0, 1 << 20, 2 << 20, 3 << 20];
    }
    let (h, s, l) = (u64_at(meta, 12), u64_at(meta, 20), u64_at(meta, 28));
    [h, h + s, h + 2 * s, h + 2 * s + l].map(|n| n as usize)
}

/// Read the first four metadata slots: a summary of each that starts with the magic.
fn meta_records(meta: &[u8]) -> Vec<MetaSummary> {
    let mut out = Vec::new();
    for (slot, at) in meta_slot_offsets(meta).into_iter().enumerate() {
        let b = &meta[at..];
        if &b[..8] != b"VCACHEM1" {
            continue;
        }
        let seq = u64_at(b, 12);
        // Upload payload: version u8, generation u64, modified u64, count u32, (start, end) u64 pairs.
        let p = &b[META_HEADER_LEN..];
        let count = u32::from_le_bytes(p[17..21].try_into().unwrap()) as usize;
        let ranges = (0..count)
            .map(|i| (u64_at(p, 21 + 16 * i), u64_at(p, 29 + 16 * i)))
            .collect();
        out.push((slot, seq, ranges));
    }
    out
}

#[test]
fn unreadable_metadata_is_reported_and_untouched() {
    let dir = TestDir::new("dur-garbage");
    let size: u64 = 1 << 20;
    let src = source(size, 66);
    let movie = pseudo_random_bytes(30_000, 6);
    std::fs::write(dir.join("m.ts"), &movie).unwrap();
    let extra = "\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n";
    let body = slot_config("interval", size, 1000, extra);
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "slot", 0, &src[..4096], size);
    put_ok(&d, "slot", 8192, &src[8192..9000], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let (data, meta) = (dir.join("data/slot.data"), dir.join("data/slot.meta"));
    let mut garbage = file_bytes(&meta);
    for at in meta_slot_offsets(&garbage) {
        garbage[at..at + 64].copy_from_slice(&[0xA5; 64]);
    }
    std::fs::write(&meta, &garbage).unwrap();
    let data_before = file_bytes(&data);

    let mut d = Daemon::start(&dir.path, &body);
    let entry = video_entry(&d, "slot");
    assert!(
        entry.contains("\"error\":") && entry.contains("no valid record"),
        "{entry}"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("video slot") && l.contains("slot.meta")),
        "the log names the video and its file:\n{}",
        d.log()
    );
    assert_eq!(d.get("/videos/slot", &[("Range", "bytes=0-9")]).status, 503);
    let r = d.get("/videos/m", &[]);
    assert_eq!((r.status, r.body == movie), (200, true));
    assert!(d.stop(Duration::from_secs(10)).success());
    assert!(file_bytes(&meta) == garbage, "metadata file changed");
    assert!(file_bytes(&data) == data_before, "data file changed");
    // `vcache check` reports it too, and fails.
    let out = Command::new(vcache_bin())
        .arg("check")
        .arg("--config")
        .arg(dir.join("vcache.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("slot (upload)") && l.contains("PROBLEM")),
        "{stdout}"
    );
}

#[test]
fn torn_newest_record_falls_back_to_the_older_one() {
    let dir = TestDir::new("dur-torn");
    let size: u64 = 1 << 20;
    let src = source(size, 77);
    // sync = always and no checkpoint timer: each acknowledged PUT is exactly one durable record.
    let body = slot_config("always", size, 3_600_000, "");
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "slot", 1000, &src[1000..50_000], size);
    put_ok(&d, "slot", 200_000, &src[200_000..300_000], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let meta = dir.join("data/slot.meta");
    let mut bytes = file_bytes(&meta);
    let mut records = meta_records(&bytes);
    records.sort_by_key(|r| r.1);
    let (newest_slot, _, newest_ranges) = records.pop().expect("a newest record");
    let (_, _, older_ranges) = records.pop().expect("an older record");
    assert_eq!(newest_ranges, vec![(1000, 50_000), (200_000, 300_000)]);
    assert_ne!(
        older_ranges, newest_ranges,
        "the older record must claim less for this test to mean something"
    );
    // Tear the newest record: its tail (the presence map) never reached the disk.
    let at = meta_slot_offsets(&bytes)[newest_slot] + META_HEADER_LEN + 21;
    bytes[at..at + 32].fill(0);
    std::fs::write(&meta, &bytes).unwrap();

    let d = Daemon::start(&dir.path, &body);
    assert!(
        !video_entry(&d, "slot").contains("\"error\":"),
        "{}",
        video_entry(&d, "slot")
    );
    let present = verify_served(&d, &src, &older_ranges);
    assert_eq!(
        present, older_ranges,
        "the daemon must use the older record"
    );
    // New writes work after the fallback, and survive a kill.
    let mut d = d;
    put_ok(&d, "slot", 500_000, &src[500_000..500_100], size);
    d.kill9();
    let d = Daemon::start(&dir.path, &body);
    let mut expect = older_ranges.clone();
    expect.push((500_000, 500_100));
    expect.sort();
    assert_eq!(verify_served(&d, &src, &expect), expect);
}

#[test]
fn delete_forgets_across_restart_and_new_puts_work() {
    let dir = TestDir::new("dur-delete");
    let size: u64 = 1 << 20;
    let src = source(size, 88);
    let body = slot_config("interval", size, 1000, "");
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "slot", 0, &src[..10_000], size);
    put_ok(&d, "slot", 20_000, &src[20_000..30_000], size);
    let tag_before = etag(&d, "slot");
    let r = request(d.addr(), "DELETE", "/videos/slot", &[], b"");
    assert_eq!(r.status, 401, "DELETE without a token");
    assert_eq!(cached(&d, "slot").len(), 2);
    let r = request(d.addr(), "DELETE", "/videos/slot", &[AUTH], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cached(&d, "slot"), vec![]);
    assert!(video_entry(&d, "slot").contains("\"present_bytes\":0"));
    assert_eq!(get_range(&d, "slot", 0, 9).status, 416);
    let tag_after = etag(&d, "slot");
    assert_ne!(tag_before, tag_after, "the ETag must change with a DELETE");
    // The DELETE was acknowledged: it survives even a kill -9.
    d.kill9();
    let mut d = Daemon::start(&dir.path, &body);
    assert_eq!(cached(&d, "slot"), vec![]);
    assert_eq!(get_range(&d, "slot", 20_000, 20_009).status, 416);
    assert_eq!(etag(&d, "slot"), tag_after);
    // New PUTs, with other content at the same offsets, work and read back.
    let other = source(size, 99);
    put_ok(&d, "slot", 0, &other[..10_000], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let d = Daemon::start(&dir.path, &body);
    assert_eq!(verify_served(&d, &other, &[(0, 10_000)]), vec![(0, 10_000)]);
}

#[test]
fn check_prints_cached_bytes_of_a_slot() {
    let dir = TestDir::new("dur-check");
    let size: u64 = 1 << 20;
    let src = source(size, 12);
    let mut d = Daemon::start(&dir.path, &slot_config("interval", size, 1000, ""));
    put_ok(&d, "slot", 0, &src[..1000], size);
    put_ok(&d, "slot", 4000, &src[4000..4500], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let out = Command::new(vcache_bin())
        .arg("check")
        .arg("--config")
        .arg(&d.config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("slot (upload)") && l.contains("1500 bytes present in 2 ranges")),
        "{stdout}"
    );
}

#[test]
fn overlapping_puts_are_refused_and_change_nothing() {
    let dir = TestDir::new("dur-overlap");
    let size: u64 = 1 << 20;
    let src = source(size, 13);
    let other = source(size, 14);
    let d = Daemon::start(&dir.path, &slot_config("interval", size, 1000, ""));
    put_ok(&d, "slot", 1000, &src[1000..2000], size);
    // Overlapping present bytes, from either side and from inside.
    for (a, b) in [(500u64, 1001u64), (1999, 2500), (1200, 1300), (0, 5000)] {
        let r = put_range(d.addr(), "slot", a, &other[a as usize..b as usize], size);
        match r {
            Ok(r) => assert_eq!(r.status, 409, "PUT {a}..{b}: {}", r.text()),
            // Refused before the body was read: the connection may be reset under our write.
            Err(e) => panic!("PUT {a}..{b}: no response ({e})"),
        }
    }
    assert_eq!(cached(&d, "slot"), vec![(1000, 2000)]);
    assert_bytes(
        &get_range(&d, "slot", 1000, 1999).body,
        &src[1000..2000],
        "present bytes after refusals",
    );

    // Two concurrent writes of overlapping ranges: the first holds its range while its body arrives.
    let (a, b) = (10_000u64, 20_000u64);
    let mut first = TcpStream::connect(d.addr()).unwrap();
    first
        .write_all(
            format!(
                "PUT /videos/slot HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\
                 Content-Range: bytes {a}-{}/{size}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b - 1,
                b - a
            )
            .as_bytes(),
        )
        .unwrap();
    first
        .write_all(&src[a as usize..(a + 100) as usize])
        .unwrap();
    wait_until(
        "the first write's first bytes",
        Duration::from_secs(10),
        || cached(&d, "slot").contains(&(a, a + 100)),
    );
    let r = put_range(d.addr(), "slot", 15_000, &other[15_000..25_000], size).expect("second PUT");
    assert_eq!(r.status, 409, "{}", r.text());
    first
        .write_all(&src[(a + 100) as usize..b as usize])
        .unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_response(&mut std::io::BufReader::new(first), false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(cached(&d, "slot"), vec![(1000, 2000), (a, b)]);
    assert_bytes(
        &get_range(&d, "slot", a, b - 1).body,
        &src[a as usize..b as usize],
        "first writer's bytes",
    );
    assert_eq!(get_range(&d, "slot", b, b + 9).status, 416);

    // Truly concurrent pairs: exactly one of each pair is taken, and the bytes are the winner's.
    let src = Arc::new(src);
    let other = Arc::new(other);
    for pair in 0..5u64 {
        let base = 100_000 + pair * 100_000;
        let (ra, rb) = ((base, base + 60_000), (base + 30_000, base + 90_000));
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let addr = d.addr();
        let spawn = |(a, b): (u64, u64), bytes: Arc<Vec<u8>>| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                put_range(addr, "slot", a, &bytes[a as usize..b as usize], size)
                    .map(|r| r.status)
                    .unwrap_or(0)
            })
        };
        let ta = spawn(ra, src.clone());
        let tb = spawn(rb, other.clone());
        let (sa, sb) = (ta.join().unwrap(), tb.join().unwrap());
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "pair {pair}: {sa} / {sb}");
        let (won, bytes) = if sa == 200 { (ra, &src) } else { (rb, &other) };
        assert!(cached(&d, "slot").contains(&won), "pair {pair}");
        let r = get_range(&d, "slot", won.0, won.1 - 1);
        assert_bytes(
            &r.body,
            &bytes[won.0 as usize..won.1 as usize],
            "the winner's bytes",
        );
        let loser = if sa == 200 { rb } else { ra };
        let lost_only = missing(&[won], loser.0, loser.1)[0];
        assert_eq!(
            get_range(&d, "slot", lost_only.0, lost_only.0).status,
            416,
            "pair {pair}"
        );
    }
}

/// The `[[video]]` table of one more upload video.
fn upload_video(id: &str, size: u64) -> String {
    format!("\n[[video]]\nid = \"{id}\"\nkind = \"upload\"\nsize = {size}\n")
}

#[test]
fn a_crashed_video_is_recovered_on_its_own_thread_and_the_others_open_without_its_sync() {
    let dir = TestDir::new("dur-recover-alone");
    let size: u64 = 1 << 20;
    let src = source(size, 31);
    // No checkpoint: after the restart, what `slot` acknowledges lives in its log only.
    let body = slot_config("interval", size, 3_600_000, &upload_video("other", size));
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "slot", 0, &src[..5000], size);
    put_ok(&d, "other", 0, &src[..7000], size);
    assert!(d.stop(Duration::from_secs(10)).success());
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "slot", 10_000, &src[10_000..20_000], size);
    d.kill9();
    let d = Daemon::start(&dir.path, &body);
    let log = d.log();
    let recovering = |id: &str| {
        log.lines().any(|l| {
            l.contains(&format!(
                "video {id}: its data file is synced before its record is trusted"
            ))
        })
    };
    assert!(recovering("slot"), "the crashed video is recovered:\n{log}");
    assert!(
        !recovering("other"),
        "the clean video needs no sync:\n{log}"
    );
    let expect = vec![(0, 5000), (10_000, 20_000)];
    assert_eq!(verify_served(&d, &src, &expect), expect);
    assert_eq!(cached(&d, "other"), vec![(0, 7000)]);
    let r = get_range(&d, "other", 0, 6999);
    assert_eq!(r.status, 206);
    assert!(r.body == src[..7000], "the clean video's bytes");
    // The recovered state was made durable by the open: it survives another kill without a PUT.
    let mut d = d;
    d.kill9();
    let d = Daemon::start(&dir.path, &body);
    assert!(
        !d.log().contains("its data file is synced before"),
        "{}",
        d.log()
    );
    assert_eq!(verify_served(&d, &src, &expect), expect);
}

#[test]
fn metadata_is_sized_to_the_video_and_grows_with_its_presence_map() {
    let dir = TestDir::new("dur-meta-size");
    let size: u64 = 1 << 20;
    let src = source(size, 32);
    let body = slot_config("interval", size, 3_600_000, "");
    let mut d = Daemon::start(&dir.path, &body);
    let meta = dir.join("data/slot.meta");
    let first_len = std::fs::metadata(&meta).unwrap().len();
    assert_eq!(first_len, 4096 + 2 * 8192 + 2 * (128 << 10), "not 4 MiB");
    // 700 separate ranges: a record of ~12 KiB, more than the first 8 KiB durable pair holds.
    let ranges: Vec<(u64, u64)> = (0..700u64).map(|i| (i * 100, i * 100 + 10)).collect();
    for &(a, b) in &ranges {
        put_ok(&d, "slot", a, &src[a as usize..b as usize], size);
    }
    assert!(d.stop(Duration::from_secs(10)).success());
    let grown = std::fs::metadata(&meta).unwrap().len();
    assert!(
        grown > first_len,
        "the durable record moved to a larger pair"
    );
    assert!(grown < first_len + (256 << 10), "{grown} bytes");
    let mut d = Daemon::start(&dir.path, &body);
    assert_eq!(cached(&d, "slot"), ranges);
    // More ranges after the move, acknowledged by the log only, survive a kill -9.
    let more: Vec<(u64, u64)> = (0..100u64)
        .map(|i| (500_000 + i * 100, 500_000 + i * 100 + 5))
        .collect();
    for &(a, b) in &more {
        put_ok(&d, "slot", a, &src[a as usize..b as usize], size);
    }
    d.kill9();
    let d = Daemon::start(&dir.path, &body);
    let mut expect = ranges.clone();
    expect.extend(&more);
    assert_eq!(verify_served(&d, &src, &expect), expect);
}

#[test]
fn a_request_during_start_up_waits_for_its_video_instead_of_failing() {
    let dir = TestDir::new("dur-startup-wait");
    let size: u64 = 1 << 20;
    let src = source(size, 33);
    let mut extra = String::new();
    for i in 0..1500 {
        extra.push_str(&upload_video(&format!("v{i}"), size));
    }
    let body = slot_config("interval", size, 1000, &extra);
    let mut d = Daemon::start(&dir.path, &body);
    put_ok(&d, "v1499", 0, &src[..3000], size);
    assert!(d.stop(Duration::from_secs(30)).success());
    // Started by hand: the first request goes out as soon as the port answers, while the 1,501 videos
    // are still being opened; the last one in the config is asked for first.
    let port = free_port();
    let config = dir.join("vcache.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let at = text.find("listen = ").unwrap();
    let end = at + text[at..].find('\n').unwrap();
    let text = format!(
        "{}listen = \"127.0.0.1:{port}\"{}",
        &text[..at],
        &text[end..]
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("by-hand.log")).unwrap();
    let mut child = Command::new(vcache_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut answer = None;
    wait_until("the first answer", Duration::from_secs(30), || {
        answer = try_request(
            addr,
            "GET",
            "/videos/v1499",
            &[("Range", "bytes=0-2999")],
            b"",
        )
        .ok();
        answer.is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    let r = answer.unwrap();
    assert_eq!(r.status, 206, "{}", r.text());
    assert!(r.body == src[..3000]);
}
