//! Operating vcache like nginx: restarts that race the old process never break a video (the new one
//! waits for the files the old one still locks, and `/readyz` says so meanwhile), and SIGTERM ends live
//! streams at once instead of waiting out the grace for them.

mod common;
use common::*;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AUTH: (&str, &str) = ("Authorization", "Bearer tok");
const SIGTERM: i32 = 15;

/// Bytes of the upload slot written before the first restart; each round then writes `ROUND_BYTES`.
const BASE: u64 = 256 * 1024;
const ROUND_BYTES: u64 = 16 * 1024;
const ROUNDS: u64 = 20;

fn put_range(d: &Daemon, start: u64, bytes: &[u8], total: u64) -> Response {
    let cr = format!("bytes {start}-{}/{total}", start + bytes.len() as u64 - 1);
    request(
        d.addr(),
        "PUT",
        "/videos/slot",
        &[AUTH, ("Content-Range", &cr)],
        bytes,
    )
}

/// A client that sends half a request head: the old process keeps the connection through its whole
/// grace (limits.shutdown_timeout_ms) waiting for the rest, so the next process starts while the old
/// one still holds the files.
fn stalled_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /videos/slot HTTP/1.1\r\nHost: x\r\n")
        .expect("send");
    s
}

fn readyz(d: &Daemon) -> Response {
    d.get("/readyz", &[])
}

#[test]
fn a_restart_racing_the_old_process_never_breaks_a_video() {
    let dir = TestDir::new("restart-race");
    let total = BASE + ROUNDS * ROUND_BYTES;
    let src = source(total, 31);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = dir.join("vcache.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\
             checkpoint_interval_ms = 50\n\n[limits]\nshutdown_timeout_ms = 400\n\n\
             [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = {total}\n",
            free_port()
        ),
    )
    .expect("write config");
    let mut old = spawn_on_socket(&dir.path, &config, &listener, "round-0");
    wait_until(
        "the first daemon to be ready",
        Duration::from_secs(20),
        || try_request(addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200),
    );
    let r = put_range(&old, 0, &src[..BASE as usize], total);
    assert_eq!(r.status, 200, "{}", r.text());

    // Readers all along: every answer is the right bytes, or a 503 with Retry-After while the new
    // process waits for the files — never wrong bytes, a cut response or another status.
    let written = Arc::new(AtomicU64::new(BASE));
    let stop = Arc::new(AtomicBool::new(false));
    let (good, waits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (written, stop, good, waits, failures, src) = (
                written.clone(),
                stop.clone(),
                good.clone(),
                waits.clone(),
                failures.clone(),
                src.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let end = written.load(Ordering::SeqCst);
                    let range = format!("bytes=0-{}", end - 1);
                    let r = try_request(addr, "GET", "/videos/slot", &[("Range", &range)], b"");
                    match r {
                        Ok(r) if r.status == 206 && r.body == src[..end as usize] => {
                            good.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) if r.status == 503 && r.header("Retry-After").is_some() => {
                            waits.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(r) => failures.lock().unwrap().push(format!(
                            "status {} with {} bytes: {}",
                            r.status,
                            r.body.len(),
                            String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                        )),
                        Err(e) => failures.lock().unwrap().push(format!("{e}")),
                    }
                }
            })
        })
        .collect();

    let mut waited_for_lock = 0;
    for round in 1..=ROUNDS {
        let stalled = stalled_client(addr);
        // A moment for the old process to accept it (if it does not, this round races less; the
        // count of rounds that found the files locked is checked below).
        std::thread::sleep(Duration::from_millis(50));
        // The restart: SIGTERM the old process and start the new one at once, on the same socket.
        old.signal(SIGTERM);
        let mut new = spawn_on_socket(&dir.path, &config, &listener, &format!("round-{round}"));
        let status = old.wait_exit(Duration::from_secs(15));
        assert!(
            status.success(),
            "round {round}: old exit {status}; log:\n{}",
            old.log()
        );
        drop(stalled);
        wait_until(
            &format!("round {round}: the new daemon to be ready"),
            Duration::from_secs(20),
            || {
                assert!(
                    new.child
                        .as_mut()
                        .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
                    "round {round}: the new daemon exited; log:\n{}",
                    new.log()
                );
                try_request(addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
            },
        );
        if new.log().contains("locked by another process") {
            waited_for_lock += 1;
        }
        // Everything written before any restart is there, and the slot still takes writes.
        let at = BASE + (round - 1) * ROUND_BYTES;
        let r = get_range(&new, "slot", 0, at - 1);
        assert_eq!(r.status, 206, "round {round}: {}", r.text());
        assert_bytes(&r.body, &src[..at as usize], &format!("round {round}"));
        let r = put_range(
            &new,
            at,
            &src[at as usize..(at + ROUND_BYTES) as usize],
            total,
        );
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        written.store(at + ROUND_BYTES, Ordering::SeqCst);
        old = new;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("reader");
    }
    let failures = failures.lock().unwrap();
    eprintln!(
        "{ROUNDS} restarts: {} good reads, {} answered 503 + Retry-After while the new process waited; \
         {waited_for_lock} rounds found the files locked",
        good.load(Ordering::SeqCst),
        waits.load(Ordering::SeqCst)
    );
    assert!(
        failures.is_empty(),
        "{} broken reads, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        waited_for_lock > 0,
        "no round raced the old process: the test shows nothing"
    );
    assert!(good.load(Ordering::SeqCst) > 0);
    let status = old.stop(Duration::from_secs(15));
    assert!(status.success(), "last exit {status}");
}

