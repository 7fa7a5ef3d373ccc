//! `[cache]` (the disk budget of origin content) and `[[mount]]` (origin prefixes whose objects need
//! not be listed), validated like the rest of the config: every error names file, line and key.

use std::collections::HashSet;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{
    ConfigError, DEFAULT_FILL_BLOCK, Found, MAX_VIDEO_BYTES, Source, VideoConfig,
    is_valid_video_id, parse_origin_url, size_in,
};

type Sp<T> = Spanned<T>;

/// Default read-ahead of an open-ended origin read, in fill blocks past the one being sent.
pub const DEFAULT_READ_AHEAD_BLOCKS: u64 = 4;
/// Largest `read_ahead_blocks`.
pub const MAX_READ_AHEAD_BLOCKS: u64 = 1024;
/// Smallest `max_size`: below a few blocks nothing useful fits.
pub const MIN_CACHE_SIZE: u64 = 1 << 20;
/// Longest `revalidate_after`: a year.
pub const MAX_REVALIDATE_SECS: u64 = 366 * 24 * 3600;
/// How long an origin's 404 for a mounted name is remembered, by default.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 10;

/// `[cache]`: how much disk origin content may take. Upload slots and live rings are primary data:
/// fully allocated, outside the budget, never evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most bytes origin content may occupy on disk (allocated fill blocks); None: no bound.
    pub max_size: Option<u64>,
    /// Free bytes to leave on the data directory's file system (like nginx's `min_free`).
    pub min_free: u64,
    /// Blocks fetched ahead of the one an open-ended read is sending.
    pub read_ahead_blocks: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: None,
            min_free: 0,
            read_ahead_blocks: DEFAULT_READ_AHEAD_BLOCKS,
        }
    }
}

/// One `[[mount]]`: `GET /videos/<prefix>/<name>` pulls `<url><name>` through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub prefix: String,
    /// Ends with `/`.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// The request path of the prefix (ends with `/`): a name is appended.
    pub path: String,
    pub fill_block: u64,
    /// Seconds after which a cached object's validator is checked again (None: never).
    pub revalidate_after: Option<u64>,
    /// Seconds an origin 404 for a name is remembered.
    pub negative_ttl: u64,
    pub content_type: Option<String>,
    pub line: usize,
}

