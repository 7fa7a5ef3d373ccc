//! nginx as an origin for the tests: started in the foreground on a loopback port with its root in
//! the test directory; its access log says what it sent (`$body_bytes_sent` per request).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::{free_port, require_tool, wait_until};

/// One line of nginx's access log: `$connection|$status|$body_bytes_sent|$http_range|$http_if_range|$uri`.
#[derive(Debug, Clone)]
pub struct Sent {
    pub connection: u64,
    pub status: u16,
    pub bytes: u64,
    pub range: String,
    pub if_range: String,
    pub uri: String,
}

/// nginx running in the foreground (`daemon off; master_process off;`) on a loopback port, root in
/// `dir/www`; killed when dropped.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// Start nginx under `base/nginx`, or None (the test is skipped; see `require_tool`) when nginx
    /// is not installed.
    pub fn start(base: &Path) -> Option<Nginx> {
        let bin = require_tool("nginx")?;
        let dir = base.join("nginx");
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        // Temp paths of the modules this nginx was built with, inside the test dir (the defaults under
        // /var/lib/nginx may not be writable).
        let v = Command::new(&bin).arg("-V").output().expect("nginx -V");
        let built = String::from_utf8_lossy(&v.stderr).into_owned();
        let mut temps = String::new();
        for (flag, directive) in [
            ("client-body", "client_body_temp_path"),
            ("proxy", "proxy_temp_path"),
            ("fastcgi", "fastcgi_temp_path"),
            ("uwsgi", "uwsgi_temp_path"),
            ("scgi", "scgi_temp_path"),
        ] {
            if built.contains(&format!("--http-{flag}-temp-path")) {
                temps.push_str(&format!(
                    "    {directive} {};\n",
                    dir.join("tmp").join(flag).display()
                ));
            }
        }
        for _attempt in 0..5 {
            let port = free_port();
            let d = dir.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
                 http {{\n{temps}\
                 \x20   log_format counts '$connection|$status|$body_bytes_sent|$http_range|$http_if_range|$uri';\n\
                 \x20   access_log {d}/access.log counts;\n\
                 \x20   default_type application/octet-stream;\n\
                 \x20   keepalive_requests 100000;\n\
                 \x20   keepalive_timeout 60s;\n\
                 \x20   map $http_range $slow_rate {{ ~^bytes=0- 0; default 4k; }}\n\
                 \x20   server {{\n\
                 \x20       listen 127.0.0.1:{port};\n\
                 \x20       root {d}/www;\n\
                 \x20       location /slow/ {{ alias {d}/www/; limit_rate $slow_rate; }}\n\
                 \x20       location /noetag/ {{ alias {d}/www/; etag off; }}\n\
                 \x20   }}\n}}\n"
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            // Owned by an Nginx at once, so that a failed wait kills it too.
            let mut ng = Nginx {
                child: Some(child),
                port,
                dir: dir.clone(),
            };
            let child = ng.child.as_mut().expect("nginx running");
            let mut exited = false;
            let what = format!("nginx to listen on port {port} (or to exit)");
            wait_until(&what, Duration::from_secs(10), || {
                exited = child.try_wait().expect("try_wait").is_some();
                exited || TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if !exited {
                return Some(ng);
            }
            // The port was taken meanwhile, most likely: try another.
        }
        panic!(
            "nginx did not start; error log:\n{}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Put `bytes` at `/name` with modification time `mtime` (seconds): nginx's ETag is mtime-size.
    pub fn put(&self, name: &str, bytes: &[u8], mtime: u64) {
        let path = self.dir.join("www").join(name);
        let tmp = self.dir.join("www").join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
            .unwrap();
        drop(f);
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// The ETag nginx gives a file of `len` bytes modified at `mtime`.
    pub fn etag(mtime: u64, len: u64) -> String {
        format!("\"{mtime:x}-{len:x}\"")
    }

    pub fn log(&self) -> Vec<Sent> {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                assert_eq!(f.len(), 6, "access log line {l:?}");
                // nginx writes `"` as \x22 in its log.
                let dash = |s: &str| {
                    if s == "-" {
                        String::new()
                    } else {
                        s.replace("\\x22", "\"")
                    }
                };
                Sent {
                    connection: f[0].parse().unwrap(),
                    status: f[1].parse().unwrap(),
                    bytes: f[2].parse().unwrap(),
                    range: dash(f[3]),
                    if_range: dash(f[4]),
                    uri: f[5].to_string(),
                }
            })
            .collect()
    }

    /// The access log once it stopped growing (nginx writes a line when a response is done, which may
    /// be a moment after vcache read its last byte).
    pub fn settled_log(&self) -> Vec<Sent> {
        let path = self.dir.join("access.log");
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let mut last = size();
        let mut quiet_since = Instant::now();
        wait_until(
            "nginx's access log to settle (300 ms without growing)",
            Duration::from_secs(20),
            || {
                let now = size();
                if now != last {
                    last = now;
                    quiet_since = Instant::now();
                }
                quiet_since.elapsed() >= Duration::from_millis(300)
            },
        );
        self.log()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn bytes_of(log: &[Sent]) -> u64 {
    log.iter().map(|s| s.bytes).sum()
}
