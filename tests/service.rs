//! Running as a systemd service, without systemd: socket activation (through `systemd-socket-activate`
//! and through a socket the test passes as fd 3 itself, across a restart that must refuse no
//! connection), the sd_notify protocol read from a datagram socket the test binds as NOTIFY_SOCKET
//! (READY, WATCHDOG, RELOADING/READY, STOPPING), and SIGHUP reloads applied as a diff while
//! connections stay open.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// A config file for `port` with the given `[server]` extras and `[[video]]` tables.
fn write_config(dir: &Path, name: &str, port: u16, server_extra: &str, videos: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n{server_extra}\ncheckpoint_interval_ms = 50\n\n{videos}"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn file_video(id: &str, file: &str) -> String {
    format!("[[video]]\nid = \"{id}\"\nkind = \"file\"\npath = \"{file}\"\n\n")
}

fn upload_video(id: &str, size: u64) -> String {
    format!("[[video]]\nid = \"{id}\"\nkind = \"upload\"\nsize = {size}\n\n")
}

/// Replace a config file atomically (a reload never reads a half-written file).
fn replace_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// Spawn `vcache serve --config` with extra environment, wrapped as a `Daemon` (killed on drop).
fn spawn_daemon(dir: &Path, config: &Path, port: u16, env: &[(&str, &str)], tag: &str) -> Daemon {
    let log_path = dir.join(format!("vcache-{tag}.log"));
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut cmd = Command::new(vcache_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn vcache");
    Daemon {
        child: Some(child),
        port,
        dir: dir.to_path_buf(),
        config_path: config.to_path_buf(),
        log_path,
    }
}

/// Wait until /healthz answers 200 (the daemon is serving), failing with its log otherwise.
fn wait_healthy(d: &mut Daemon) {
    let addr = d.addr();
    let mut exited = None;
    let child = d.child.as_mut().expect("daemon running");
    wait_until(
        "vcache to answer GET /healthz",
        Duration::from_secs(20),
        || {
            exited = child.try_wait().ok().flatten();
            exited.is_some()
                || try_request(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        },
    );
    if let Some(status) = exited {
        panic!("vcache exited early with {status}; log:\n{}", d.log());
    }
}

/// Count occurrences of `needle` in the log.
fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log().matches(needle).count()
}

/// SIGHUP and wait until the reload is logged (accepted or refused).
fn reload(d: &Daemon) -> String {
    let before =
        log_count(d, "reloaded config") + log_count(d, "refused, the running config stays");
    d.signal(SIGHUP);
    wait_until(
        "the reload to be logged (accepted or refused)",
        Duration::from_secs(10),
        || {
            log_count(d, "reloaded config") + log_count(d, "refused, the running config stays")
                > before
        },
    );
    d.log()
}

fn keep_alive_get(c: &mut Client, path: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.read(false)
}

#[test]
fn serves_on_the_socket_systemd_socket_activate_passes() {
    // This test fails without the tool even when VCACHE_REQUIRE_TOOLS is not set.
    let socket_activate = require_tool("systemd-socket-activate")
        .expect("systemd-socket-activate is missing (apt-get install systemd)");
    let dir = TestDir::new("sockact");
    let data = pseudo_random_bytes(300_000, 11);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    // The config names another port: the passed socket must win, and that port must stay unbound.
    let config_port = free_port();
    let config = write_config(
        &dir.path,
        "vcache.toml",
        config_port,
        "write_token = \"t\"",
        &file_video("m", "m.ts"),
    );
    let port = free_port();
    let log_path = dir.join("vcache-sockact.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&socket_activate)
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg(vcache_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn systemd-socket-activate");
    let mut d = Daemon {
        child: Some(child),
        port,
        dir: dir.path.clone(),
        config_path: config.clone(),
        log_path,
    };
    // systemd-socket-activate binds, then execs vcache on the first connection, which then waits in
    // the queue until vcache accepts it.
    let mut answer = None;
    wait_until(
        "an answer through the passed socket",
        Duration::from_secs(10),
        || {
            answer = try_request(d.addr(), "GET", "/videos/m", &[], b"").ok();
            answer.is_some()
        },
    );
    let r = answer.expect("an answer");
    assert_eq!(r.status, 200, "{}", d.log());
    assert_eq!(r.body, data);
    let log = d.log();
    assert!(
        log.contains("using the listening socket passed by systemd"),
        "log:\n{log}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", config_port)).is_err(),
        "the config's listen port was bound although a socket was passed"
    );
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

#[test]
fn a_passed_fd_that_is_not_a_listening_socket_is_refused_clearly() {
    let dir = TestDir::new("badfd");
    let port = free_port();
    let config = write_config(&dir.path, "vcache.toml", port, "write_token = \"t\"", "");
    // fd 3 is a regular file, as a broken unit (or a stray LISTEN_FDS) could leave it.
    let not_a_socket = std::fs::File::create(dir.join("plain")).unwrap();
    let log_path = dir.join("vcache-badfd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"")
        .arg(vcache_bin())
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    pass_as_fd3(&mut cmd, not_a_socket.as_raw_fd());
    let status = cmd.status().expect("run vcache");
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !status.success(),
        "vcache served on a non-socket fd 3:\n{text}"
    );
    assert!(
        text.contains("socket activation") && text.contains("not a socket"),
        "unclear error:\n{text}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "vcache fell back to binding its config's address"
    );
}

#[test]
fn a_restart_under_socket_activation_refuses_no_connection() {
    let dir = TestDir::new("restart");
    let data = pseudo_random_bytes(20_000, 5);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // The config's own listen address is elsewhere: every answer must come through the passed socket.
    let config = write_config(
        &dir.path,
        "vcache.toml",
        free_port(),
        "write_token = \"t\"",
        &file_video("m", "m.ts"),
    );
    let mut first = spawn_on_socket(&dir.path, &config, &listener, "first");
    wait_healthy(&mut first);

    let stop = Arc::new(AtomicBool::new(false));
    let in_gap = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let ok_from_gap = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, in_gap, ok, ok_from_gap, failures) = (
            stop.clone(),
            in_gap.clone(),
            ok.clone(),
            ok_from_gap.clone(),
            failures.clone(),
        );
        let data = data.clone();
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let during_gap = in_gap.load(Ordering::SeqCst);
                match try_request(addr, "GET", "/videos/m", &[], b"") {
                    Ok(r) if r.status == 200 && r.body == data => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if during_gap {
                            ok_from_gap.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(r) => failures.lock().unwrap().push(format!(
                        "status {} with {} bytes",
                        r.status,
                        r.body.len()
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{e}")),
                }
            }
        }));
    }
    let wait_ok = |n: u64| {
        wait_until(
            &format!("the clients to have {n} good answers"),
            Duration::from_secs(20),
            || ok.load(Ordering::SeqCst) >= n,
        );
    };
    wait_ok(50);
    // Restart: the first daemon stops (no process listens), connections queue, the second takes over.
    in_gap.store(true, Ordering::SeqCst);
    let status = first.stop(Duration::from_secs(15));
    assert!(
        status.success(),
        "first exit {status}; log:\n{}",
        first.log()
    );
    // The gap itself: for a while no process accepts, and the clients' connections queue on the
    // socket. (This sleep is the behaviour under test, not a wait for a condition.)
    std::thread::sleep(Duration::from_millis(300));
    let second = spawn_on_socket(&dir.path, &config, &listener, "second");
    let before = ok.load(Ordering::SeqCst);
    wait_ok(before + 50);
    in_gap.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} attempts failed across the restart, first: {:?}\nfirst log:\n{}\nsecond log:\n{}",
        failures.len(),
        failures.len() as u64 + ok.load(Ordering::SeqCst),
        failures.first(),
        first.log(),
        second.log()
    );
    assert!(
        ok_from_gap.load(Ordering::SeqCst) > 0,
        "no connection was attempted while no daemon was running"
    );
    assert!(
        second
            .log()
            .contains("using the listening socket passed by systemd")
    );
}