#[test]
fn readyz_lists_a_locked_video_until_its_files_are_free() {
    let dir = TestDir::new("readyz-locked");
    let body = "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\n[limits]\nshutdown_timeout_ms = 300\n\n\
                [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = 65536\n";
    let first = Daemon::start(&dir.path, body);
    assert_eq!(readyz(&first).status, 200);
    // A second daemon on the same data_dir (another port) finds the files locked.
    let second_dir = dir.join("second");
    std::fs::create_dir_all(&second_dir).expect("mkdir");
    let body2 = body.replace(
        "data_dir = \"data\"",
        &format!("data_dir = {:?}", dir.join("data")),
    );
    let second = Daemon::start(&second_dir, &body2);
    let r = readyz(&second);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("\"id\":\"slot\",\"reason\":\"locked\""),
        "{}",
        r.text()
    );
    let r = second.get("/videos/slot", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    let m = second.get("/metrics", &[]).text();
    assert!(
        m.contains("vcache_video_unavailable{id=\"slot\",reason=\"locked\"} 1\n"),
        "{m}"
    );
    assert!(
        second.log().contains("waiting up to 5300 ms"),
        "{}",
        second.log()
    );
    // The first one goes away: the second opens the video within its retry pace.
    drop(first);
    wait_until(
        "the second daemon to open the video",
        Duration::from_secs(5),
        || readyz(&second).status == 200,
    );
    assert!(
        !second
            .get("/metrics", &[])
            .text()
            .contains("vcache_video_unavailable{")
    );
    assert!(
        second.log().contains("video slot: opened after"),
        "{}",
        second.log()
    );
}

/// A follower of `ch` on its own thread: the whole response (it must end with the last chunk).
fn follower(addr: SocketAddr) -> std::thread::JoinHandle<std::io::Result<Response>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"GET /videos/ch HTTP/1.1\r\nHost: x\r\n\r\n")?;
        read_response(&mut BufReader::new(s), false)
    })
}

fn followers_now(d: &Daemon) -> u64 {
    let e = video_entry(d, "ch");
    numbers_after(&e, "\"followers\":")
        .first()
        .copied()
        .unwrap_or(0)
}

