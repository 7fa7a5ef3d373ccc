//! The configuration file: TOML text in, a validated [`Config`] out, or a [`ConfigError`]
//! that names the file, line and key. Every check that can be made without touching
//! the network is made here (ids, kinds, sizes, tokens, URLs, seek tables, file paths),
//! so the rest of the daemon works only with values that are known to be sane.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::seek::{MAX_FPS, SeekMap, SeekTable, Timecode};

mod cache;
pub use cache::{CacheConfig, DEFAULT_NEGATIVE_TTL_SECS, MountConfig};
mod cluster;
pub use cluster::{ClusterConfig, Upstream};

/// The configuration `vcache serve` runs on without `--config`. Relative paths in it
/// resolve against the current directory.
pub const EMBEDDED_DEFAULT: &str = r#"# vcache's built-in configuration, used by `vcache serve` without --config.
[server]
listen = "127.0.0.1:8080"
data_dir = "vcache-data"
write_token = "change-me"

[[video]]
id = "live"
kind = "live"
capacity = "64MiB"
content_type = "video/mp2t"

[[video]]
id = "upload"
kind = "upload"
size = "64MiB"
"#;

/// `Config::source` of the embedded default.
pub const EMBEDDED_SOURCE: &str = "<embedded default>";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// A config file larger than this is refused before it is parsed.
pub const MAX_CONFIG_FILE_BYTES: u64 = 16 * MIB;
/// Longest video id, in bytes (ids are `[A-Za-z0-9._-]{1,MAX_VIDEO_ID_LEN}`).
pub const MAX_VIDEO_ID_LEN: usize = 128;
/// Largest upload size, live capacity, origin size or write body: a data file must be
/// mappable in a 47-bit user address space, with room to spare.
pub const MAX_VIDEO_BYTES: u64 = 64 * TIB;
/// Smallest live ring: one page.
pub const MIN_LIVE_CAPACITY: u64 = 4 * KIB;
/// Default origin fill block.
pub const DEFAULT_FILL_BLOCK: u64 = MIB;
/// Smallest origin fill block (a power of two).
pub const MIN_FILL_BLOCK: u64 = 4 * KIB;
/// Largest origin fill block (a power of two).
pub const MAX_FILL_BLOCK: u64 = 256 * MIB;
/// Largest `checkpoint_interval_ms`.
pub const MAX_CHECKPOINT_INTERVAL_MS: u64 = 3_600_000;
/// Largest value of any `*_timeout_ms` / `*_wait_ms` setting: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Largest `origin_connections`.
pub const MAX_ORIGIN_CONNECTIONS: usize = 65_536;
/// Longest token (write or read), in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest `content_type`, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 256;
/// Longest origin `url`, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Most points in one seek table.
pub const MAX_SEEK_POINTS: usize = 1_000_000;
/// Largest seek `byte_rate` (bytes per second of video): 1 TiB/s keeps every offset of
/// a 999-hour timecode inside u64.
pub const MAX_BYTE_RATE: u64 = TIB;
/// Ceiling on `max_header_bytes` and `max_request_line`: each connection may hold that much.
pub const MAX_HEADER_BYTES_CEILING: usize = 16 * MIB as usize;
/// Ceiling on `max_connections`.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;
/// Ceiling on the other count limits (headers, ranges, followers, presence ranges).
pub const MAX_COUNT_CEILING: usize = 100_000_000;

/// What a 2xx to a write promises (ARCHITECTURE.md, "Durability protocol", step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Survives a process crash at once, a machine crash after the next checkpoint.
    Interval,
    /// The 2xx comes after data and metadata are synced.
    Always,
}

/// Where the access log goes (`[server] access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (the default).
    Off,
    Stderr,
    /// Appended to this file (resolved against the config file's directory; reopened on SIGHUP).
    File(PathBuf),
}

/// How access log lines look (`[server] access_log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's combined layout where it has fields, then range, duration, cache status, video id.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Every bound on a client's resources, from `[limits]` (config/vcache.toml documents each key and
/// its range; the ceilings are the constants above).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub max_ranges: usize,
    pub max_followers: usize,
    pub max_presence_ranges: usize,
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub send_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub read_wait_ms: u64,
    pub shutdown_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_request_line: 8192,
            max_header_bytes: 32_768,
            max_headers: 100,
            max_body_bytes: 4 * GIB,
            max_ranges: 64,
            max_followers: 4096,
            max_presence_ranges: 65_000,
            header_timeout_ms: 60_000,
            body_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            idle_timeout_ms: 75_000,
            read_wait_ms: 10_000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// The `[server]` table plus `[limits]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Resolved against the config file's directory.
    pub data_dir: PathBuf,
    pub write_token: Option<String>,
    pub read_token: Option<String>,
    pub sync: SyncMode,
    pub checkpoint_interval_ms: u64,
    pub origin_connections: usize,
    pub origin_timeout_ms: u64,
    pub access_log: AccessLogTarget,
    pub access_log_format: AccessLogFormat,
    pub limits: Limits,
}

/// What a video is and the kind-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoKind {
    /// Resolved path; was an existing regular file at load time.
    File { path: PathBuf },
    /// A slot of `size` bytes (>= 1).
    Upload { size: u64 },
    /// A ring of `capacity` bytes (>= MIN_LIVE_CAPACITY); with `upstream`, a relay of another node's
    /// channel (src/relay.rs) that takes no local publisher.
    Live {
        capacity: u64,
        upstream: Option<Upstream>,
    },
    /// `host` is without brackets for IPv6 literals (wrap it in `[]` for a Host header);
    /// `path` starts with `/` and may carry a query; `fill_block` is a power of two.
    Origin {
        url: String,
        host: String,
        port: u16,
        path: String,
        fill_block: u64,
        size: Option<u64>,
        /// Seconds after which the cached object's validator is checked again (None: never).
        revalidate_after: Option<u64>,
    },
}

/// One `[[video]]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub id: String,
    pub kind: VideoKind,
    pub content_type: Option<String>,
    pub write_token: Option<String>,
    pub seek: Option<SeekTable>,
    /// Line of the `[[video]]` header, for messages.
    pub line: usize,
}

impl VideoConfig {
    /// "file" | "upload" | "live" | "origin".
    pub fn kind_name(&self) -> &'static str {
        let kind = match self.kind {
            VideoKind::File { .. } => Kind::File,
            VideoKind::Upload { .. } => Kind::Upload,
            VideoKind::Live { .. } => Kind::Live,
            VideoKind::Origin { .. } => Kind::Origin,
        };
        kind.name()
    }
}

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file's path, or [`EMBEDDED_SOURCE`].
    pub source: String,
    pub server: ServerConfig,
    pub videos: Vec<VideoConfig>,
    /// `[cache]`: the disk budget of origin content.
    pub cache: CacheConfig,
    /// `[[mount]]`s: origin prefixes whose objects are pulled through by name.
    pub mounts: Vec<MountConfig>,
    /// `[cluster]`: the tier this node is part of (none by default).
    pub cluster: ClusterConfig,
    /// Problems that do not stop the config from loading (a token still set to `change-me`), each
    /// with its file, line and key; `serve` and `check` log them.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// The video with this id, if the config defines it.
    #[cfg(test)]
    pub fn video(&self, id: &str) -> Option<&VideoConfig> {
        self.videos.iter().find(|video| video.id == id)
    }
}

/// A configuration problem, with everything known about where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config (at least one), in the order of the file's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// One error per line (a single error renders exactly as [`ConfigError`] does).
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Most errors one config reports: past this many, the rest are most likely one mistake's echoes.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// A token value that must not reach production; a config holding it gets a warning.
pub const PLACEHOLDER_TOKEN: &str = "change-me";

/// The errors found so far while validating values: a bad value is recorded and validation goes
/// on with its default in its place, so one run reports every bad key.
#[derive(Default)]
struct Found {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Found {
    /// The value, or `default` after recording why the value was refused.
    fn or<T>(&mut self, result: Result<T, ConfigError>, default: T) -> T {
        self.ok(result).unwrap_or(default)
    }

    fn ok<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(error);
                None
            }
        }
    }
}

/// Reads and parses a config file; relative paths in it resolve against its directory
/// (made absolute, without touching the disk).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    let file_error = |message: String| ConfigError {
        file: source.clone(),
        line: None,
        key: None,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| file_error(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_error(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(file_error(format!(
            "larger than {MAX_CONFIG_FILE_BYTES} bytes; is this the right file?"
        ))
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|e| file_error(format!("not UTF-8 text: {e}")))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let base_dir = std::path::absolute(parent).map_err(|e| {
        file_error(format!(
            "cannot make directory `{}` absolute: {e}",
            parent.display()
        ))
    })?;
    parse(&text, &source, &base_dir)
}

/// The embedded default, parsed. Never fails: the text is a constant and has no `file`
/// video, so nothing on disk is consulted (the unit tests prove it parses).
#[cfg(test)]
pub fn embedded_default(base_dir: &Path) -> Config {
    #[allow(clippy::expect_used)]
    try_embedded_default(base_dir).expect("EMBEDDED_DEFAULT is a valid configuration")
}

/// [`embedded_default`] without the (unreachable) panic.
pub fn try_embedded_default(base_dir: &Path) -> Result<Config, ConfigErrors> {
    parse(EMBEDDED_DEFAULT, EMBEDDED_SOURCE, base_dir)
}

/// Parses a size: a decimal integer, optionally followed (spaces allowed between) by a
/// unit. Binary units B, KiB, MiB, GiB, TiB are powers of 1024; SI units kB (or KB),
/// MB, GB, TB are powers of 1000, as their names say. Units are case-sensitive, no
/// fractions, no signs. Overflow of u64 is an error.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let trimmed = s.trim();
    let digits_end = trimmed
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, rest) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "`{s}` is not a size: expected a number of bytes such as 1048576 or \"1MiB\""
        ));
    }
    let unit = rest.trim_start();
    let multiplier = match unit {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => TIB,
        "kB" | "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "TB" => 1000 * 1000 * 1000 * 1000,
        _ if unit.starts_with('.') || unit.starts_with(',') => {
            return Err(format!(
                "`{s}`: fractions are not supported; use a smaller unit, e.g. \"1536MiB\""
            ));
        }
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use B, KiB, MiB, GiB, TiB (powers of 1024) \
                 or kB, MB, GB, TB (powers of 1000)"
            ));
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is too large for a size"))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{s}` is too large for a size"))
}

// ---------------------------------------------------------------------------------------
// Raw, as written in the file. Every value is Spanned so errors can name its line.