/// Read the next notify datagram (at most `limit` from now).
fn recv_notify(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

/// Read datagrams until one satisfies `pred`; returns it and every message read on the way.
fn recv_until(
    sock: &UnixDatagram,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(m) = recv_notify(sock, Duration::from_millis(500)) {
            if pred(&m) {
                return (m, seen);
            }
            seen.push(m);
        }
    }
    panic!("no {what} notification; got {seen:?}");
}

#[test]
fn notifies_ready_watchdog_reloading_and_stopping() {
    let dir = TestDir::new("notify");
    std::fs::write(dir.join("m.ts"), pseudo_random_bytes(1000, 2)).unwrap();
    let notify_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let port = free_port();
    let config = write_config(
        &dir.path,
        "vcache.toml",
        port,
        "write_token = \"t\"",
        &file_video("m", "m.ts"),
    );
    let notify = notify_path.to_str().unwrap().to_string();
    let mut d = spawn_daemon(
        &dir.path,
        &config,
        port,
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "200000")],
        "notify",
    );
    let (ready, _) = recv_until(&sock, "READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // READY=1 means serving: the first request right after it is answered.
    assert_eq!(d.get("/healthz", &[]).status, 200, "after {ready:?}");

    // WATCHDOG=1 at half of WATCHDOG_USEC: several within a second.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        let (_, _) = recv_until(&sock, "WATCHDOG=1", |m| {
            m.lines().any(|l| l == "WATCHDOG=1")
        });
        pings += 1;
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "4 watchdog pings took {:?}",
        start.elapsed()
    );

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC (systemd >= 253 wants it), then READY=1.
    d.signal(SIGHUP);
    let (reloading, _) = recv_until(&sock, "RELOADING=1", |m| {
        m.lines().any(|l| l == "RELOADING=1")
    });
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    recv_until(&sock, "READY=1 after the reload", |m| {
        m.lines().any(|l| l == "READY=1")
    });
    assert_eq!(d.get("/videos/m", &[]).status, 200);

    // SIGTERM: STOPPING=1, then a clean exit.
    d.signal(SIGTERM);
    recv_until(&sock, "STOPPING=1", |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

#[test]
fn watchdog_pings_need_watchdog_pid_to_name_the_daemon() {
    let dir = TestDir::new("wdpid");
    let notify_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let port = free_port();
    let config = write_config(&dir.path, "vcache.toml", port, "write_token = \"t\"", "");
    let notify = notify_path.to_str().unwrap().to_string();
    // WATCHDOG_PID names another process (pid 1): the watchdog is not ours, so no WATCHDOG=1.
    let mut d = spawn_daemon(
        &dir.path,
        &config,
        port,
        &[
            ("NOTIFY_SOCKET", &notify),
            ("WATCHDOG_USEC", "100000"),
            ("WATCHDOG_PID", "1"),
        ],
        "wdpid",
    );
    recv_until(&sock, "READY=1", |m| m.lines().any(|l| l == "READY=1"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        if let Some(m) = recv_notify(&sock, Duration::from_millis(100)) {
            assert!(
                !m.contains("WATCHDOG=1"),
                "pinged a watchdog that is not its own: {m:?}"
            );
        }
    }
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success());
}

#[test]
fn sighup_adds_and_removes_videos_without_touching_open_connections() {
    let dir = TestDir::new("reload");
    let big = pseudo_random_bytes(48 << 20, 21);
    let keep = pseudo_random_bytes(10_000, 22);
    let added = pseudo_random_bytes(7_000, 23);
    let uploaded = pseudo_random_bytes(4096, 24);
    std::fs::write(dir.join("big.ts"), &big).unwrap();
    std::fs::write(dir.join("keep.ts"), &keep).unwrap();
    std::fs::write(dir.join("added.ts"), &added).unwrap();
    let port = free_port();
    let v1 = format!(
        "{}{}{}",
        file_video("big", "big.ts"),
        file_video("keep", "keep.ts"),
        upload_video("up", 4096)
    );
    let config = write_config(&dir.path, "vcache.toml", port, "write_token = \"t\"", &v1);
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "reload");
    wait_healthy(&mut d);
    let r = request(
        d.addr(),
        "PUT",
        "/videos/up",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Range", "bytes 0-4095/4096"),
        ],
        &uploaded,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A big download in flight: read only its head, so the rest waits in the daemon.
    let mut download = TcpStream::connect(d.addr()).unwrap();
    download
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    download
        .write_all(b"GET /videos/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 64 * 1024];
    download.read_exact(&mut first).unwrap();
    // A keep-alive connection that spans the reload.
    let mut k = Client::connect(d.addr());
    let r = keep_alive_get(&mut k, "/videos/keep");
    assert_eq!((r.status, &r.body), (200, &keep));

    // v2: big and up removed, added is new.
    let v2 = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\ncheckpoint_interval_ms = 50\n\n{}{}",
        file_video("keep", "keep.ts"),
        file_video("added", "added.ts")
    );
    replace_config(&config, &v2);
    let log = reload(&d);
    assert!(log.contains("reloaded config"), "{log}");

    // The same keep-alive connection: still works, sees the new video and not the removed ones.
    let r = keep_alive_get(&mut k, "/videos/keep");
    assert_eq!((r.status, &r.body), (200, &keep));
    let r = keep_alive_get(&mut k, "/videos/added");
    assert_eq!((r.status, &r.body), (200, &added));
    let r = keep_alive_get(&mut k, "/videos/big");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = keep_alive_get(&mut k, "/videos/up");
    assert_eq!(r.status, 404, "{}", r.text());
    let list = d.get("/videos", &[]).text();
    assert!(
        list.contains("\"added\"") && !list.contains("\"big\"") && !list.contains("\"up\""),
        "{list}"
    );
    // Their files stay.
    assert_eq!(std::fs::read(dir.join("big.ts")).unwrap(), big);
    assert!(dir.join("data/up.data").exists() && dir.join("data/up.meta").exists());

    // The download that was in flight completes byte for byte.
    let mut rest = Vec::new();
    download.read_to_end(&mut rest).unwrap();
    let mut whole = first;
    whole.extend_from_slice(&rest);
    let split = whole
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&whole[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        whole[split..] == big[..],
        "the in-flight download of a removed video was not byte-exact ({} of {} bytes)",
        whole.len() - split,
        big.len()
    );

    // Adding `up` back serves what it held (its files were kept, or are still open).
    let v3 = format!("{v2}{}", upload_video("up", 4096));
    replace_config(&config, &v3);
    reload(&d);
    let r = keep_alive_get(&mut k, "/videos/up");
    assert_eq!((r.status, &r.body), (200, &uploaded), "{}", d.log());
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

#[test]
fn a_write_in_flight_across_removal_and_re_adding_completes_and_is_kept() {
    let dir = TestDir::new("reload-write");
    let port = free_port();
    let size = 1u64 << 20;
    let body = pseudo_random_bytes(size as usize, 31);
    let v1 = upload_video("up", size);
    let config = write_config(&dir.path, "vcache.toml", port, "write_token = \"t\"", &v1);
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "reload-write");
    wait_healthy(&mut d);

    // Start a PUT and send half its body.
    let mut w = TcpStream::connect(d.addr()).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    w.write_all(
        format!(
            "PUT /videos/up HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer t\r\nContent-Range: bytes 0-{}/{size}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n",
            size - 1
        )
        .as_bytes(),
    )
    .unwrap();
    let half = body.len() / 2;
    w.write_all(&body[..half]).unwrap();

    // Remove the video: new requests get 404, the write goes on.
    let empty = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\ncheckpoint_interval_ms = 50\n"
    );
    replace_config(&config, &empty);
    reload(&d);
    assert_eq!(d.get("/videos/up", &[]).status, 404);
    // Add it back while the write still holds it open: the open files are reused (opening them again
    // would fail on the data file's lock).
    replace_config(&config, &format!("{empty}\n{v1}"));
    let log = reload(&d);
    assert!(
        !log.contains("reload: video up"),
        "re-adding failed:\n{log}"
    );
    w.write_all(&body[half..]).unwrap();
    let mut resp = String::new();
    w.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let r = d.get("/videos/up", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body, "the slot does not hold the write");

    // And it survives a restart: the checkpoint covered it.
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "reload-write-2");
    wait_healthy(&mut d);
    let r = d.get("/videos/up", &[]);
    assert!(
        r.status == 200 && r.body == body,
        "status {} after restart",
        r.status
    );
}