#[test]
fn sigterm_ends_a_publisher_and_100_followers_at_once() {
    let dir = TestDir::new("sigterm-live");
    // The default grace (10 s): streams must not wait for it.
    let mut d = Daemon::start(&dir.path, &live_config("ch", 1 << 20, "", "", ""));
    let followers: Vec<_> = (0..100).map(|_| follower(d.addr())).collect();
    wait_until("100 followers", Duration::from_secs(20), || {
        followers_now(&d) == 100
    });
    let src = source(300_000, 7);
    let mut p = TcpStream::connect(d.addr()).expect("connect publisher");
    p.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    p.write_all(b"PUT /videos/ch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("publisher head");
    for piece in src.chunks(100_000) {
        p.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .expect("size");
        p.write_all(piece).expect("chunk");
        p.write_all(b"\r\n").expect("crlf");
    }
    wait_until("the head to reach 300000", Duration::from_secs(20), || {
        numbers_after(&video_entry(&d, "ch"), "\"head\":").first() == Some(&300_000)
    });
    let t0 = Instant::now();
    d.signal(SIGTERM);
    let status = d.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    eprintln!("SIGTERM with a publisher and 100 followers: exited in {took:?}");
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: streams waited for the grace"
    );
    let answer = read_response(&mut BufReader::new(p), false).expect("publisher answer");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer.text().contains("\"head\":300000"),
        "{}",
        answer.text()
    );
    for f in followers {
        let r = f
            .join()
            .expect("thread")
            .expect("a clean chunked end (0\\r\\n\\r\\n)");
        assert_eq!(r.status, 200);
        assert_bytes(&r.body, &src, "a follower's stream");
    }
    let log = d.log();
    assert!(
        log.contains("publish to ch ended by shutdown after 300000 bytes"),
        "{log}"
    );
    assert!(
        !log.contains("18446744"),
        "an underflowed length in the log:\n{log}"
    );
    // What arrived is committed.
    let d = Daemon::start_with_config(&dir.path, &d.config_path.clone(), d.port);
    assert_eq!(
        numbers_after(&video_entry(&d, "ch"), "\"head\":").first(),
        Some(&300_000)
    );
}

/// A daemon serving file video `m` (the origin of the next one).
fn origin_daemon(dir: &TestDir, src: &[u8]) -> Daemon {
    std::fs::create_dir_all(dir.join("origin")).expect("mkdir");
    std::fs::write(dir.join("origin/m.bin"), src).expect("write");
    Daemon::start(
        &dir.join("origin"),
        "[server]\ndata_dir = \"data\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.bin\"\n",
    )
}

fn cache_config(origin: &Daemon, format: &str) -> String {
    format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\naccess_log = \"access.log\"\n\
         access_log_format = \"{format}\"\n\n[[video]]\nid = \"o\"\nkind = \"origin\"\n\
         url = \"{}\"\nfill_block = \"64KiB\"\n",
        origin.url("/videos/m")
    )
}

/// The access log's lines, once it has at least `n`.
fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(
        &format!("{n} access log lines"),
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            lines = text.lines().map(str::to_string).collect();
            lines.len() >= n
        },
    );
    lines
}

/// A combined line's fields: peer, time, request, status, bytes, range, duration, cache, video.
fn combined_fields(line: &str) -> Vec<String> {
    let (peer, rest) = line.split_once(" - - [").expect("peer - - [");
    let (time, rest) = rest.split_once("] \"").expect("time]");
    let (request, rest) = rest.split_once("\" ").expect("request");
    let (status, rest) = rest.split_once(' ').expect("status");
    let (bytes, rest) = rest.split_once(" \"").expect("bytes");
    let (range, rest) = rest.split_once("\" ").expect("range");
    let tail: Vec<&str> = rest.split(' ').collect();
    assert_eq!(tail.len(), 3, "duration cache video in {line:?}");
    let mut out = vec![peer, time, request, status, bytes, range];
    out.extend(tail);
    out.into_iter().map(str::to_string).collect()
}