type Sp<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    limits: Option<RawLimits>,
    cache: Option<cache::RawCache>,
    cluster: Option<cluster::RawCluster>,
    video: Option<Vec<Sp<RawVideo>>>,
    mount: Option<Vec<Sp<cache::RawMount>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Sp<String>>,
    data_dir: Option<Sp<String>>,
    write_token: Option<Sp<String>>,
    read_token: Option<Sp<String>>,
    sync: Option<Sp<String>>,
    checkpoint_interval_ms: Option<Sp<i64>>,
    origin_connections: Option<Sp<i64>>,
    origin_timeout_ms: Option<Sp<i64>>,
    access_log: Option<Sp<String>>,
    access_log_format: Option<Sp<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Sp<i64>>,
    max_request_line: Option<Sp<toml::Value>>,
    max_header_bytes: Option<Sp<toml::Value>>,
    max_headers: Option<Sp<i64>>,
    max_body_bytes: Option<Sp<toml::Value>>,
    max_ranges: Option<Sp<i64>>,
    max_followers: Option<Sp<i64>>,
    max_presence_ranges: Option<Sp<i64>>,
    header_timeout_ms: Option<Sp<i64>>,
    body_timeout_ms: Option<Sp<i64>>,
    send_timeout_ms: Option<Sp<i64>>,
    idle_timeout_ms: Option<Sp<i64>>,
    read_wait_ms: Option<Sp<i64>>,
    shutdown_timeout_ms: Option<Sp<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVideo {
    id: Option<Sp<String>>,
    kind: Option<Sp<String>>,
    path: Option<Sp<String>>,
    size: Option<Sp<toml::Value>>,
    capacity: Option<Sp<toml::Value>>,
    url: Option<Sp<String>>,
    fill_block: Option<Sp<toml::Value>>,
    revalidate_after: Option<Sp<toml::Value>>,
    upstream: Option<Sp<String>>,
    content_type: Option<Sp<String>>,
    write_token: Option<Sp<String>>,
    seek: Option<Sp<RawSeek>>,
}

/// `points = [["HH:MM:SS:FF", offset], …]`, each point with its span.
type RawPoints = Vec<Sp<(String, i64)>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeek {
    fps: Option<Sp<i64>>,
    byte_rate: Option<Sp<toml::Value>>,
    points: Option<Sp<RawPoints>>,
}

// ---------------------------------------------------------------------------------------
// Validation.

/// The text being parsed and its name, to turn byte spans into `file:line` errors.
struct Source<'a> {
    text: &'a str,
    name: &'a str,
    /// Offset of every '\n' in `text`, in order: a line number is a binary search (counting from the
    /// start for every video made loading 10,000 videos take seconds).
    newlines: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str, name: &'a str) -> Source<'a> {
        let newlines = text.match_indices('\n').map(|(at, _)| at).collect();
        Source {
            text,
            name,
            newlines,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        1 + self.newlines.partition_point(|&at| at < end)
    }

    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.name.to_string(),
            line: Some(self.line_of(span.start)),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// A toml/serde error: line from its span; key from its message (unknown field,
    /// duplicate key) or else from the nearest `key =` line at or above the span.
    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim().to_string();
        let line = error.span().map(|span| self.line_of(span.start));
        let key = key_named_in(&message).or_else(|| {
            error
                .span()
                .and_then(|span| self.key_at_or_above(span.start))
        });
        ConfigError {
            file: self.name.to_string(),
            line,
            key,
            message,
        }
    }

    /// Walks back from the line holding `offset` to the nearest `key = …` line, stopping
    /// at a `[table]` header.
    fn key_at_or_above(&self, offset: usize) -> Option<String> {
        let end = offset.min(self.text.len());
        let before = self.text.get(..end)?;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = self
            .text
            .get(line_start..)?
            .find('\n')
            .map_or(self.text.len(), |i| line_start + i);
        let through_this_line = self.text.get(..line_end)?;
        for line in through_this_line.lines().rev() {
            let line = line.trim_start();
            if is_table_header(line) {
                return None;
            }
            // Anything else that is not `key = …` (an array continuation line such as
            // `["00:00:01:00", 5],`) is skipped.
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Some(key.to_string());
                }
            }
        }
        None
    }
}

fn is_table_header(line: &str) -> bool {
    let line = line.split('#').next().unwrap_or("").trim_end();
    line.starts_with('[')
        && line.ends_with(']')
        && line
            .trim_start_matches('[')
            .trim_end_matches(']')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The key a toml message names: "unknown field `x`…" or "duplicate key `x`…".
fn key_named_in(message: &str) -> Option<String> {
    for prefix in ["unknown field `", "duplicate key `"] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// Parse from text; `source` is the name used in errors, `base_dir` resolves relative paths.
/// Reports every problem (up to [`MAX_REPORTED_ERRORS`]) in two passes, as a compiler does: first
/// the file's shape (TOML syntax, unknown keys, value types), then — when the shape is right —
/// every value (ranges, files, URLs, seek tables, duplicate ids), at most one error per key.
pub fn parse(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let src = Source::new(text, source);
    let raw = parse_shape(&src)?;
    let mut found = Found::default();
    let server = validate_server(&src, raw.server, raw.limits, base_dir, &mut found);
    let videos = validate_videos(&src, raw.video.unwrap_or_default(), base_dir, &mut found);
    let cache = cache::validate_cache(&src, raw.cache, &mut found);
    let mounts = cache::validate_mounts(&src, raw.mount.unwrap_or_default(), &videos, &mut found);
    let cluster = cluster::validate_cluster(&src, raw.cluster, &mut found);
    if !found.errors.is_empty() {
        found.errors.sort_by_key(|error| error.line); // stable: a video's own errors keep their order
        found.errors.truncate(MAX_REPORTED_ERRORS);
        return Err(ConfigErrors(found.errors));
    }
    Ok(Config {
        source: source.to_string(),
        server,
        videos,
        cache,
        mounts,
        cluster,
        warnings: found.warnings,
    })
}

/// The raw tables, or every shape error. serde stops at the first unknown key or wrong type; to
/// find the next, the lines of the one found are blanked (spaces, so every offset and line number
/// stays) and the text is parsed again. Blanking stops rather than guess when a problem has no
/// span, spans a `[table]` header, or leaves text that is no longer TOML. A syntax error in the
/// file itself is the only one reported (the TOML parser cannot go on past it).
fn parse_shape(src: &Source<'_>) -> Result<RawConfig, ConfigErrors> {
    let first = match toml::from_str::<RawConfig>(src.text) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let mut errors = vec![src.toml_error(&first)];
    if toml::from_str::<toml::Table>(src.text).is_err() {
        return Err(ConfigErrors(errors));
    }
    let mut text = src.text.as_bytes().to_vec();
    let mut span = first.span();
    while errors.len() < MAX_REPORTED_ERRORS {
        let Some(blanked) = span.and_then(|span| blank_lines(&text, span)) else {
            break;
        };
        text = blanked;
        let Ok(again) = std::str::from_utf8(&text) else {
            break;
        };
        match toml::from_str::<RawConfig>(again) {
            Ok(_) => break,
            Err(e) => {
                let error = src.toml_error(&e);
                if errors.last() == Some(&error) {
                    break; // blanking did not remove it: nothing more to learn
                }
                errors.push(error);
                span = e.span();
            }
        }
    }
    Err(ConfigErrors(errors))
}

/// `text` with the lines of the key or value at `span` turned into spaces (newlines kept): the
/// lines `span` touches, and as many after them as a multi-line value needs for the rest to be
/// TOML again. None when that would blank a `[table]` header (its keys would move into another
/// table) or nothing makes the rest TOML.
fn blank_lines(text: &[u8], span: Range<usize>) -> Option<Vec<u8>> {
    let start = text
        .get(..span.start)?
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut end = span.end.max(span.start + 1).min(text.len());
    loop {
        // Through the end of the line holding `last`, the last byte so far.
        let last = end.saturating_sub(1);
        end = text
            .get(last..)?
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| last + i);
        let lines = std::str::from_utf8(text.get(start..end)?).ok()?;
        if lines.lines().any(|line| is_table_header(line.trim_start())) {
            return None;
        }
        let mut blanked = text.to_vec();
        for byte in blanked.get_mut(start..end)? {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        let rest_is_toml = std::str::from_utf8(&blanked)
            .is_ok_and(|rest| toml::from_str::<toml::Table>(rest).is_ok());
        if rest_is_toml {
            return Some(blanked);
        }
        if end >= text.len() {
            return None;
        }
        end = (end + 2).min(text.len()); // past the newline, into the next line
    }
}

/// Each `[[video]]` checked; the ones without errors, in file order. Duplicate ids are errors.
fn validate_videos(
    src: &Source<'_>,
    raw_videos: Vec<Sp<RawVideo>>,
    base_dir: &Path,
    found: &mut Found,
) -> Vec<VideoConfig> {
    let mut videos: Vec<VideoConfig> = Vec::new();
    let mut first_line_of_id: HashMap<String, usize> = HashMap::new();
    for raw_video in raw_videos {
        let Some(video) = validate_video(src, raw_video, base_dir, found) else {
            continue;
        };
        if let Some(first_line) = first_line_of_id.get(&video.id) {
            found.errors.push(ConfigError {
                file: src.name.to_string(),
                line: Some(video.line),
                key: Some("id".to_string()),
                message: format!(
                    "duplicate video id `{}`: the [[video]] at line {} and the one at line {} \
                     both use it; ids must be unique",
                    video.id, first_line, video.line
                ),
            });
            continue;
        }
        first_line_of_id.insert(video.id.clone(), video.line);
        videos.push(video);
    }
    videos
}

/// An integer setting in `min..=max`.
fn int_in(
    src: &Source<'_>,
    value: &Sp<i64>,
    key: &str,
    context: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let raw = *value.get_ref();
    match u64::try_from(raw) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(src.error(
            value.span(),
            key,
            format!("{context}must be between {min} and {max}, got {raw}"),
        )),
    }
}

fn usize_in(
    src: &Source<'_>,
    value: &Sp<i64>,
    key: &str,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n = int_in(src, value, key, "", min as u64, max as u64)?;
    usize::try_from(n).map_err(|_| src.error(value.span(), key, "too large for this platform"))
}

/// A size setting (integer bytes or a string with a unit) in `min..=max`.
fn size_in(
    src: &Source<'_>,
    value: &Sp<toml::Value>,
    key: &str,
    context: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let bytes = match value.get_ref() {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| {
            src.error(
                value.span(),
                key,
                format!("{context}a size must not be negative, got {n}"),
            )
        })?,
        toml::Value::String(s) => {
            parse_size(s).map_err(|why| src.error(value.span(), key, format!("{context}{why}")))?
        }
        other => {
            return Err(src.error(
                value.span(),
                key,
                format!(
                    "{context}expected a size: integer bytes or a string such as \"64MiB\", \
                     got a {}",
                    other.type_str()
                ),
            ));
        }
    };
    if !(min..=max).contains(&bytes) {
        return Err(src.error(
            value.span(),
            key,
            format!("{context}must be between {min} and {max} bytes, got {bytes}"),
        ));
    }
    Ok(bytes)
}

fn size_usize_in(
    src: &Source<'_>,
    value: &Sp<toml::Value>,
    key: &str,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n = size_in(src, value, key, "", min as u64, max as u64)?;
    usize::try_from(n).map_err(|_| src.error(value.span(), key, "too large for this platform"))
}