#[test]
fn a_removed_upload_with_a_write_in_flight_is_committed_at_shutdown() {
    let dir = TestDir::new("reload-final");
    let port = free_port();
    let size = 1u64 << 20;
    let body = pseudo_random_bytes(size as usize, 41);
    let v1 = upload_video("up", size);
    // A long checkpoint interval: only the final commit at shutdown makes the write durable.
    let config = dir.join("vcache.toml");
    let with_videos = |videos: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nwrite_token = \"t\"\ncheckpoint_interval_ms = 3600000\n\n{videos}"
        )
    };
    std::fs::write(&config, with_videos(&v1)).unwrap();
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "final");
    wait_healthy(&mut d);
    let mut w = TcpStream::connect(d.addr()).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    w.write_all(
        format!(
            "PUT /videos/up HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer t\r\nContent-Range: bytes 0-{}/{size}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n",
            size - 1
        )
        .as_bytes(),
    )
    .unwrap();
    w.write_all(&body[..body.len() / 2]).unwrap();
    replace_config(&config, &with_videos(""));
    reload(&d);
    w.write_all(&body[body.len() / 2..]).unwrap();
    let mut resp = String::new();
    w.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
    // The removed video's bytes were committed durably: `vcache check` reads the metadata.
    std::fs::write(&config, with_videos(&v1)).unwrap();
    let out = Command::new(vcache_bin())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{size} bytes present")),
        "not committed: {text}"
    );
}