impl MountConfig {
    /// The id of the mounted object `name`: `<prefix>/<name>`.
    pub fn video_id(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// The origin URL and request path of the mounted object `name`.
    pub fn object(&self, name: &str) -> (String, String) {
        (
            format!("{}{name}", self.url),
            format!("{}{name}", self.path),
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    max_size: Option<Sp<toml::Value>>,
    min_free: Option<Sp<toml::Value>>,
    read_ahead_blocks: Option<Sp<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    prefix: Option<Sp<String>>,
    url: Option<Sp<String>>,
    fill_block: Option<Sp<toml::Value>>,
    revalidate_after: Option<Sp<toml::Value>>,
    negative_ttl: Option<Sp<toml::Value>>,
    content_type: Option<Sp<String>>,
}

pub(super) fn validate_cache(
    src: &Source<'_>,
    raw: Option<RawCache>,
    found: &mut Found,
) -> CacheConfig {
    let raw = raw.unwrap_or_default();
    let mut cache = CacheConfig::default();
    if let Some(v) = &raw.max_size {
        let key = "max_size";
        cache.max_size = found.ok(size_in(
            src,
            v,
            key,
            "[cache] ",
            MIN_CACHE_SIZE,
            MAX_VIDEO_BYTES,
        ));
    }
    if let Some(v) = &raw.min_free {
        cache.min_free = found.or(size_in(src, v, "min_free", "[cache] ", 0, u64::MAX), 0);
    }
    if let Some(v) = &raw.read_ahead_blocks {
        let n = super::int_in(
            src,
            v,
            "read_ahead_blocks",
            "[cache] ",
            0,
            MAX_READ_AHEAD_BLOCKS,
        );
        cache.read_ahead_blocks = found.or(n, DEFAULT_READ_AHEAD_BLOCKS);
    }
    cache
}

/// A duration: integer seconds, or a string of a number and a unit (`ms` is refused: these are
/// coarse), e.g. "30s", "10m", "2h", "1d".
pub fn parse_duration_secs(value: &toml::Value) -> Result<u64, String> {
    let text = match value {
        toml::Value::Integer(n) => {
            return u64::try_from(*n).map_err(|_| format!("must not be negative, got {n}"));
        }
        toml::Value::String(s) => s.trim(),
        other => {
            return Err(format!(
                "expected a duration: integer seconds or a string such as \"10m\", got a {}",
                other.type_str()
            ));
        }
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in duration `{text}`; use s, m, h or d"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as \"30s\" or \"10m\""))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// A duration setting in seconds, at most `max`.
pub(super) fn duration_in(
    src: &Source<'_>,
    value: &Sp<toml::Value>,
    key: &str,
    context: &str,
    max: u64,
) -> Result<u64, ConfigError> {
    let secs = parse_duration_secs(value.get_ref())
        .map_err(|why| src.error(value.span(), key, format!("{context}{why}")))?;
    if secs > max {
        return Err(src.error(
            value.span(),
            key,
            format!("{context}must be at most {max} seconds, got {secs}"),
        ));
    }
    Ok(secs)
}

/// Every `[[mount]]`; a prefix must be a valid video id, unique, and no configured video's id.
pub(super) fn validate_mounts(
    src: &Source<'_>,
    raw: Vec<Sp<RawMount>>,
    videos: &[VideoConfig],
    found: &mut Found,
) -> Vec<MountConfig> {
    let ids: HashSet<&str> = videos.iter().map(|v| v.id.as_str()).collect();
    let mut prefixes: HashSet<String> = HashSet::new();
    let mut mounts = Vec::new();
    for table in raw {
        let span = table.span();
        let line = src.line_of(span.start);
        let Some(mount) = validate_mount(src, table.get_ref(), span, line, found) else {
            continue;
        };
        let clash = if ids.contains(mount.prefix.as_str()) {
            Some("a [[video]] has that id")
        } else if !prefixes.insert(mount.prefix.clone()) {
            Some("another [[mount]] has that prefix")
        } else {
            None
        };
        if let Some(why) = clash {
            found.errors.push(ConfigError {
                file: src.name.to_string(),
                line: Some(line),
                key: Some("prefix".to_string()),
                message: format!("mount prefix `{}`: {why}", mount.prefix),
            });
            continue;
        }
        mounts.push(mount);
    }
    mounts
}

fn validate_mount(
    src: &Source<'_>,
    raw: &RawMount,
    span: Range<usize>,
    line: usize,
    found: &mut Found,
) -> Option<MountConfig> {
    let missing = |key: &str, example: &str| {
        src.error(
            span.clone(),
            key,
            format!("[[mount]] needs `{key}` (e.g. {key} = {example})"),
        )
    };
    let prefix = found.ok(raw
        .prefix
        .as_ref()
        .ok_or_else(|| missing("prefix", "\"films\""))
        .and_then(|p| {
            if is_valid_video_id(p.get_ref()) {
                Ok(p.get_ref().clone())
            } else {
                Err(src.error(
                    p.span(),
                    "prefix",
                    format!(
                        "mount prefix `{}` must be 1 to {} characters of A-Z a-z 0-9 . _ -",
                        p.get_ref(),
                        super::MAX_VIDEO_ID_LEN
                    ),
                ))
            }
        }));
    let context = format!("mount `{}`: ", prefix.as_deref().unwrap_or("?"));
    let url = found.ok(raw
        .url
        .as_ref()
        .ok_or_else(|| missing("url", "\"http://origin:8000/films/\""))
        .and_then(|u| mount_url(src, u, &context)));
    let fill_block = match &raw.fill_block {
        None => Some(DEFAULT_FILL_BLOCK),
        Some(v) => found.ok(super::fill_block_in(src, v, &context)),
    };
    let revalidate_after = match &raw.revalidate_after {
        None => Some(None),
        Some(v) => found
            .ok(duration_in(
                src,
                v,
                "revalidate_after",
                &context,
                MAX_REVALIDATE_SECS,
            ))
            .map(Some),
    };
    let negative_ttl = match &raw.negative_ttl {
        None => Some(DEFAULT_NEGATIVE_TTL_SECS),
        Some(v) => found.ok(duration_in(src, v, "negative_ttl", &context, 3600)),
    };
    let content_type = raw.content_type.as_ref().map(|c| c.get_ref().clone());
    let ((url, host, port, path), prefix) = (url?, prefix?);
    Some(MountConfig {
        prefix,
        url,
        host,
        port,
        path,
        fill_block: fill_block?,
        revalidate_after: revalidate_after?,
        negative_ttl: negative_ttl?,
        content_type,
        line,
    })
}

/// A mount's URL: an origin URL whose path ends with `/` (names are appended) and has no query.
fn mount_url(
    src: &Source<'_>,
    value: &Sp<String>,
    context: &str,
) -> Result<(String, String, u16, String), ConfigError> {
    let url = value.get_ref();
    let bad = |why: String| src.error(value.span(), "url", format!("{context}{why}"));
    let parts = parse_origin_url(url).map_err(bad)?;
    if parts.path.contains('?') || !parts.path.ends_with('/') {
        return Err(bad(format!(
            "url `{url}` must end with `/` and have no query: an object's name is appended to it"
        )));
    }
    Ok((url.clone(), parts.host, parts.port, parts.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_and_units() {
        let d = |s: &str| parse_duration_secs(&toml::Value::String(s.into()));
        assert_eq!(d("30s"), Ok(30));
        assert_eq!(d("10m"), Ok(600));
        assert_eq!(d("2h"), Ok(7200));
        assert_eq!(d("1d"), Ok(86_400));
        assert_eq!(d("45"), Ok(45));
        assert_eq!(parse_duration_secs(&toml::Value::Integer(5)), Ok(5));
        assert!(d("5ms").is_err());
        assert!(d("-1s").is_err());
        assert!(d("m").is_err());
        assert!(parse_duration_secs(&toml::Value::Integer(-3)).is_err());
        assert!(d("99999999999999999999d").is_err());
    }

    fn parse(text: &str) -> Result<super::super::Config, super::super::ConfigErrors> {
        super::super::parse(text, "t.toml", std::path::Path::new("/tmp"))
    }

    #[test]
    fn cache_and_mounts_parse_and_errors_name_line_and_key() {
        let c = parse(
            "[cache]\nmax_size = \"64MiB\"\nmin_free = \"1GiB\"\nread_ahead_blocks = 2\n\
             [[mount]]\nprefix = \"films\"\nurl = \"http://127.0.0.1:8000/films/\"\n\
             revalidate_after = \"10m\"\n",
        )
        .unwrap();
        assert_eq!(c.cache.max_size, Some(64 << 20));
        assert_eq!(c.cache.min_free, 1 << 30);
        assert_eq!(c.cache.read_ahead_blocks, 2);
        let m = &c.mounts[0];
        assert_eq!((m.prefix.as_str(), m.path.as_str()), ("films", "/films/"));
        assert_eq!(m.revalidate_after, Some(600));
        assert_eq!(m.object("a.mp4").1, "/films/a.mp4");
        assert_eq!(m.video_id("a.mp4"), "films/a.mp4");

        let errs = parse(
            "[cache]\nmax_size = \"1KiB\"\n[[mount]]\nprefix = \"a/b\"\nurl = \"http://o/x\"\n\
             [[mount]]\nprefix = \"v\"\nurl = \"http://o/v/\"\nrevalidate_after = \"3 weeks\"\n\
             [[video]]\nid = \"v\"\nkind = \"upload\"\nsize = 10\n",
        )
        .unwrap_err()
        .0;
        let places: Vec<(Option<usize>, Option<&str>)> =
            errs.iter().map(|e| (e.line, e.key.as_deref())).collect();
        assert!(places.contains(&(Some(2), Some("max_size"))), "{errs:?}");
        assert!(places.contains(&(Some(4), Some("prefix"))), "{errs:?}");
        assert!(places.contains(&(Some(5), Some("url"))), "{errs:?}");
        assert!(
            places.contains(&(Some(9), Some("revalidate_after"))),
            "{errs:?}"
        );
    }

    #[test]
    fn a_mount_prefix_may_not_be_a_video_id() {
        let errs = parse(
            "[[video]]\nid = \"v\"\nkind = \"upload\"\nsize = 10\n\
             [[mount]]\nprefix = \"v\"\nurl = \"http://o/v/\"\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs[0].key.as_deref(), Some("prefix"), "{errs:?}");
        assert!(errs[0].message.contains("[[video]] has that id"));
    }
}