/// A Bearer token: 1..=MAX_TOKEN_LEN visible ASCII characters (no spaces).
fn token(
    src: &Source<'_>,
    value: &Sp<String>,
    key: &str,
    context: &str,
) -> Result<String, ConfigError> {
    let text = value.get_ref();
    if text.is_empty() {
        return Err(src.error(
            value.span(),
            key,
            format!("{context}an empty token is not allowed; remove the key or set a secret"),
        ));
    }
    if text.len() > MAX_TOKEN_LEN {
        return Err(src.error(
            value.span(),
            key,
            format!("{context}token is longer than {MAX_TOKEN_LEN} bytes"),
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(src.error(
            value.span(),
            key,
            format!(
                "{context}token may hold only visible ASCII characters (no spaces), \
                 as an `Authorization: Bearer` header carries it"
            ),
        ));
    }
    Ok(text.clone())
}

/// A token setting, checked; a token still set to [`PLACEHOLDER_TOKEN`] is kept, with a warning.
fn token_setting(
    src: &Source<'_>,
    value: Option<&Sp<String>>,
    key: &str,
    context: &str,
    found: &mut Found,
) -> Option<String> {
    let value = value?;
    let token = found.ok(token(src, value, key, context))?;
    if token == PLACEHOLDER_TOKEN {
        found.warnings.push(src.error(
            value.span(),
            key,
            format!(
                "{context}the token is still the placeholder \"{PLACEHOLDER_TOKEN}\": anyone who \
                 has read the documentation can use it; set a secret (e.g. `openssl rand -hex 32`)"
            ),
        ));
    }
    Some(token)
}

fn listen_address(src: &Source<'_>, value: &Sp<String>) -> Result<SocketAddr, ConfigError> {
    value.get_ref().parse::<SocketAddr>().map_err(|_| {
        src.error(
            value.span(),
            "listen",
            format!(
                "`{}` is not an IP address and port such as \"127.0.0.1:8080\" or \
                 \"[::]:8080\" (host names are not resolved)",
                value.get_ref()
            ),
        )
    })
}

fn sync_mode(src: &Source<'_>, value: &Sp<String>) -> Result<SyncMode, ConfigError> {
    match value.get_ref().as_str() {
        "interval" => Ok(SyncMode::Interval),
        "always" => Ok(SyncMode::Always),
        other => Err(src.error(
            value.span(),
            "sync",
            format!("`{other}` is not a sync mode; use \"interval\" or \"always\""),
        )),
    }
}

/// `[server]` and `[limits]`: each key checked on its own; a refused value is recorded in `found`
/// and its default used, so the rest are still checked.
fn validate_server(
    src: &Source<'_>,
    raw: Option<RawServer>,
    raw_limits: Option<RawLimits>,
    base_dir: &Path,
    found: &mut Found,
) -> ServerConfig {
    let raw = raw.unwrap_or_default();
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let listen = match &raw.listen {
        None => default_listen,
        Some(value) => found.or(listen_address(src, value), default_listen),
    };
    let data_dir = match &raw.data_dir {
        Some(value) if value.get_ref().is_empty() => {
            found
                .errors
                .push(src.error(value.span(), "data_dir", "must not be empty"));
            base_dir.join("vcache-data")
        }
        Some(value) => base_dir.join(value.get_ref()),
        None => base_dir.join("vcache-data"),
    };
    let write_token = token_setting(src, raw.write_token.as_ref(), "write_token", "", found);
    let read_token = token_setting(src, raw.read_token.as_ref(), "read_token", "", found);
    let sync = match &raw.sync {
        None => SyncMode::Interval,
        Some(value) => found.or(sync_mode(src, value), SyncMode::Interval),
    };
    let mut int = |value: &Option<Sp<i64>>, key: &str, max: u64, default: u64| match value {
        None => default,
        Some(value) => found.or(int_in(src, value, key, "", 1, max), default),
    };
    let checkpoint_interval_ms = int(
        &raw.checkpoint_interval_ms,
        "checkpoint_interval_ms",
        MAX_CHECKPOINT_INTERVAL_MS,
        1000,
    );
    let origin_timeout_ms = int(
        &raw.origin_timeout_ms,
        "origin_timeout_ms",
        MAX_TIMEOUT_MS,
        10_000,
    );
    let origin_connections = match &raw.origin_connections {
        None => 32,
        Some(value) => found.or(
            usize_in(src, value, "origin_connections", 1, MAX_ORIGIN_CONNECTIONS),
            32,
        ),
    };
    let (access_log, access_log_format) = access_log(src, &raw, base_dir, found);
    let limits = match raw_limits {
        None => Limits::default(),
        Some(raw_limits) => validate_limits(src, &raw_limits, found),
    };
    ServerConfig {
        listen,
        data_dir,
        write_token,
        read_token,
        sync,
        checkpoint_interval_ms,
        origin_connections,
        origin_timeout_ms,
        access_log,
        access_log_format,
        limits,
    }
}

/// `access_log` ("off", "stderr" or a file path) and `access_log_format` ("combined" or "json"); a
/// refused value is recorded in `found` and the default (off, combined) used.
fn access_log(
    src: &Source<'_>,
    raw: &RawServer,
    base_dir: &Path,
    found: &mut Found,
) -> (AccessLogTarget, AccessLogFormat) {
    let target = match &raw.access_log {
        None => AccessLogTarget::Off,
        Some(value) => match value.get_ref().as_str() {
            "off" => AccessLogTarget::Off,
            "stderr" => AccessLogTarget::Stderr,
            "" => {
                found.errors.push(src.error(
                    value.span(),
                    "access_log",
                    "must not be empty; use \"off\", \"stderr\" or a file path",
                ));
                AccessLogTarget::Off
            }
            path => AccessLogTarget::File(base_dir.join(path)),
        },
    };
    let format = match &raw.access_log_format {
        None => AccessLogFormat::Combined,
        Some(value) => match value.get_ref().as_str() {
            "combined" => AccessLogFormat::Combined,
            "json" => AccessLogFormat::Json,
            other => {
                found.errors.push(src.error(
                    value.span(),
                    "access_log_format",
                    format!("`{other}` is not an access log format; use \"combined\" or \"json\""),
                ));
                AccessLogFormat::Combined
            }
        },
    };
    (target, format)
}

fn validate_limits(src: &Source<'_>, raw: &RawLimits, found: &mut Found) -> Limits {
    let mut limits = Limits::default();
    let counts: [(&str, &Option<Sp<i64>>, &mut usize, usize); 5] = [
        (
            "max_connections",
            &raw.max_connections,
            &mut limits.max_connections,
            MAX_CONNECTIONS_CEILING,
        ),
        (
            "max_headers",
            &raw.max_headers,
            &mut limits.max_headers,
            MAX_COUNT_CEILING,
        ),
        (
            "max_ranges",
            &raw.max_ranges,
            &mut limits.max_ranges,
            MAX_COUNT_CEILING,
        ),
        (
            "max_followers",
            &raw.max_followers,
            &mut limits.max_followers,
            MAX_COUNT_CEILING,
        ),
        (
            "max_presence_ranges",
            &raw.max_presence_ranges,
            &mut limits.max_presence_ranges,
            // What one durable metadata record can hold: refused above it, never lowered.
            crate::store::MAX_PRESENCE_RANGES,
        ),
    ];
    for (key, value, slot, max) in counts {
        if let Some(n) = value
            .as_ref()
            .and_then(|v| found.ok(usize_in(src, v, key, 1, max)))
        {
            *slot = n;
        }
    }
    let timeouts: [(&str, &Option<Sp<i64>>, &mut u64); 6] = [
        (
            "header_timeout_ms",
            &raw.header_timeout_ms,
            &mut limits.header_timeout_ms,
        ),
        (
            "body_timeout_ms",
            &raw.body_timeout_ms,
            &mut limits.body_timeout_ms,
        ),
        (
            "send_timeout_ms",
            &raw.send_timeout_ms,
            &mut limits.send_timeout_ms,
        ),
        (
            "idle_timeout_ms",
            &raw.idle_timeout_ms,
            &mut limits.idle_timeout_ms,
        ),
        ("read_wait_ms", &raw.read_wait_ms, &mut limits.read_wait_ms),
        (
            "shutdown_timeout_ms",
            &raw.shutdown_timeout_ms,
            &mut limits.shutdown_timeout_ms,
        ),
    ];
    for (key, value, slot) in timeouts {
        if let Some(n) = value
            .as_ref()
            .and_then(|v| found.ok(int_in(src, v, key, "", 1, MAX_TIMEOUT_MS)))
        {
            *slot = n;
        }
    }
    validate_size_limits(src, raw, &mut limits, found);
    limits
}

/// The `[limits]` keys that are sizes, and that the request line fits in the head.
fn validate_size_limits(src: &Source<'_>, raw: &RawLimits, limits: &mut Limits, found: &mut Found) {
    let ceiling = MAX_HEADER_BYTES_CEILING;
    if let Some(value) = &raw.max_header_bytes {
        let n = size_usize_in(src, value, "max_header_bytes", 1, ceiling);
        limits.max_header_bytes = found.or(n, limits.max_header_bytes);
    }
    if let Some(value) = &raw.max_request_line {
        let n = size_usize_in(src, value, "max_request_line", 1, ceiling);
        limits.max_request_line = found.or(n, limits.max_request_line);
    }
    if let Some(value) = &raw.max_body_bytes {
        let n = size_in(src, value, "max_body_bytes", "", 1, MAX_VIDEO_BYTES);
        limits.max_body_bytes = found.or(n, limits.max_body_bytes);
    }
    if limits.max_request_line > limits.max_header_bytes {
        // Point at whichever of the two was written; the request line is part of the head.
        let (key, span) = match (&raw.max_request_line, &raw.max_header_bytes) {
            (Some(value), _) => ("max_request_line", value.span()),
            (None, Some(value)) => ("max_header_bytes", value.span()),
            (None, None) => ("max_request_line", 0..0),
        };
        found.errors.push(src.error(
            span,
            key,
            format!(
                "max_request_line ({}) must not exceed max_header_bytes ({}): the request \
                 line is part of the head",
                limits.max_request_line, limits.max_header_bytes
            ),
        ));
    }
}

/// `[A-Za-z0-9._-]{1,128}`, and not `.` or `..`: the one definition of a video id, for the config and
/// for request paths.
pub fn is_valid_video_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_VIDEO_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && id != "."
        && id != ".."
}

/// A video's `kind` as the config names it, before its settings are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Upload,
    Live,
    Origin,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::File, Kind::Upload, Kind::Live, Kind::Origin];

    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Upload => "upload",
            Kind::Live => "live",
            Kind::Origin => "origin",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The keys that belong to only some kinds, and which kinds they belong to.
const KIND_SPECIFIC_KEYS: [(&str, &[Kind]); 7] = [
    ("path", &[Kind::File]),
    ("size", &[Kind::Upload, Kind::Origin]),
    ("capacity", &[Kind::Live]),
    ("url", &[Kind::Origin]),
    ("fill_block", &[Kind::Origin]),
    ("revalidate_after", &[Kind::Origin]),
    ("upstream", &[Kind::Live]),
];

