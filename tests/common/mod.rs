//! Shared helpers for the integration tests: a temporary directory, the real `vcache` binary started on
//! an ephemeral loopback port with a config written for it, and a small HTTP/1.1 client over a real
//! socket that reads Content-Length, chunked and close-delimited bodies byte for byte.

#![allow(dead_code)]

mod nginx;
mod publish;
mod stamp;
mod tools;
mod videos;
mod wait;

// Not every test crate uses every helper.
#[allow(unused_imports)]
pub use nginx::{Nginx, Sent, bytes_of};
#[allow(unused_imports)]
pub use publish::{FMP4_LOW_LATENCY, publish_test_picture};
#[allow(unused_imports)]
pub use stamp::frame_stamp_filter;
#[allow(unused_imports)]
pub use tools::{missing_tool, require_tool, tools_required};
#[allow(unused_imports)]
pub use videos::{
    assert_bytes, cached, encode_test_clip, find, get_range, live_config, numbers_after, source,
    video_entry,
};
pub use wait::wait_until;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub fn vcache_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vcache"))
}

/// A directory removed when dropped.
pub struct TestDir {
    pub path: PathBuf,
}

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("vcache-it-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A tiny deterministic PRNG for tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform-ish in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The running daemon. Killed (SIGKILL) when dropped if still running.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Write `config_body` (everything but `listen`, which is added as the first key of `[server]`)
    /// into `dir/vcache.toml` and start `vcache serve` on it. `config_body` must begin with `[server]`.
    pub fn start(dir: &Path, config_body: &str) -> Daemon {
        // The port was free a moment ago; another test may take it before vcache binds it. Then
        // vcache exits with "Address already in use" and the start is tried on another port.
        for attempt in 1.. {
            let port = free_port();
            let config = config_body.replacen(
                "[server]",
                &format!("[server]\nlisten = \"127.0.0.1:{port}\""),
                1,
            );
            let config_path = dir.join("vcache.toml");
            std::fs::write(&config_path, config).expect("write config");
            match Self::try_start_with_config(dir, &config_path, port) {
                Ok(d) => return d,
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("vcache exited early; log:\n{log}"),
            }
        }
        unreachable!()
    }

    /// Start on an existing config file whose listen port is `port`.
    pub fn start_with_config(dir: &Path, config_path: &Path, port: u16) -> Daemon {
        Self::try_start_with_config(dir, config_path, port)
            .unwrap_or_else(|log| panic!("vcache exited early; log:\n{log}"))
    }

    /// Start, or the daemon's log if it exited before it served.
    fn try_start_with_config(dir: &Path, config_path: &Path, port: u16) -> Result<Daemon, String> {
        let log_path = dir.join(format!(
            "vcache-{}.log",
            DIR_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let log = std::fs::File::create(&log_path).expect("create log");
        let child = Command::new(vcache_bin())
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn vcache");
        let mut d = Daemon {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            config_path: config_path.to_path_buf(),
            log_path,
        };
        if d.wait_ready() {
            Ok(d)
        } else {
            d.child = None;
            Err(d.log())
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until the daemon answers /healthz and has opened its configured videos; false if it exited
    /// first.
    fn wait_ready(&mut self) -> bool {
        let addr = self.addr();
        let child = self.child.as_mut().expect("daemon running");
        let mut exited = false;
        wait_until(
            "vcache to answer GET /healthz",
            Duration::from_secs(20),
            || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited
                    || try_request(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
            },
        );
        // The loop serves while the videos are opened off it; tests start once they are.
        let log_path = self.log_path.clone();
        wait_until(
            "vcache to open its configured videos (the log's \"start-up:\" line)",
            Duration::from_secs(60),
            || {
                exited = exited || matches!(child.try_wait(), Ok(Some(_)));
                exited || std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("start-up: "))
            },
        );
        !exited
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            let rc = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(rc.success(), "kill -{sig} failed");
        }
    }

    /// SIGTERM and wait for the exit (at most `limit`).
    pub fn stop(&mut self, limit: Duration) -> ExitStatus {
        self.signal(15);
        self.wait_exit(limit)
    }

    /// Wait for the exit (at most `limit`; the daemon is killed if it is still running then).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon running");
        let mut status = None;
        wait_until(&format!("vcache to exit within {limit:?}"), limit, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        self.child = None;
        status.expect("exited")
    }

    /// Wait until the daemon has parsed `n` requests more than it had when `before` was read from
    /// `vcache_requests_total` — not counting the /metrics requests that ask, each of which counts
    /// itself. Only meaningful while no other client sends requests.
    pub fn wait_requests(&self, before: u64, n: u64, what: &str) {
        let mut asked = 0;
        wait_until(
            &format!("the daemon to receive {what}"),
            Duration::from_secs(10),
            || {
                asked += 1;
                self.metric("vcache_requests_total") >= before + asked + n
            },
        );
    }

    /// The value of `name` (a counter or gauge without labels) in GET /metrics.
    pub fn metric(&self, name: &str) -> u64 {
        let r = self.get("/metrics", &[]);
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        let text = r.text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// SIGKILL now.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr(), "GET", path, headers, b"")
    }
}

impl Drop for Daemon {
    /// Kill the daemon; when the test is failing, show the end of its log (a timed-out wait says
    /// only what it waited for).
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(100)..];
            eprintln!(
                "vcache log {} (last {} lines):\n{}",
                self.log_path.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The value of header `name` (any case) in `headers`.
pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a new connection (`Connection: close`). Panics on I/O errors.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            has_len = true;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() && !has_len {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut r = BufReader::new(s);
    read_response(&mut r, method == "HEAD")
}

/// Send raw bytes on a new connection and read everything until the server closes (or 5 s of silence).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Read a response's status line and header lines, up to the blank line: (status, headers).
pub fn read_response_head<R: BufRead>(r: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no status line",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Read one response from a buffered stream (keep-alive aware).
pub fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> std::io::Result<Response> {
    loop {
        let (status, headers) = read_response_head(r)?;
        if (100..200).contains(&status) {
            continue; // 100 Continue: the real response follows
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if !head_only && status != 204 && status != 304 {
            if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                loop {
                    let mut sz = String::new();
                    r.read_line(&mut sz)?;
                    let n = usize::from_str_radix(sz.trim().split(';').next().unwrap_or("0"), 16)
                        .map_err(|_| std::io::Error::other("bad chunk size"))?;
                    if n == 0 {
                        let mut crlf = String::new();
                        r.read_line(&mut crlf)?;
                        break;
                    }
                    let mut chunk = vec![0u8; n];
                    r.read_exact(&mut chunk)?;
                    body.extend_from_slice(&chunk);
                    let mut crlf = [0u8; 2];
                    r.read_exact(&mut crlf)?;
                }
            } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
                body = vec![0u8; n];
                r.read_exact(&mut body)?;
            } else {
                r.read_to_end(&mut body)?;
            }
        }
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
}

/// A keep-alive client connection for pipelining and reuse tests.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    pub fn read(&mut self, head_only: bool) -> Response {
        read_response(&mut self.reader, head_only).expect("read response")
    }
}

/// Make `fd` the child's fd 3 (without FD_CLOEXEC), as the service manager hands a socket over.
pub fn pass_as_fd3(cmd: &mut Command, fd: i32) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) run between fork and exec, on descriptors
    // that are open in the parent (`fd`) or that dup2 creates (3); no memory is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) != 3 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Start vcache on the test's own listening socket as fd 3 (LISTEN_PID set by the shell to its own pid,
/// which `exec` gives to vcache).
pub fn spawn_on_socket(dir: &Path, config: &Path, listener: &TcpListener, tag: &str) -> Daemon {
    let port = listener.local_addr().unwrap().port();
    let log_path = dir.join(format!("vcache-{tag}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --config \"$1\"")
        .arg(vcache_bin())
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    pass_as_fd3(&mut cmd, listener.as_raw_fd());
    let child = cmd.spawn().expect("spawn vcache on fd 3");
    Daemon {
        child: Some(child),
        port,
        dir: dir.to_path_buf(),
        config_path: config.to_path_buf(),
        log_path,
    }
}
