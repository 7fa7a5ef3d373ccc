//! The access log, as nginx keeps one: a line per request (time, peer, method, target, range, status,
//! bytes sent, duration, cache status, video id) in the combined-like text format or as JSON, to
//! standard error or a file (`[server] access_log`, `access_log_format`). Lines are buffered and written
//! once per loop iteration (`flush`), never synced; a failing destination is reported once and the
//! lines are dropped rather than stalling the loop.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{AccessLogFormat, AccessLogTarget};
use crate::http::date::format_log_time;
use crate::http::response::json_string;

/// Buffered bytes that make `record` write at once instead of waiting for the loop's `flush`.
const FLUSH_AT: usize = 64 * 1024;

/// Where the lines go.
enum Sink {
    Off,
    Stderr,
    File(File),
}

/// The access log of the event loop.
pub struct AccessLog {
    sink: Sink,
    format: AccessLogFormat,
    buf: Vec<u8>,
    /// A write failed and was reported; later failures are quiet until one succeeds.
    failing: bool,
}

/// One finished request.
#[derive(Debug)]
pub struct Entry<'a> {
    pub peer: SocketAddr,
    pub method: &'a str,
    pub target: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub range: Option<&'a str>,
    /// 0 when no response was started (the client went away first).
    pub status: u16,
    /// Bytes written to the socket for this response (head, framing, payload).
    pub sent: u64,
    pub duration: Duration,
    /// `X-Cache` of an origin video's response (HIT, MISS, PARTIAL).
    pub cache: Option<&'a str>,
    pub video: Option<&'a str>,
}

/// The request a connection is answering, kept while the access log is on.
#[derive(Debug)]
pub struct RequestRecord {
    started: std::time::Instant,
    method: String,
    target: String,
    minor_version: u8,
    range: Option<String>,
    video: Option<String>,
    pub status: u16,
    pub cache: Option<String>,
    pub sent: u64,
}

impl RequestRecord {
    pub fn new(head: &crate::http::request::RequestHead, started: std::time::Instant) -> Self {
        let video = head
            .path
            .strip_prefix("/videos/")
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .filter(|id| !id.is_empty());
        RequestRecord {
            started,
            method: head.method_name.clone(),
            target: head.target.clone(),
            minor_version: head.minor_version,
            range: head.range.clone(),
            video,
            status: 0,
            cache: None,
            sent: 0,
        }
    }

    /// A request whose head could not be parsed.
    pub fn unparsed(started: std::time::Instant) -> Self {
        RequestRecord {
            started,
            method: "-".into(),
            target: "-".into(),
            minor_version: 1,
            range: None,
            video: None,
            status: 0,
            cache: None,
            sent: 0,
        }
    }

    /// Its line, at `now`.
    pub fn write(&self, log: &mut AccessLog, peer: SocketAddr, now: std::time::Instant) {
        log.record(&Entry {
            peer,
            method: &self.method,
            target: &self.target,
            minor_version: self.minor_version,
            range: self.range.as_deref(),
            status: self.status,
            sent: self.sent,
            duration: now.saturating_duration_since(self.started),
            cache: self.cache.as_deref(),
            video: self.video.as_deref(),
        });
    }
}

impl AccessLog {
    /// A log that writes nothing.
    #[cfg(test)]
    pub fn off() -> AccessLog {
        AccessLog {
            sink: Sink::Off,
            format: AccessLogFormat::Combined,
            buf: Vec::new(),
            failing: false,
        }
    }