/// One `[[video]]` table being validated: where it is, which video it is, and its raw keys.
struct VideoTable<'s, 'r> {
    src: &'s Source<'s>,
    raw: &'r RawVideo,
    span: Range<usize>,
    kind: Kind,
    /// "video `id`: ", the start of every message about this table.
    context: String,
}

impl VideoTable<'_, '_> {
    /// A key this kind needs is missing.
    fn missing(&self, key: &str, example: &str) -> ConfigError {
        self.src.error(
            self.span.clone(),
            key,
            format!(
                "{}a `{}` video needs `{key}`, e.g. {key} = {example}",
                self.context,
                self.kind.name()
            ),
        )
    }

    /// Refuse every key that belongs to other kinds.
    fn check_kind_specific_keys(&self, found: &mut Found) {
        let raw = self.raw;
        let present_spans: [Option<Range<usize>>; 7] = [
            raw.path.as_ref().map(Spanned::span),
            raw.size.as_ref().map(Spanned::span),
            raw.capacity.as_ref().map(Spanned::span),
            raw.url.as_ref().map(Spanned::span),
            raw.fill_block.as_ref().map(Spanned::span),
            raw.revalidate_after.as_ref().map(Spanned::span),
            raw.upstream.as_ref().map(Spanned::span),
        ];
        for ((key, kinds), span) in KIND_SPECIFIC_KEYS.iter().zip(present_spans) {
            if let Some(span) = span
                && !kinds.contains(&self.kind)
            {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                found.errors.push(self.src.error(
                    span,
                    key,
                    format!(
                        "{}`{key}` does not belong to a `{}` video (it is for: {})",
                        self.context,
                        self.kind.name(),
                        names.join(", ")
                    ),
                ));
            }
        }
    }

    /// The kind's settings, and the video's length when it is known now (to check seek points
    /// against).
    fn kind_settings(
        &self,
        base_dir: &Path,
        found: &mut Found,
    ) -> Option<(VideoKind, Option<u64>)> {
        match self.kind {
            Kind::File => found.ok(self.file_settings(base_dir)),
            Kind::Upload => found.ok(self.upload_settings()),
            Kind::Live => found.ok(self.live_settings()),
            Kind::Origin => self.origin_settings(found),
        }
    }

    fn file_settings(&self, base_dir: &Path) -> Result<(VideoKind, Option<u64>), ConfigError> {
        let value = self
            .raw
            .path
            .as_ref()
            .ok_or_else(|| self.missing("path", "\"movies/movie.ts\""))?;
        let (path, len) = validate_file_path(self.src, value, base_dir, &self.context)?;
        Ok((VideoKind::File { path }, Some(len)))
    }

    fn upload_settings(&self) -> Result<(VideoKind, Option<u64>), ConfigError> {
        let value = self
            .raw
            .size
            .as_ref()
            .ok_or_else(|| self.missing("size", "\"1GiB\""))?;
        let size = size_in(self.src, value, "size", &self.context, 1, MAX_VIDEO_BYTES)?;
        Ok((VideoKind::Upload { size }, Some(size)))
    }

    fn live_settings(&self) -> Result<(VideoKind, Option<u64>), ConfigError> {
        let value = self
            .raw
            .capacity
            .as_ref()
            .ok_or_else(|| self.missing("capacity", "\"256MiB\""))?;
        let capacity = size_in(
            self.src,
            value,
            "capacity",
            &self.context,
            MIN_LIVE_CAPACITY,
            MAX_VIDEO_BYTES,
        )?;
        let upstream = match &self.raw.upstream {
            None => None,
            Some(value) => Some(cluster::parse_upstream(value.get_ref()).map_err(|why| {
                self.src
                    .error(value.span(), "upstream", format!("{}{why}", self.context))
            })?),
        };
        // Live offsets are logical and grow without bound: no length to check against.
        Ok((VideoKind::Live { capacity, upstream }, None))
    }

    /// The origin's settings; `url`, `fill_block` and `size` are each checked (refusals go to
    /// `found`).
    fn origin_settings(&self, found: &mut Found) -> Option<(VideoKind, Option<u64>)> {
        let (src, context) = (self.src, &self.context);
        let fill_block = match &self.raw.fill_block {
            None => Some(DEFAULT_FILL_BLOCK),
            Some(value) => found.ok(self.fill_block(value)),
        };
        let size = match &self.raw.size {
            None => Some(None),
            Some(value) => found
                .ok(size_in(src, value, "size", context, 1, MAX_VIDEO_BYTES))
                .map(Some),
        };
        let url = found.ok(self
            .raw
            .url
            .as_ref()
            .ok_or_else(|| self.missing("url", "\"http://media.example/film.mp4\"")));
        let origin = url.and_then(|value| {
            found.ok(parse_origin_url(value.get_ref())
                .map_err(|why| src.error(value.span(), "url", format!("{context}{why}"))))
        });
        let revalidate_after = match &self.raw.revalidate_after {
            None => Some(None),
            Some(value) => found
                .ok(cache::duration_in(
                    src,
                    value,
                    "revalidate_after",
                    context,
                    cache::MAX_REVALIDATE_SECS,
                ))
                .map(Some),
        };
        let (url, origin, fill_block, size) = (url?, origin?, fill_block?, size?);
        let kind = VideoKind::Origin {
            url: url.get_ref().clone(),
            host: origin.host,
            port: origin.port,
            path: origin.path,
            fill_block,
            size,
            revalidate_after: revalidate_after?,
        };
        Some((kind, size))
    }

    fn fill_block(&self, value: &Sp<toml::Value>) -> Result<u64, ConfigError> {
        fill_block_in(self.src, value, &self.context)
    }
}

/// A `fill_block` (of an origin video or a mount): a power of two in MIN_FILL_BLOCK..=MAX_FILL_BLOCK.
fn fill_block_in(
    src: &Source<'_>,
    value: &Sp<toml::Value>,
    context: &str,
) -> Result<u64, ConfigError> {
    let block = size_in(
        src,
        value,
        "fill_block",
        context,
        MIN_FILL_BLOCK,
        MAX_FILL_BLOCK,
    )?;
    if !block.is_power_of_two() {
        return Err(src.error(
            value.span(),
            "fill_block",
            format!("{context}must be a power of two, got {block}"),
        ));
    }
    Ok(block)
}

/// The `id` of a `[[video]]` table, checked.
fn validate_video_id(
    src: &Source<'_>,
    raw: &RawVideo,
    table_span: &Range<usize>,
) -> Result<String, ConfigError> {
    let Some(id_value) = &raw.id else {
        return Err(src.error(
            table_span.clone(),
            "id",
            "this [[video]] has no `id`; add one such as id = \"movie\"",
        ));
    };
    let id = id_value.get_ref().clone();
    if !is_valid_video_id(&id) {
        return Err(src.error(
            id_value.span(),
            "id",
            format!(
                "`{id}` is not a valid video id: use 1 to {MAX_VIDEO_ID_LEN} of A-Z a-z 0-9 . _ -, \
                 and not `.` or `..`"
            ),
        ));
    }
    Ok(id)
}

/// One `[[video]]`: every key checked (refusals go to `found`); the video if none was refused.
fn validate_video(
    src: &Source<'_>,
    raw: Sp<RawVideo>,
    base_dir: &Path,
    found: &mut Found,
) -> Option<VideoConfig> {
    let table_span = raw.span();
    let line = src.line_of(table_span.start);
    let raw = raw.into_inner();
    let id = found.ok(validate_video_id(src, &raw, &table_span))?;
    let context = format!("video `{id}`: ");
    let kind = found.ok(video_kind(src, &raw, &table_span, &context))?;
    let errors_before = found.errors.len();
    let table = VideoTable {
        src,
        raw: &raw,
        span: table_span,
        kind,
        context,
    };
    table.check_kind_specific_keys(found);
    let settings = table.kind_settings(base_dir, found);
    let context = table.context;
    let content_type = raw
        .content_type
        .as_ref()
        .and_then(|value| found.ok(validate_content_type(src, value, &context)));
    let write_token = token_setting(
        src,
        raw.write_token.as_ref(),
        "write_token",
        &context,
        found,
    );
    let known_len = settings.as_ref().and_then(|(_, len)| *len);
    let seek = raw
        .seek
        .and_then(|seek| found.ok(validate_seek(src, seek, &context, known_len)));
    let (kind, _) = settings?;
    if found.errors.len() > errors_before {
        return None;
    }
    Some(VideoConfig {
        id,
        kind,
        content_type,
        write_token,
        seek,
        line,
    })
}

/// The `kind` of a `[[video]]` table, checked.
fn video_kind(
    src: &Source<'_>,
    raw: &RawVideo,
    table_span: &Range<usize>,
    context: &str,
) -> Result<Kind, ConfigError> {
    let Some(kind_value) = &raw.kind else {
        return Err(src.error(
            table_span.clone(),
            "kind",
            format!("{context}missing `kind`; use one of file, upload, live, origin"),
        ));
    };
    Kind::parse(kind_value.get_ref()).ok_or_else(|| {
        src.error(
            kind_value.span(),
            "kind",
            format!(
                "{context}unknown kind `{}`; use one of file, upload, live, origin",
                kind_value.get_ref()
            ),
        )
    })
}

/// Resolves a `file` video's path and checks it is a regular file; returns it and its length.
fn validate_file_path(
    src: &Source<'_>,
    value: &Sp<String>,
    base_dir: &Path,
    context: &str,
) -> Result<(PathBuf, u64), ConfigError> {
    if value.get_ref().is_empty() {
        return Err(src.error(value.span(), "path", format!("{context}must not be empty")));
    }
    let path = base_dir.join(value.get_ref());
    let shown = path.display();
    // metadata (not open) first: opening a FIFO for reading would block.
    let metadata = std::fs::metadata(&path).map_err(|e| {
        src.error(
            value.span(),
            "path",
            format!("{context}cannot use file `{shown}`: {e}"),
        )
    })?;
    if !metadata.is_file() {
        return Err(src.error(
            value.span(),
            "path",
            format!("{context}`{shown}` is not a regular file"),
        ));
    }
    std::fs::File::open(&path).map_err(|e| {
        src.error(
            value.span(),
            "path",
            format!("{context}cannot open file `{shown}`: {e}"),
        )
    })?;
    Ok((path, metadata.len()))
}

/// A media type such as `video/mp4` or `video/mp4; codecs="avc1"`: printable ASCII only,
/// since it goes into a response header.
fn validate_content_type(
    src: &Source<'_>,
    value: &Sp<String>,
    context: &str,
) -> Result<String, ConfigError> {
    let text = value.get_ref();
    let printable = text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    if text.is_empty()
        || text.len() > MAX_CONTENT_TYPE_LEN
        || !printable
        || !text.contains('/')
        || text.starts_with(' ')
        || text.ends_with(' ')
    {
        return Err(src.error(
            value.span(),
            "content_type",
            format!(
                "{context}`{text}` is not a media type such as \"video/mp4\" (printable ASCII, \
                 at most {MAX_CONTENT_TYPE_LEN} bytes)"
            ),
        ));
    }
    Ok(text.clone())
}