#[test]
fn the_access_log_has_a_line_per_request_and_origin_responses_say_hit_miss_or_partial() {
    let dir = TestDir::new("access-log");
    let src = source(300_000, 9);
    let origin = origin_daemon(&dir, &src);
    let d = Daemon::start(&dir.path, &cache_config(&origin, "combined"));
    let get = |range: &str| d.get("/videos/o", &[("Range", range)]);
    let miss = get("bytes=0-999");
    assert_eq!((miss.status, miss.header("X-Cache")), (206, Some("MISS")));
    let hit = get("bytes=0-999");
    assert_eq!((hit.status, hit.header("X-Cache")), (206, Some("HIT")));
    let partial = get("bytes=1000-199999");
    assert_eq!(
        (partial.status, partial.header("X-Cache")),
        (206, Some("PARTIAL"))
    );
    assert_bytes(&partial.body, &src[1000..200_000], "the partial response");
    assert_eq!(d.get("/healthz", &[]).status, 200);
    assert_eq!(d.get("/nothing", &[]).status, 404);
    assert!(raw_exchange(d.addr(), b"BREW\x01 / HTTP/1.1\r\n\r\n").starts_with(b"HTTP/1.1 400"));
    // The start-up probes of the test harness (GET /healthz) come first.
    let probes = log_lines(&d.dir.join("access.log"), 1)
        .iter()
        .take_while(|l| l.contains("/healthz"))
        .count();
    let mut lines = log_lines(&d.dir.join("access.log"), probes + 6);
    lines.drain(..probes);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let f: Vec<Vec<String>> = lines.iter().map(|l| combined_fields(l)).collect();
    for (line, fields) in lines.iter().zip(&f) {
        assert_eq!(fields[0], "127.0.0.1", "{line}");
        assert!(
            fields[1].ends_with(" +0000") && fields[1].len() == 30,
            "{line}"
        );
        let secs: f64 = fields[6].parse().expect("duration");
        assert!((0.0..10.0).contains(&secs), "{line}");
    }
    let expect = [
        ("GET /videos/o HTTP/1.1", "206", "bytes=0-999", "MISS", "o"),
        ("GET /videos/o HTTP/1.1", "206", "bytes=0-999", "HIT", "o"),
        (
            "GET /videos/o HTTP/1.1",
            "206",
            "bytes=1000-199999",
            "PARTIAL",
            "o",
        ),
        ("GET /healthz HTTP/1.1", "200", "-", "-", "-"),
        ("GET /nothing HTTP/1.1", "404", "-", "-", "-"),
        ("- - HTTP/1.1", "400", "-", "-", "-"),
    ];
    for (i, (request, status, range, cache, video)) in expect.iter().enumerate() {
        let got = &f[i];
        assert_eq!(
            (
                &got[2][..],
                &got[3][..],
                &got[5][..],
                &got[7][..],
                &got[8][..]
            ),
            (*request, *status, *range, *cache, *video),
            "line {i}: {}",
            lines[i]
        );
    }
    // Bytes sent are the whole response: head and body.
    let sent: u64 = f[2][4].parse().expect("bytes");
    assert!(sent > 199_000 && sent < 200_000 + 1024, "{}", lines[2]);

    // SIGHUP reopens the log (after logrotate moved it) in the format the config now names.
    std::fs::rename(d.dir.join("access.log"), d.dir.join("access.log.1")).expect("rotate");
    std::fs::write(
        &d.config_path,
        cache_config(&origin, "json").replacen(
            "[server]",
            &format!("[server]\nlisten = \"127.0.0.1:{}\"", d.port),
            1,
        ),
    )
    .expect("config");
    d.signal(1);
    wait_until("the reload", Duration::from_secs(10), || {
        d.log().contains("reloaded config")
    });
    assert_eq!(get("bytes=0-9").status, 206);
    let lines = log_lines(&d.dir.join("access.log"), 1);
    let l = &lines[0];
    for field in [
        "\"peer\":\"127.0.0.1:",
        "\"method\":\"GET\",\"target\":\"/videos/o\",\"protocol\":\"HTTP/1.1\",\"range\":\"bytes=0-9\",\"status\":206,",
        "\"cache\":\"HIT\",\"video\":\"o\"}",
        "\"duration_ms\":",
    ] {
        assert!(l.contains(field), "{field} in {l}");
    }
}

/// One sample of an exposition: name, labels in order, value.
type Sample = (String, Vec<(String, String)>, f64);

fn metric_name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `{a="x",b="y"}` → pairs; label values may hold escaped `\\`, `\"` and `\n`.
fn parse_labels(text: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {line:?}"));
        assert!(
            metric_name_ok(name) && !name.contains(':'),
            "label name {name:?} in {line:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        out.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// A strict reader of the Prometheus text format (0.0.4): every sample belongs to a family declared
/// by `# HELP` and `# TYPE` before it, families are not interleaved, no series repeats, counters end
/// in `_total`, and histogram buckets are cumulative up to `+Inf` = `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut helped = std::collections::HashSet::new();
    let mut current = String::new();
    let mut seen_series = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(metric_name_ok(name) && !help.trim().is_empty(), "{line:?}");
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line:?}"
            );
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice: {name}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} does not end in _total"
                );
            }
            current = name.to_string();
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("}"), line)),
            None => (series, Vec::new()),
        };
        let family = match types.get(&current).map(String::as_str) {
            Some("histogram") => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name),
            _ => name,
        };
        assert_eq!(family, current, "sample {name} outside its family block");
        assert!(
            seen_series.insert(series.to_string()),
            "series {series} twice"
        );
        samples.push((name.to_string(), labels, value));
    }
    for (name, kind) in &types {
        if kind == "histogram" {
            let buckets: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.0 == format!("{name}_bucket"))
                .collect();
            assert!(
                buckets.windows(2).all(|w| w[0].2 <= w[1].2),
                "{name} buckets not cumulative"
            );
            let last = buckets.last().expect("buckets");
            assert_eq!(
                last.1,
                vec![("le".to_string(), "+Inf".to_string())],
                "{name}"
            );
            let count = samples
                .iter()
                .find(|s| s.0 == format!("{name}_count"))
                .expect("_count");
            assert_eq!(last.2, count.2, "{name}: +Inf bucket is not _count");
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.0 == name
                && s.1.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.1.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.2)
}