    /// Open the configured destination (a file is opened for appending, created if missing).
    pub fn open(target: &AccessLogTarget, format: AccessLogFormat) -> io::Result<AccessLog> {
        let sink = match target {
            AccessLogTarget::Off => Sink::Off,
            AccessLogTarget::Stderr => Sink::Stderr,
            AccessLogTarget::File(path) => Sink::File(open_append(path)?),
        };
        Ok(AccessLog {
            sink,
            format,
            buf: Vec::new(),
            failing: false,
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    /// Add one request's line.
    pub fn record(&mut self, e: &Entry<'_>) {
        if !self.enabled() {
            return;
        }
        let now = SystemTime::now();
        let line = match self.format {
            AccessLogFormat::Combined => combined_line(e, now),
            AccessLogFormat::Json => json_line(e, now),
        };
        self.buf.extend_from_slice(line.as_bytes());
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Write what is buffered.
    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.sink {
            Sink::Off => Ok(()),
            Sink::Stderr => io::stderr().lock().write_all(&self.buf),
            Sink::File(f) => f.write_all(&self.buf),
        };
        self.buf.clear();
        match result {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                log::error!(
                    "access log: cannot write ({e}); lines are dropped until it works again"
                );
            }
            Err(_) => {}
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn or_dash(v: Option<&str>) -> &str {
    v.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// `peer - - [time] "METHOD target HTTP/1.x" status bytes "range" duration_s cache video` — nginx's
/// combined layout where it has fields, vcache's own after them. Quoted fields escape `"` and `\`.
fn combined_line(e: &Entry<'_>, now: SystemTime) -> String {
    format!(
        "{} - - [{}] \"{} {} HTTP/1.{}\" {} {} \"{}\" {:.3} {} {}\n",
        e.peer.ip(),
        format_log_time(now),
        quote_safe(e.method),
        quote_safe(e.target),
        e.minor_version,
        e.status,
        e.sent,
        quote_safe(or_dash(e.range)),
        e.duration.as_secs_f64(),
        or_dash(e.cache),
        or_dash(e.video),
    )
}

/// One JSON object per line.
fn json_line(e: &Entry<'_>, now: SystemTime) -> String {
    let opt = |v: Option<&str>| v.map_or_else(|| "null".to_string(), json_string);
    format!(
        "{{\"time\":{},\"peer\":{},\"method\":{},\"target\":{},\"protocol\":\"HTTP/1.{}\",\"range\":{},\
         \"status\":{},\"bytes_sent\":{},\"duration_ms\":{:.3},\"cache\":{},\"video\":{}}}\n",
        json_string(&format_log_time(now)),
        json_string(&e.peer.to_string()),
        json_string(e.method),
        json_string(e.target),
        e.minor_version,
        opt(e.range),
        e.status,
        e.sent,
        e.duration.as_secs_f64() * 1000.0,
        opt(e.cache),
        opt(e.video),
    )
}

/// Escape what would end or confuse a quoted field (request targets are validated already; methods
/// and ranges are client text).
fn quote_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            peer: "127.0.0.1:4000".parse().expect("addr"),
            method: "GET",
            target: "/videos/m?x=\"1\"",
            minor_version: 1,
            range: Some("bytes=0-99"),
            status: 206,
            sent: 350,
            duration: Duration::from_micros(1500),
            cache: Some("HIT"),
            video: Some("m"),
        }
    }

    #[test]
    fn combined_lines_have_every_field_and_escape_quotes() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let line = combined_line(&entry(), t);
        assert_eq!(
            line,
            "127.0.0.1 - - [14/Nov/2023:22:13:20.123 +0000] \"GET /videos/m?x=\\\"1\\\" HTTP/1.1\" 206 350 \
             \"bytes=0-99\" 0.002 HIT m\n"
        );
    }

    #[test]
    fn json_lines_use_null_for_absent_fields() {
        let t = SystemTime::UNIX_EPOCH;
        let mut e = entry();
        e.cache = None;
        e.range = None;
        let line = json_line(&e, t);
        assert!(line.contains("\"range\":null,"), "{line}");
        assert!(line.contains("\"cache\":null,"), "{line}");
        assert!(
            line.contains("\"status\":206,\"bytes_sent\":350,\"duration_ms\":1.500,"),
            "{line}"
        );
        assert!(
            line.contains("\"time\":\"01/Jan/1970:00:00:00.000 +0000\""),
            "{line}"
        );
    }
}