/// The parts of an origin URL that a fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; may include a query.
    pub path: String,
}

/// Default port of `http://`.
const HTTP_DEFAULT_PORT: u16 = 80;
/// Longest host name (RFC 1035).
const MAX_HOST_NAME_LEN: usize = 253;

/// Parses `http://host[:port]/path`: no https, no userinfo, no fragment; a missing path
/// is `/`. Host names are checked for shape only, never resolved.
pub fn parse_origin_url(url: &str) -> Result<OriginUrl, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} bytes"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "url `{url}` may hold only visible ASCII characters (percent-encode the rest)"
        ));
    }
    const SCHEME: &str = "http://";
    let rest = match url.get(..SCHEME.len()) {
        Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => {
            url.get(SCHEME.len()..).unwrap_or("")
        }
        _ if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://")) =>
        {
            return Err(format!(
                "url `{url}`: https origins are not supported; use http:// (or a local TLS proxy)"
            ));
        }
        _ => return Err(format!("url `{url}` must start with http://")),
    };
    if url.contains('#') {
        return Err(format!("url `{url}` must not have a #fragment"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(format!(
            "url `{url}` must not carry user:password@ (no credentials in the config URL)"
        ));
    }
    if authority.is_empty() {
        return Err(format!("url `{url}` has no host"));
    }
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((literal, after)) = bracketed.split_once(']') else {
            return Err(format!(
                "url `{url}`: `[` without `]` around an IPv6 address"
            ));
        };
        if literal.parse::<Ipv6Addr>().is_err() {
            return Err(format!("url `{url}`: `{literal}` is not an IPv6 address"));
        }
        let port_text = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("url `{url}`: unexpected `{after}` after `]`")),
            },
        };
        (literal.to_string(), port_text)
    } else {
        let (host, port_text) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= MAX_HOST_NAME_LEN
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.starts_with(['.', '-']);
        if !host_ok {
            return Err(format!(
                "url `{url}`: `{host}` is not a host name or IPv4 address"
            ));
        }
        (host.to_ascii_lowercase(), port_text)
    };
    let port = match port_text {
        None => HTTP_DEFAULT_PORT,
        Some(text) => {
            let port = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<u16>().ok()
            } else {
                None
            };
            match port {
                Some(port) if port != 0 => port,
                _ => return Err(format!("url `{url}`: `{text}` is not a port in 1..=65535")),
            }
        }
    };
    let path = if path_and_query.starts_with('/') {
        path_and_query.to_string()
    } else {
        format!("/{path_and_query}")
    };
    Ok(OriginUrl { host, port, path })
}

fn validate_seek(
    src: &Source<'_>,
    raw: Sp<RawSeek>,
    context: &str,
    known_len: Option<u64>,
) -> Result<SeekTable, ConfigError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let Some(fps_value) = &raw.fps else {
        return Err(src.error(
            table_span,
            "fps",
            format!("{context}[video.seek] needs `fps`, e.g. fps = 25"),
        ));
    };
    let fps_u64 = int_in(src, fps_value, "fps", context, 1, u64::from(MAX_FPS))?;
    let fps = u32::try_from(fps_u64).map_err(|_| {
        src.error(
            fps_value.span(),
            "fps",
            format!("{context}fps is too large"),
        )
    })?;
    let map = match (&raw.byte_rate, &raw.points) {
        (Some(_), Some(points)) => {
            return Err(src.error(
                points.span(),
                "points",
                format!("{context}[video.seek] takes either `byte_rate` or `points`, not both"),
            ));
        }
        (None, None) => {
            return Err(src.error(
                table_span,
                "byte_rate",
                format!("{context}[video.seek] needs `byte_rate` or `points`"),
            ));
        }
        (Some(rate), None) => {
            SeekMap::ByteRate(size_in(src, rate, "byte_rate", context, 1, MAX_BYTE_RATE)?)
        }
        (None, Some(points)) => {
            SeekMap::Points(validate_points(src, points, context, fps, known_len)?)
        }
    };
    Ok(SeekTable { fps, map })
}