fn scrape(d: &Daemon) -> Vec<Sample> {
    let r = d.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    parse_exposition(&r.text())
}

#[test]
fn metrics_parse_strictly_and_move_with_traffic() {
    let dir = TestDir::new("metrics");
    let src = source(300_000, 11);
    let origin = origin_daemon(&dir, &src);
    let d = Daemon::start(&dir.path, &cache_config(&origin, "combined"));
    let before = scrape(&d);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&before, "vcache_build_info", &[("version", version)]),
        Some(1.0)
    );
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(value(&before, name, &[]).is_some_and(|v| v > 0.0), "{name}");
    }
    // A fresh process may not have used a whole clock tick of CPU yet.
    assert!(value(&before, "process_cpu_seconds_total", &[]).is_some_and(|v| v >= 0.0));
    let started = value(&before, "process_start_time_seconds", &[]).unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - started).abs() < 120.0,
        "start time {started} vs now {now}"
    );
    let code =
        |s: &[Sample], c: &str| value(s, "vcache_responses_total", &[("code", c)]).unwrap_or(0.0);
    let count =
        |s: &[Sample]| value(s, "vcache_request_duration_seconds_count", &[]).unwrap_or(0.0);
    for _ in 0..3 {
        assert_eq!(d.get("/videos/o", &[("Range", "bytes=0-99")]).status, 206);
    }
    assert_eq!(d.get("/nope", &[]).status, 404);
    let r = request(d.addr(), "POST", "/metrics", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
    let after = scrape(&d);
    assert_eq!(code(&after, "206") - code(&before, "206"), 3.0);
    assert_eq!(code(&after, "404") - code(&before, "404"), 1.0);
    assert_eq!(code(&after, "405") - code(&before, "405"), 1.0);
    // The three reads, the 404, the 405 and the first scrape itself.
    assert_eq!(count(&after) - count(&before), 6.0);
    assert_eq!(value(&after, "vcache_videos", &[]), Some(1.0));
    assert!(value(&after, "vcache_cache_present_bytes", &[]).is_some_and(|v| v >= 100.0));
    assert_eq!(value(&after, "vcache_live_followers", &[]), Some(0.0));
    assert!(value(&after, "vcache_unsynced_metadata_records_total", &[]).is_some());
    assert!(!after.iter().any(|s| s.0 == "vcache_fast_records_total"));
}

#[test]
fn sigterm_with_drain_ms_turns_readyz_503_while_everything_is_still_served() {
    let dir = TestDir::new("drain");
    let data = source(8192, 5);
    let mut d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"tok\"\n\
         [cluster]\ndrain_ms = 5000\n\
         [[video]]\nid = \"slot\"\nkind = \"upload\"\nsize = 8192\n",
    );
    assert_eq!(put_range(&d, 0, &data[..4096], 8192).status, 200);
    let r = readyz(&d);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"draining\":false"), "{}", r.text());
    d.signal(SIGTERM);
    // Draining: not ready, alive, and reads, writes and new connections are all still served.
    wait_until("/readyz to turn 503", Duration::from_secs(4), || {
        readyz(&d).status == 503
    });
    let r = readyz(&d);
    assert!(r.text().contains("\"draining\":true"), "{}", r.text());
    assert_eq!(d.get("/healthz", &[]).status, 200);
    assert_eq!(put_range(&d, 4096, &data[4096..], 8192).status, 200);
    let r = d.get("/videos/slot", &[]);
    assert_eq!((r.status, r.body == data), (200, true));
    // Then the usual shutdown: exit 0 once drain_ms has passed.
    assert!(d.wait_exit(Duration::from_secs(20)).success());
}