#[test]
fn a_config_that_fails_to_load_on_sighup_keeps_the_running_one() {
    let dir = TestDir::new("reload-bad");
    let data = pseudo_random_bytes(5000, 7);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    let port = free_port();
    let config = write_config(
        &dir.path,
        "vcache.toml",
        port,
        "write_token = \"t\"",
        &file_video("m", "m.ts"),
    );
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "bad");
    wait_healthy(&mut d);
    let mut k = Client::connect(d.addr());
    assert_eq!(keep_alive_get(&mut k, "/videos/m").status, 200);
    replace_config(
        &config,
        "[server\nlisten = \"127.0.0.1:1\"\n[[video]]\nid = \"x\"\n",
    );
    let log = reload(&d);
    let line = log
        .lines()
        .find(|l| l.contains("refused, the running config stays"))
        .expect("refusal logged");
    assert!(
        line.contains("vcache.toml"),
        "the log line does not name the file: {line}"
    );
    let r = keep_alive_get(&mut k, "/videos/m");
    assert_eq!((r.status, &r.body), (200, &data));
    let r = d.get("/videos/m", &[]);
    assert_eq!((r.status, &r.body), (200, &data));
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

#[test]
fn a_changed_token_applies_to_new_requests_after_sighup() {
    let dir = TestDir::new("reload-token");
    let port = free_port();
    let config = write_config(
        &dir.path,
        "vcache.toml",
        port,
        "write_token = \"old\"",
        &upload_video("up", 100),
    );
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "token");
    wait_healthy(&mut d);
    let put = |d: &Daemon, token: &str, range: &str| {
        request(
            d.addr(),
            "PUT",
            "/videos/up",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Range", range),
            ],
            &[7u8; 10],
        )
        .status
    };
    assert_eq!(put(&d, "old", "bytes 0-9/100"), 200);
    assert_eq!(put(&d, "new", "bytes 10-19/100"), 401);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"old\"", "\"new\"");
    replace_config(&config, &text);
    reload(&d);
    assert_eq!(put(&d, "old", "bytes 10-19/100"), 401);
    assert_eq!(put(&d, "new", "bytes 10-19/100"), 200);
    let r = d.get("/videos/up", &[("Range", "bytes=0-19")]);
    assert_eq!((r.status, r.body), (206, vec![7u8; 20]));
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