fn validate_points(
    src: &Source<'_>,
    points: &Sp<RawPoints>,
    context: &str,
    fps: u32,
    known_len: Option<u64>,
) -> Result<Vec<(u64, u64)>, ConfigError> {
    let list = points.get_ref();
    if list.is_empty() {
        return Err(src.error(
            points.span(),
            "points",
            format!("{context}`points` is empty; give at least one [\"HH:MM:SS:FF\", offset]"),
        ));
    }
    if list.len() > MAX_SEEK_POINTS {
        return Err(src.error(
            points.span(),
            "points",
            format!("{context}more than {MAX_SEEK_POINTS} points"),
        ));
    }
    let mut table: Vec<(u64, u64)> = Vec::with_capacity(list.len());
    for (index, point) in list.iter().enumerate() {
        let (timecode, offset) = point.get_ref();
        let at = |message: String| {
            src.error(
                point.span(),
                "points",
                format!("{context}seek point {index} ([\"{timecode}\", {offset}]): {message}"),
            )
        };
        let frame = Timecode::parse(timecode, fps)
            .map_err(|e| at(e.to_string()))?
            .frame_index(fps);
        let offset = u64::try_from(*offset)
            .map_err(|_| at("the byte offset must not be negative".to_string()))?;
        if let Some(len) = known_len
            && offset >= len
        {
            return Err(at(format!(
                "byte offset {offset} is not inside the video ({len} bytes)"
            )));
        }
        if let Some(&(previous_frame, previous_offset)) = table.last()
            && (frame <= previous_frame || offset <= previous_offset)
        {
            return Err(at(format!(
                "points must increase in both timecode and offset; the previous point is at \
                 {} / byte {previous_offset}",
                Timecode::from_frame_index(previous_frame, fps)
            )));
        }
        table.push((frame, offset));
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_ids() {
        assert!(is_valid_video_id("movie.ts"));
        assert!(is_valid_video_id("a-b_c.9"));
        assert!(!is_valid_video_id(""));
        assert!(!is_valid_video_id("."));
        assert!(!is_valid_video_id(".."));
        assert!(!is_valid_video_id("a/b"));
        assert!(!is_valid_video_id("a b"));
        assert!(is_valid_video_id(&"x".repeat(128)));
        assert!(!is_valid_video_id(&"x".repeat(129)));
    }

    fn base() -> &'static Path {
        Path::new("/srv/vcache")
    }

    fn parse_ok(text: &str) -> Config {
        match parse(text, "vcache.toml", base()) {
            Ok(config) => config,
            Err(e) => panic!("expected Ok, got: {e}"),
        }
    }

    /// Parses, expects an error at `line` naming `key`, and checks the rendered message.
    #[test]
    fn access_log_is_off_by_default_and_takes_stderr_a_path_and_json() {
        let c = parse_ok("[server]\n");
        assert_eq!(c.server.access_log, AccessLogTarget::Off);
        assert_eq!(c.server.access_log_format, AccessLogFormat::Combined);
        let c = parse_ok("[server]\naccess_log = \"stderr\"\naccess_log_format = \"json\"\n");
        assert_eq!(c.server.access_log, AccessLogTarget::Stderr);
        assert_eq!(c.server.access_log_format, AccessLogFormat::Json);
        let c = parse_ok("[server]\naccess_log = \"logs/access.log\"\n");
        assert_eq!(
            c.server.access_log,
            AccessLogTarget::File(base().join("logs/access.log"))
        );
        parse_err("[server]\naccess_log = \"\"\n", 2, "access_log");
        parse_err(
            "[server]\n\naccess_log_format = \"main\"\n",
            3,
            "access_log_format",
        );
    }

    fn parse_err(text: &str, line: usize, key: &str) -> ConfigError {
        parse_err_in(text, base(), line, key)
    }

    /// Parses, expects an error at `line` naming `key` among those reported, and checks how it
    /// renders.
    fn parse_err_in(text: &str, base_dir: &Path, line: usize, key: &str) -> ConfigError {
        let errors = match parse(text, "vcache.toml", base_dir) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e,
        };
        let Some(error) = errors
            .0
            .iter()
            .find(|e| e.line == Some(line) && e.key.as_deref() == Some(key))
            .cloned()
        else {
            panic!("no error at line {line} naming `{key}` in:\n{errors}");
        };
        let rendered = error.to_string();
        assert_eq!(error.line, Some(line), "wrong line in: {rendered}");
        assert_eq!(error.key.as_deref(), Some(key), "wrong key in: {rendered}");
        assert!(
            rendered.starts_with(&format!("vcache.toml:{line}: key `{key}`: ")),
            "bad rendering: {rendered}"
        );
        error
    }

    /// A fresh directory under the system temp dir, unique to this test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vcache-config-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_file(dir: &Path, relative: &str, len: u64) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
    }

    // ---- parse_size

    #[test]
    fn parse_size_accepts_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 3  MiB "), Ok(3 << 20));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215 << 40));
    }

    #[test]
    fn parse_size_rejects_malformed_and_overflow() {
        for bad in [
            "",
            " ",
            "GiB",
            "-1",
            "+1",
            "1.5GiB",
            "1,5GiB",
            "1gib",
            "1 mb",
            "1K",
            "1M",
            "1 G",
            "1 GiB extra",
            "1GiBGiB",
            "0x10",
            "18446744073709551616",
            "99999999999999999999999",
            "16777216TiB",
            "18446744073709552GB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("1.5GiB").unwrap_err().contains("fractions"));
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
    }

    // ---- defaults and the embedded default

    #[test]
    fn empty_file_gives_defaults_and_no_videos() {
        let config = parse_ok("");
        assert_eq!(config.source, "vcache.toml");
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.server.data_dir, base().join("vcache-data"));
        assert_eq!(config.server.write_token, None);
        assert_eq!(config.server.read_token, None);
        assert_eq!(config.server.sync, SyncMode::Interval);
        assert_eq!(config.server.checkpoint_interval_ms, 1000);
        assert_eq!(config.server.origin_connections, 32);
        assert_eq!(config.server.origin_timeout_ms, 10_000);
        assert_eq!(config.server.limits, Limits::default());
        assert!(config.videos.is_empty());
    }

    #[test]
    fn limits_defaults_match_the_documented_values() {
        let limits = Limits::default();
        assert_eq!(limits.max_connections, 10_000);
        assert_eq!(limits.max_request_line, 8192);
        assert_eq!(limits.max_header_bytes, 32_768);
        assert_eq!(limits.max_headers, 100);
        assert_eq!(limits.max_body_bytes, 4 << 30);
        assert_eq!(limits.max_ranges, 64);
        assert_eq!(limits.max_followers, 4096);
        assert_eq!(limits.max_presence_ranges, 65_000);
        assert_eq!(limits.header_timeout_ms, 60_000);
        assert_eq!(limits.body_timeout_ms, 60_000);
        assert_eq!(limits.send_timeout_ms, 60_000);
        assert_eq!(limits.idle_timeout_ms, 75_000);
        assert_eq!(limits.read_wait_ms, 10_000);
        assert_eq!(limits.shutdown_timeout_ms, 10_000);
    }

    #[test]
    fn embedded_default_is_what_the_spec_promises() {
        let dir = Path::new("/home/user/work");
        let config = embedded_default(dir);
        assert_eq!(config, try_embedded_default(dir).unwrap());
        assert_eq!(config.source, "<embedded default>");
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.server.data_dir, dir.join("vcache-data"));
        assert_eq!(config.server.write_token.as_deref(), Some("change-me"));
        assert_eq!(config.server.sync, SyncMode::Interval);
        assert_eq!(config.videos.len(), 2);
        let live = config.video("live").unwrap();
        assert_eq!(
            live.kind,
            VideoKind::Live {
                capacity: 64 << 20,
                upstream: None
            }
        );
        assert_eq!(live.kind_name(), "live");
        assert_eq!(live.content_type.as_deref(), Some("video/mp2t"));
        let upload = config.video("upload").unwrap();
        assert_eq!(upload.kind, VideoKind::Upload { size: 64 << 20 });
        assert_eq!(upload.kind_name(), "upload");
        assert!(config.video("nope").is_none());
    }

    #[test]
    fn example_config_parses_with_its_movie_present() {
        // The example ships its movie (config/movies/movie.ts), so it parses where it lies.
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
        let text = include_str!("../config/vcache.toml");
        let config = parse(text, "vcache.toml", &dir).unwrap();
        assert_eq!(config.server.data_dir, dir.join("vcache-data"));
        let movie = config.video("movie").unwrap();
        assert_eq!(
            movie.kind,
            VideoKind::File {
                path: dir.join("movies/movie.ts")
            }
        );
        let seek = movie.seek.as_ref().unwrap();
        assert_eq!(seek.offset_of_str("00:00:02:10", None), Ok(18_236));
        assert!(
            config
                .warnings
                .iter()
                .all(|w| w.message.contains("change-me"))
        );
        let kinds: Vec<&str> = config.videos.iter().map(VideoConfig::kind_name).collect();
        assert!(
            ["file", "upload", "live", "origin"]
                .iter()
                .all(|kind| kinds.contains(kind))
        );
        // Without the movie the same file is refused, naming the path.
        let empty = temp_dir("example-missing");
        let errors = parse(text, "vcache.toml", &empty).unwrap_err();
        let [error] = errors.0.as_slice() else {
            panic!("one error: {errors}");
        };
        assert_eq!(error.key.as_deref(), Some("path"));
        assert!(error.message.contains("movies/movie.ts"), "{error}");
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn full_config_parses_every_kind() {
        let dir = temp_dir("full");
        make_file(&dir, "m.ts", 1000);
        let text = r#"
[server]
listen = "[::1]:9000"
data_dir = "/var/lib/vcache"
write_token = "w-token"
read_token = "r-token"
sync = "always"
checkpoint_interval_ms = 250
origin_connections = 8
origin_timeout_ms = 5000

[limits]
max_connections = 5
max_request_line = "4KiB"
max_header_bytes = 16384
max_headers = 10
max_body_bytes = "1GiB"
max_ranges = 3
max_followers = 2
max_presence_ranges = 100
header_timeout_ms = 1
body_timeout_ms = 2
send_timeout_ms = 3
idle_timeout_ms = 4
read_wait_ms = 5
shutdown_timeout_ms = 6

[[video]]
id = "m"
kind = "file"
path = "m.ts"
content_type = 'video/mp4; codecs="avc1"'
[video.seek]
fps = 25
points = [
  ["00:00:00:00", 0],
  ["00:00:01:00", 500],
]

[[video]]
id = "up.load_1-x"
kind = "upload"
size = 4096
write_token = "per-video"

[[video]]
id = "ch"
kind = "live"
capacity = "4KiB"
[video.seek]
fps = 30
byte_rate = "1MB"

[[video]]
id = "o"
kind = "origin"
url = "HTTP://Media.Example:8000/films/film.mp4?x=1"
fill_block = "64KiB"
size = "10MiB"
"#;
        let config = parse(text, "vcache.toml", &dir).unwrap();
        let server = &config.server;
        assert_eq!(server.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(server.data_dir, PathBuf::from("/var/lib/vcache"));
        assert_eq!(server.write_token.as_deref(), Some("w-token"));
        assert_eq!(server.read_token.as_deref(), Some("r-token"));
        assert_eq!(server.sync, SyncMode::Always);
        assert_eq!(server.checkpoint_interval_ms, 250);
        assert_eq!(server.origin_connections, 8);
        assert_eq!(server.origin_timeout_ms, 5000);
        assert_eq!(
            server.limits,
            Limits {
                max_connections: 5,
                max_request_line: 4096,
                max_header_bytes: 16384,
                max_headers: 10,
                max_body_bytes: 1 << 30,
                max_ranges: 3,
                max_followers: 2,
                max_presence_ranges: 100,
                header_timeout_ms: 1,
                body_timeout_ms: 2,
                send_timeout_ms: 3,
                idle_timeout_ms: 4,
                read_wait_ms: 5,
                shutdown_timeout_ms: 6,
            }
        );
        let [file, upload, live, origin] = config.videos.as_slice() else {
            panic!("expected four videos");
        };
        assert_eq!(file.line, 28);
        assert_eq!(
            file.kind,
            VideoKind::File {
                path: dir.join("m.ts")
            }
        );
        assert_eq!(
            file.content_type.as_deref(),
            Some("video/mp4; codecs=\"avc1\"")
        );
        assert_eq!(
            file.seek,
            Some(SeekTable {
                fps: 25,
                map: SeekMap::Points(vec![(0, 0), (25, 500)])
            })
        );
        assert_eq!(upload.id, "up.load_1-x");
        assert_eq!(upload.kind, VideoKind::Upload { size: 4096 });
        assert_eq!(upload.write_token.as_deref(), Some("per-video"));
        assert_eq!(upload.seek, None);
        assert_eq!(
            live.kind,
            VideoKind::Live {
                capacity: 4096,
                upstream: None
            }
        );
        assert_eq!(
            live.seek,
            Some(SeekTable {
                fps: 30,
                map: SeekMap::ByteRate(1_000_000)
            })
        );
        assert_eq!(
            origin.kind,
            VideoKind::Origin {
                url: "HTTP://Media.Example:8000/films/film.mp4?x=1".to_string(),
                host: "media.example".to_string(),
                port: 8000,
                path: "/films/film.mp4?x=1".to_string(),
                fill_block: 64 << 10,
                size: Some(10 << 20),
                revalidate_after: None,
            }
        );
        assert_eq!(origin.kind_name(), "origin");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- syntax, unknown keys, wrong types (toml's errors, with line and key)

    /// Every error of a parse that must fail, as (line, key) pairs.
    fn error_places(text: &str) -> Vec<(Option<usize>, Option<String>)> {
        match parse(text, "vcache.toml", base()) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.0.into_iter().map(|e| (e.line, e.key)).collect(),
        }
    }

    fn at(line: usize, key: &str) -> (Option<usize>, Option<String>) {
        (Some(line), Some(key.to_string()))
    }

    #[test]
    fn every_shape_error_is_reported_with_its_line_and_key() {
        let text = "[server]\nlisten = 8080\nbogus = 1\n\n[limits]\nmax_conections = 5\n\n\
                    [[video]]\nid = \"a\"\nkind = \"upload\"\nsize = 1\nsizes = 2\n\
                    [video.seek]\nfps = \"25\"\nbyte_rate = 1\n";
        assert_eq!(
            error_places(text),
            [
                at(2, "listen"),
                at(3, "bogus"),
                at(6, "max_conections"),
                at(12, "sizes"),
                at(14, "fps"),
            ]
        );
    }

    #[test]
    fn every_value_error_is_reported_once_the_shape_is_right() {
        let text = "[server]\nlisten = \"nowhere\"\nsync = \"never\"\n\
                    checkpoint_interval_ms = 0\nwrite_token = \"\"\n\
                    [limits]\nmax_headers = 0\nread_wait_ms = -1\n\
                    [[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"https://x/\"\n\
                    fill_block = 5000\ncapacity = \"1MiB\"\n\
                    [[video]]\nid = \"a b\"\nkind = \"upload\"\n\
                    [[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 0\ncontent_type = \"x\"\n\
                    [[video]]\nid = \"u2\"\nkind = \"upload\"\nsize = 1\n\
                    [[video]]\nid = \"u2\"\nkind = \"upload\"\nsize = 1\n";
        assert_eq!(
            error_places(text),
            [
                at(2, "listen"),
                at(3, "sync"),
                at(4, "checkpoint_interval_ms"),
                at(5, "write_token"),
                at(7, "max_headers"),
                at(8, "read_wait_ms"),
                at(12, "url"),
                at(13, "fill_block"),
                at(14, "capacity"),
                at(16, "id"),
                at(21, "size"),
                at(22, "content_type"),
                at(27, "id"),
            ]
        );
    }

    #[test]
    fn errors_are_capped() {
        let mut text = String::from("[server]\n");
        for i in 0..(MAX_REPORTED_ERRORS + 10) {
            text.push_str(&format!("unknown_{i} = 1\n"));
        }
        assert_eq!(error_places(&text).len(), MAX_REPORTED_ERRORS);
    }

    #[test]
    fn blanking_stops_at_a_table_header_instead_of_guessing() {
        // `server` as a value of the wrong type spans its own line only; `[server]` defined as an
        // array of tables is an error whose span holds a header, so nothing is guessed after it.
        let errors = error_places("[[server]]\nlisten = 1\n[limits]\nbogus = 1\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = "[server]\nlisten = \"127.0.0.1:1\"\nbogus = [\n  1,\n  2,\n]\nother = 2\n";
        assert_eq!(error_places(text), [at(3, "bogus"), at(7, "other")]);
    }

    #[test]
    fn placeholder_tokens_load_with_a_warning_naming_line_and_key() {
        let text = "[server]\nwrite_token = \"change-me\"\nread_token = \"change-me\"\n\n\
                    [[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 1\n\
                    write_token = \"change-me\"\n";
        let config = parse_ok(text);
        let places: Vec<_> = config
            .warnings
            .iter()
            .map(|w| (w.line, w.key.clone()))
            .collect();
        assert_eq!(
            places,
            [
                at(2, "write_token"),
                at(3, "read_token"),
                at(9, "write_token")
            ]
        );
        let rendered = config.warnings[0].to_string();
        assert!(
            rendered.starts_with("vcache.toml:2: key `write_token`: ")
                && rendered.contains("change-me"),
            "{rendered}"
        );
        assert!(
            config.warnings[2].message.contains("video `u`"),
            "{}",
            config.warnings[2]
        );
        let secret = parse_ok("[server]\nwrite_token = \"s3cret\"\n");
        assert!(secret.warnings.is_empty());
        let embedded = try_embedded_default(base()).unwrap();
        assert_eq!(embedded.warnings.len(), 1, "{:?}", embedded.warnings);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let error =
            parse("[server]\nlisten = \"127.0.0.1:80\n", "vcache.toml", base()).unwrap_err();
        assert_eq!(error.0.len(), 1, "{error}");
        assert_eq!(error.0[0].line, Some(2));
        assert!(error.to_string().starts_with("vcache.toml:2:"), "{error}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_and_line() {
        parse_err(
            "[server]\nlisten = \"127.0.0.1:80\"\nlistne = 1\n",
            3,
            "listne",
        );
        parse_err("[limits]\n\nmax_conections = 5\n", 3, "max_conections");
        parse_err(
            "[[video]]\nid = \"a\"\nkind = \"live\"\ncapasity = 5\n",
            4,
            "capasity",
        );
        parse_err(
            "[[video]]\nid = \"a\"\nkind = \"live\"\ncapacity = 5000\n[video.seek]\nfps = 1\nrate = 2\n",
            7,
            "rate",
        );
        parse_err("title = \"x\"\n", 1, "title");
        let error = parse_err("\n[serverr]\nlisten = 1\n", 2, "serverr");
        assert!(error.message.contains("unknown field"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        parse_err(
            "[server]\nsync = \"always\"\nsync = \"always\"\n",
            3,
            "sync",
        );
    }

    #[test]
    fn wrong_types_name_key_and_line() {
        parse_err(
            "[server]\n\ncheckpoint_interval_ms = \"fast\"\n",
            3,
            "checkpoint_interval_ms",
        );
        parse_err("[server]\nlisten = 8080\n", 2, "listen");
        parse_err("[[video]]\nid = 5\n", 2, "id");
        parse_err(
            "[[video]]\nid = \"a\"\nkind = \"file\"\npath = \"x\"\n[video.seek]\nfps = 25\npoints = [\n  [\"00:00:00:00\"],\n]\n",
            8,
            "points",
        );
        parse_err("[limits]\nmax_headers = 1.5\n", 2, "max_headers");
    }

    // ---- [server]

    #[test]
    fn listen_must_be_a_socket_address() {
        for bad in [
            "localhost:8080",
            "127.0.0.1",
            ":8080",
            "127.0.0.1:99999",
            "",
        ] {
            let text = format!("# c\n[server]\nlisten = \"{bad}\"\n");
            let error = parse_err(&text, 3, "listen");
            assert!(error.message.contains(bad), "{error}");
        }
    }

    #[test]
    fn empty_tokens_and_data_dir_are_errors() {
        parse_err("[server]\nwrite_token = \"\"\n", 2, "write_token");
        parse_err("[server]\nread_token = \"\"\n", 2, "read_token");
        parse_err("[server]\nread_token = \"has space\"\n", 2, "read_token");
        parse_err("[server]\nwrite_token = \"tab\\there\"\n", 2, "write_token");
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        parse_err(
            &format!("[server]\nwrite_token = \"{long}\"\n"),
            2,
            "write_token",
        );
        let ok = "x".repeat(MAX_TOKEN_LEN);
        let config = parse_ok(&format!("[server]\nwrite_token = \"{ok}\"\n"));
        assert_eq!(config.server.write_token, Some(ok));
        parse_err("[server]\ndata_dir = \"\"\n", 2, "data_dir");
        parse_err(
            "[[video]]\nid = \"a\"\nkind = \"upload\"\nsize = 1\nwrite_token = \"\"\n",
            5,
            "write_token",
        );
    }

    #[test]
    fn sync_mode_must_be_known() {
        let error = parse_err("[server]\nsync = \"sometimes\"\n", 2, "sync");
        assert!(error.message.contains("sometimes"));
        parse_err("[server]\nsync = \"Always\"\n", 2, "sync");
    }

    #[test]
    fn server_numbers_are_range_checked() {
        parse_err(
            "[server]\ncheckpoint_interval_ms = 0\n",
            2,
            "checkpoint_interval_ms",
        );
        parse_err(
            "[server]\ncheckpoint_interval_ms = -5\n",
            2,
            "checkpoint_interval_ms",
        );
        parse_err(
            "[server]\ncheckpoint_interval_ms = 3600001\n",
            2,
            "checkpoint_interval_ms",
        );
        let config = parse_ok("[server]\ncheckpoint_interval_ms = 3600000\n");
        assert_eq!(config.server.checkpoint_interval_ms, 3_600_000);
        let config = parse_ok("[server]\ncheckpoint_interval_ms = 1\n");
        assert_eq!(config.server.checkpoint_interval_ms, 1);
        parse_err(
            "[server]\norigin_connections = 0\n",
            2,
            "origin_connections",
        );
        parse_err(
            "[server]\norigin_connections = 65537\n",
            2,
            "origin_connections",
        );
        parse_err("[server]\norigin_timeout_ms = 0\n", 2, "origin_timeout_ms");
    }

    // ---- [limits]

    #[test]
    fn max_presence_ranges_above_what_a_record_holds_is_refused() {
        let too_many = crate::store::MAX_PRESENCE_RANGES + 1;
        parse_err(
            &format!("[limits]\nmax_presence_ranges = {too_many}\n"),
            2,
            "max_presence_ranges",
        );
    }

    #[test]
    fn limits_are_range_checked() {
        for key in [
            "max_connections",
            "max_headers",
            "max_ranges",
            "max_followers",
            "max_presence_ranges",
            "header_timeout_ms",
            "body_timeout_ms",
            "send_timeout_ms",
            "idle_timeout_ms",
            "read_wait_ms",
            "shutdown_timeout_ms",
            "max_request_line",
            "max_header_bytes",
            "max_body_bytes",
        ] {
            parse_err(&format!("[limits]\n{key} = 0\n"), 2, key);
            parse_err(&format!("[limits]\n{key} = -1\n"), 2, key);
            parse_err(&format!("[limits]\n{key} = 9223372036854775807\n"), 2, key);
        }
        parse_err("[limits]\nmax_body_bytes = \"lots\"\n", 2, "max_body_bytes");
        parse_err("[limits]\nmax_body_bytes = true\n", 2, "max_body_bytes");
        let config =
            parse_ok("[limits]\nmax_header_bytes = \"16MiB\"\nmax_body_bytes = \"64TiB\"\n");
        assert_eq!(
            config.server.limits.max_header_bytes,
            MAX_HEADER_BYTES_CEILING
        );
        assert_eq!(config.server.limits.max_body_bytes, MAX_VIDEO_BYTES);
    }

    #[test]
    fn request_line_may_not_exceed_header_bytes() {
        parse_err(
            "[limits]\nmax_request_line = 40000\n",
            2,
            "max_request_line",
        );
        parse_err("[limits]\nmax_header_bytes = 100\n", 2, "max_header_bytes");
        let config = parse_ok("[limits]\nmax_request_line = 100\nmax_header_bytes = 100\n");
        assert_eq!(config.server.limits.max_request_line, 100);
    }

    // ---- [[video]]: id, kind, keys per kind

    #[test]
    fn video_ids_are_validated() {
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%2e", "a\\b"] {
            let text = format!(
                "[[video]]\nid = \"{}\"\nkind = \"upload\"\nsize = 1\n",
                bad.escape_default()
            );
            parse_err(&text, 2, "id");
        }
        let long = "a".repeat(MAX_VIDEO_ID_LEN + 1);
        parse_err(
            &format!("[[video]]\nid = \"{long}\"\nkind = \"upload\"\nsize = 1\n"),
            2,
            "id",
        );
        let ok = "a".repeat(MAX_VIDEO_ID_LEN);
        let config = parse_ok(&format!(
            "[[video]]\nid = \"{ok}\"\nkind = \"upload\"\nsize = 1\n"
        ));
        assert_eq!(config.videos[0].id, ok);
        let config = parse_ok("[[video]]\nid = \"...\"\nkind = \"upload\"\nsize = 1\n");
        assert_eq!(config.videos[0].id, "...");
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let text = "[[video]]\nid = \"a\"\nkind = \"upload\"\nsize = 1\n\n[[video]]\nid = \"a\"\nkind = \"live\"\ncapacity = 4096\n";
        let error = parse_err(text, 6, "id");
        assert!(error.message.contains("line 1"), "{error}");
        assert!(error.message.contains("line 6"), "{error}");
        assert!(error.message.contains("`a`"), "{error}");
    }

    #[test]
    fn missing_id_or_kind_points_at_the_table() {
        parse_err("\n[[video]]\nkind = \"upload\"\nsize = 1\n", 2, "id");
        parse_err("[[video]]\nid = \"a\"\nsize = 1\n", 1, "kind");
        let error = parse_err("[[video]]\nid = \"a\"\nkind = \"vod\"\n", 3, "kind");
        assert!(error.message.contains("vod"));
    }

    #[test]
    fn missing_required_key_for_the_kind() {
        let error = parse_err("[[video]]\nid = \"f\"\nkind = \"file\"\n", 1, "path");
        assert!(error.message.contains("video `f`"), "{error}");
        parse_err("[[video]]\nid = \"u\"\nkind = \"upload\"\n", 1, "size");
        parse_err("[[video]]\nid = \"l\"\nkind = \"live\"\n", 1, "capacity");
        parse_err("[[video]]\nid = \"o\"\nkind = \"origin\"\n", 1, "url");
    }

    #[test]
    fn keys_of_another_kind_are_errors() {
        let cases = [
            ("upload\"\nsize = 1\ncapacity = 4096", 5, "capacity"),
            ("upload\"\nsize = 1\npath = \"x\"", 5, "path"),
            ("upload\"\nsize = 1\nurl = \"http://a/b\"", 5, "url"),
            ("upload\"\nsize = 1\nfill_block = 4096", 5, "fill_block"),
            ("live\"\ncapacity = 4096\nsize = 1", 5, "size"),
            ("file\"\npath = \"x\"\nsize = 1", 5, "size"),
            (
                "origin\"\nurl = \"http://a/b\"\ncapacity = 4096",
                5,
                "capacity",
            ),
        ];
        for (rest, line, key) in cases {
            let text = format!("[[video]]\nid = \"v\"\nkind = \"{rest}\n");
            let error = parse_err(&text, line, key);
            assert!(error.message.contains("does not belong"), "{error}");
        }
    }

    #[test]
    fn sizes_and_capacities_are_checked() {
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 0\n",
            4,
            "size",
        );
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = \"0MiB\"\n",
            4,
            "size",
        );
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = -1\n",
            4,
            "size",
        );
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = \"1 GB GB\"\n",
            4,
            "size",
        );
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = \"65TiB\"\n",
            4,
            "size",
        );
        parse_err(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 1.0\n",
            4,
            "size",
        );
        let config = parse_ok("[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 1\n");
        assert_eq!(config.videos[0].kind, VideoKind::Upload { size: 1 });
        let error = parse_err(
            "[[video]]\nid = \"l\"\nkind = \"live\"\ncapacity = 4095\n",
            4,
            "capacity",
        );
        assert!(error.message.contains("4096"), "{error}");
        let config = parse_ok("[[video]]\nid = \"l\"\nkind = \"live\"\ncapacity = \"4KiB\"\n");
        assert_eq!(
            config.videos[0].kind,
            VideoKind::Live {
                capacity: 4096,
                upstream: None
            }
        );
        parse_err(
            "[[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"http://a/\"\nsize = 0\n",
            5,
            "size",
        );
    }

    #[test]
    fn content_type_must_be_a_header_safe_media_type() {
        for bad in [
            "",
            "video",
            "video/mp4\\r\\nX-Evil: 1",
            " video/mp4",
            "vidéo/mp4",
        ] {
            let text = format!(
                "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 1\ncontent_type = \"{bad}\"\n"
            );
            parse_err(&text, 5, "content_type");
        }
    }

    // ---- file videos

    #[test]
    fn file_path_must_exist_and_be_a_regular_file() {
        let dir = temp_dir("file-path");
        make_file(&dir, "ok.ts", 10);
        std::fs::create_dir_all(dir.join("adir")).unwrap();
        let text =
            |path: &str| format!("[[video]]\nid = \"f\"\nkind = \"file\"\npath = \"{path}\"\n");
        let error = parse_err_in(&text("missing.ts"), &dir, 4, "path");
        assert!(
            error
                .message
                .contains(&dir.join("missing.ts").display().to_string()),
            "{error}"
        );
        let error = parse_err_in(&text("adir"), &dir, 4, "path");
        assert!(error.message.contains("not a regular file"), "{error}");
        parse_err_in(&text(""), &dir, 4, "path");
        let config = parse(&text("ok.ts"), "vcache.toml", &dir).unwrap();
        assert_eq!(
            config.videos[0].kind,
            VideoKind::File {
                path: dir.join("ok.ts")
            }
        );
        let absolute = dir.join("ok.ts").display().to_string();
        let config = parse(&text(&absolute), "vcache.toml", Path::new("/elsewhere")).unwrap();
        assert_eq!(
            config.videos[0].kind,
            VideoKind::File {
                path: dir.join("ok.ts")
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- origin URLs

    #[test]
    fn origin_url_forms() {
        let ok = |url: &str, host: &str, port: u16, path: &str| {
            assert_eq!(
                parse_origin_url(url),
                Ok(OriginUrl {
                    host: host.to_string(),
                    port,
                    path: path.to_string()
                }),
                "{url}"
            );
        };
        ok("http://media.example/a.mp4", "media.example", 80, "/a.mp4");
        ok(
            "http://media.example:8000/films/film.mp4",
            "media.example",
            8000,
            "/films/film.mp4",
        );
        ok("http://10.0.0.1:1/x", "10.0.0.1", 1, "/x");
        ok("http://[::1]:65535/x", "::1", 65535, "/x");
        ok("http://[2001:db8::1]/x", "2001:db8::1", 80, "/x");
        ok("http://host", "host", 80, "/");
        ok("http://host?a=b", "host", 80, "/?a=b");
        ok("http://host/p%20q?a=b", "host", 80, "/p%20q?a=b");
        for bad in [
            "https://media.example/a.mp4",
            "ftp://media.example/a.mp4",
            "media.example/a.mp4",
            "http://user:pw@media.example/a.mp4",
            "http://user@media.example/a.mp4",
            "http:///a.mp4",
            "http://:80/a.mp4",
            "http://host:0/a",
            "http://host:65536/a",
            "http://host:/a",
            "http://host:+80/a",
            "http://host:80:80/a",
            "http://ho st/a",
            "http://host/a b",
            "http://host/a\r\nX: y",
            "http://host/a#frag",
            "http://hóst/a",
            "http://-host/a",
            "http://[::1/a",
            "http://[zz::1]/a",
            "http://[::1]x/a",
            "http://host_name/a",
            "",
        ] {
            assert!(parse_origin_url(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_origin_url(&long).is_err());
    }

    #[test]
    fn origin_url_and_fill_block_errors_name_key_and_line() {
        let text = |extra: &str| {
            format!(
                "[[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"http://a.example/f.mp4\"\n{extra}\n"
            )
        };
        parse_err(
            "[[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"https://a/f\"\n",
            4,
            "url",
        );
        for bad in ["4095", "\"2KiB\"", "\"1000KiB\"", "\"512MiB\"", "0", "6000"] {
            parse_err(&text(&format!("fill_block = {bad}")), 5, "fill_block");
        }
        let config = parse_ok(&text(""));
        match &config.videos[0].kind {
            VideoKind::Origin {
                fill_block,
                size,
                port,
                ..
            } => {
                assert_eq!(*fill_block, DEFAULT_FILL_BLOCK);
                assert_eq!(*size, None);
                assert_eq!(*port, 80);
            }
            other => panic!("{other:?}"),
        }
        for (good, bytes) in [("4096", 4096), ("\"256MiB\"", 256 << 20)] {
            let config = parse_ok(&text(&format!("fill_block = {good}")));
            assert!(
                matches!(config.videos[0].kind, VideoKind::Origin { fill_block, .. } if fill_block == bytes)
            );
        }
    }

    // ---- [video.seek]

    fn upload_with_seek(seek: &str) -> String {
        format!("[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 1000\n[video.seek]\n{seek}\n")
    }

    #[test]
    fn seek_table_needs_fps_in_range_and_exactly_one_map() {
        parse_err(&upload_with_seek("byte_rate = 1"), 5, "fps");
        parse_err(&upload_with_seek("fps = 0\nbyte_rate = 1"), 6, "fps");
        parse_err(&upload_with_seek("fps = 1001\nbyte_rate = 1"), 6, "fps");
        parse_err(&upload_with_seek("fps = 25"), 5, "byte_rate");
        parse_err(
            &upload_with_seek("fps = 25\nbyte_rate = 1\npoints = [[\"00:00:00:00\", 0]]"),
            8,
            "points",
        );
        parse_err(&upload_with_seek("fps = 25\nbyte_rate = 0"), 7, "byte_rate");
        parse_err(
            &upload_with_seek("fps = 25\nbyte_rate = \"2TiB\""),
            7,
            "byte_rate",
        );
        parse_err(&upload_with_seek("fps = 25\npoints = []"), 7, "points");
        let config = parse_ok(&upload_with_seek("fps = 1000\nbyte_rate = \"1TiB\""));
        assert_eq!(
            config.videos[0].seek,
            Some(SeekTable {
                fps: 1000,
                map: SeekMap::ByteRate(MAX_BYTE_RATE)
            })
        );
    }

    #[test]
    fn seek_points_must_increase_and_fit_the_video() {
        let points = |list: &str| upload_with_seek(&format!("fps = 25\npoints = [\n{list}\n]"));
        // Index 1 repeats the timecode.
        let error = parse_err(
            &points("[\"00:00:00:00\", 0],\n[\"00:00:00:00\", 10],"),
            9,
            "points",
        );
        assert!(error.message.contains("seek point 1"), "{error}");
        assert!(error.message.contains("video `s`"), "{error}");
        // Offsets must increase too.
        parse_err(
            &points("[\"00:00:00:00\", 10],\n[\"00:00:01:00\", 10],"),
            9,
            "points",
        );
        parse_err(
            &points("[\"00:00:01:00\", 10],\n[\"00:00:00:00\", 20],"),
            9,
            "points",
        );
        // Offset at the size is outside the video; one below is inside.
        let error = parse_err(
            &points("[\"00:00:00:00\", 0],\n[\"00:00:01:00\", 1000],"),
            9,
            "points",
        );
        assert!(error.message.contains("seek point 1"), "{error}");
        assert!(error.message.contains("1000 bytes"), "{error}");
        let config = parse_ok(&points("[\"00:00:00:05\", 0],\n[\"00:00:01:00\", 999],"));
        assert_eq!(
            config.videos[0].seek,
            Some(SeekTable {
                fps: 25,
                map: SeekMap::Points(vec![(5, 0), (25, 999)])
            })
        );
        // Malformed timecodes and negative offsets name the point.
        let error = parse_err(&points("[\"00:00:00:25\", 0],"), 8, "points");
        assert!(error.message.contains("seek point 0"), "{error}");
        assert!(error.message.contains("frames 25"), "{error}");
        parse_err(&points("[\"00:00:00:00\", -1],"), 8, "points");
        parse_err(&points("[\"0:0:0:0\", 0],"), 8, "points");
    }

    #[test]
    fn seek_points_of_a_file_video_are_checked_against_its_length() {
        let dir = temp_dir("seek-file");
        make_file(&dir, "short.ts", 100);
        let text = "[[video]]\nid = \"f\"\nkind = \"file\"\npath = \"short.ts\"\n[video.seek]\nfps = 25\npoints = [[\"00:00:00:00\", 0], [\"00:00:01:00\", 100]]\n";
        let error = parse_err_in(text, &dir, 7, "points");
        assert!(error.message.contains("seek point 1"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seek_points_of_origin_without_size_and_live_are_not_bounded() {
        let config = parse_ok(
            "[[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"http://a/f\"\n[video.seek]\nfps = 25\npoints = [[\"00:00:00:00\", 0], [\"00:00:01:00\", 9000000000]]\n",
        );
        assert!(config.videos[0].seek.is_some());
        parse_err(
            "[[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"http://a/f\"\nsize = 10\n[video.seek]\nfps = 25\npoints = [[\"00:00:00:00\", 10]]\n",
            8,
            "points",
        );
        let config = parse_ok(
            "[[video]]\nid = \"l\"\nkind = \"live\"\ncapacity = 4096\n[video.seek]\nfps = 25\npoints = [[\"00:00:00:00\", 0], [\"00:00:01:00\", 9000000000]]\n",
        );
        assert!(config.videos[0].seek.is_some());
    }

    // ---- load()

    #[test]
    fn load_resolves_paths_against_the_file_and_names_it_in_errors() {
        let dir = temp_dir("load");
        let path = dir.join("vcache.toml");
        std::fs::write(&path, "[server]\ndata_dir = \"data\"\n").unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.source, path.display().to_string());
        assert_eq!(config.server.data_dir, dir.join("data"));
        std::fs::write(&path, "[server]\nbogus = 1\n").unwrap();
        let error = load(&path).unwrap_err();
        assert_eq!(error.0[0].file, path.display().to_string());
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:2: key `bogus`:", path.display())),
            "{error}"
        );
        let missing = load(&dir.join("absent.toml")).unwrap_err();
        assert_eq!(missing.0[0].line, None);
        assert!(missing.to_string().contains("absent.toml"), "{missing}");
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert!(load(&path).unwrap_err().0[0].message.contains("UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn error_display_without_line_or_key() {
        let error = ConfigError {
            file: "f.toml".to_string(),
            line: None,
            key: None,
            message: "boom".to_string(),
        };
        assert_eq!(error.to_string(), "f.toml: boom");
        let error = ConfigError {
            line: Some(3),
            key: Some("k".to_string()),
            ..error
        };
        assert_eq!(error.to_string(), "f.toml:3: key `k`: boom");
    }
}