#[test]
fn a_connection_accepted_before_sigterm_gets_its_request_answered() {
    let dir = TestDir::new("accepted");
    let data = pseudo_random_bytes(3000, 9);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    let port = free_port();
    let config = write_config(
        &dir.path,
        "vcache.toml",
        port,
        "write_token = \"t\"",
        &file_video("m", "m.ts"),
    );
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "accepted");
    wait_healthy(&mut d);
    // Connected (and accepted by the daemon) but the request is not sent yet, as happens to a client
    // that connects just before a restart.
    let mut c = Client::connect(d.addr());
    // Accepted: open now are this client and the /metrics request asking.
    wait_until(
        "the daemon to accept the connection",
        Duration::from_secs(10),
        || d.metric("vcache_open_connections") >= 2,
    );
    d.signal(SIGTERM);
    wait_until(
        "the daemon to begin its shutdown",
        Duration::from_secs(10),
        || d.log().contains("shutting down:"),
    );
    c.send(b"GET /videos/m HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut c.reader, false);
    let r = r.unwrap_or_else(|e| panic!("no answer: {e}; log:\n{}", d.log()));
    assert_eq!((r.status, &r.body), (200, &data));
    assert_eq!(r.header("Connection"), Some("close"));
    let status = d.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}

/// A data directory on tmpfs (where fallocate really writes every page, so creating a big file takes
/// long enough to watch), removed when dropped.
struct TmpfsDir(PathBuf);

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_reload_creates_a_big_upload_slot_off_the_loop_while_requests_are_answered() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm to create a big slot on");
        return;
    }
    let dir = TestDir::new("reload-big");
    let data = TmpfsDir(shm.join(format!("vcache-reload-big-{}", std::process::id())));
    let port = free_port();
    let server = |videos: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nwrite_token = \"t\"\n\n{videos}",
            data.0.display()
        )
    };
    let config = dir.join("vcache.toml");
    std::fs::write(&config, server(&upload_video("small", 4096))).unwrap();
    let mut d = spawn_daemon(&dir.path, &config, port, &[], "reload-big");
    wait_healthy(&mut d);

    // 2 GiB on tmpfs: a fallocate of about a second, done by the commit worker.
    let size = 2u64 << 30;
    replace_config(
        &config,
        &server(&format!(
            "{}{}",
            upload_video("small", 4096),
            upload_video("big", size)
        )),
    );
    let before = log_count(&d, "reloaded config");
    d.signal(SIGHUP);
    let (mut opening_answers, mut healthz_while_opening) = (0, 0);
    wait_until(
        "the reload that adds a 2 GiB slot to be applied",
        Duration::from_secs(60),
        || {
            let r = d.get("/videos/big", &[]);
            if r.status == 503 && r.text().contains("being opened") {
                opening_answers += 1;
                if d.get("/healthz", &[]).status == 200 {
                    healthz_while_opening += 1;
                }
            }
            log_count(&d, "reloaded config") > before
        },
    );
    assert!(
        opening_answers > 0 && healthz_while_opening > 0,
        "the loop answered nothing while the slot was being created ({opening_answers} answers)"
    );
    let log = d.log();
    assert!(log.contains("videos added [\"big\"]"), "{log}");
    assert!(data.0.join("big.data").exists());
    // The new slot takes writes and serves them.
    let body = pseudo_random_bytes(4096, 51);
    let r = request(
        d.addr(),
        "PUT",
        "/videos/big",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Range", &format!("bytes 0-4095/{size}")),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = d.get("/videos/big", &[("Range", "bytes=0-4095")]);
    assert_eq!((r.status, &r.body), (206, &body));
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
}
