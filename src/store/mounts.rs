//! Origin mounts (`[[mount]]`): `GET /videos/<prefix>/<name>` pulls `<url><name>` through without the
//! object being listed in the config. A mounted object is an origin video whose id is
//! `<prefix>/<name>` and whose files are `<prefix>@<name>.data` / `.meta` (ids never hold `@`, so
//! the mapping is one-to-one); it is created in the store by the first request for it (no files
//! until the origin told its length — those are created on the commit thread, as for any origin
//! video), reopened from its files at start-up, and dropped from the store when it holds nothing.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Store, Video, resolve_origin};
use crate::config::{Config, MountConfig, VideoConfig, VideoKind, is_valid_video_id};

/// Most mounted objects in the store that hold no bytes (learning their length, or remembered 404s):
/// random names cannot grow memory without bound.
pub const MAX_UNCACHED_MOUNTED: usize = 10_000;

/// The mounts of the config the daemon started with, their hosts resolved at start.
#[derive(Default)]
pub struct Mounts {
    list: Vec<MountConfig>,
    addrs: HashMap<String, Result<Vec<SocketAddr>, String>>,
}

impl Mounts {
    /// Resolve every mount's host (blocking: at start-up, before the loop runs).
    pub fn resolve(cfg: &Config) -> Mounts {
        let addrs = cfg
            .mounts
            .iter()
            .map(|m| (m.prefix.clone(), resolve_origin(&m.host, m.port, &m.url)))
            .collect();
        Mounts {
            list: cfg.mounts.clone(),
            addrs,
        }
    }

    pub fn get(&self, prefix: &str) -> Option<&MountConfig> {
        self.list.iter().find(|m| m.prefix == prefix)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The `[[video]]` a mounted object behaves as.
pub fn mounted_config(m: &MountConfig, name: &str) -> VideoConfig {
    let (url, path) = m.object(name);
    VideoConfig {
        id: m.video_id(name),
        kind: VideoKind::Origin {
            url,
            host: m.host.clone(),
            port: m.port,
            path,
            fill_block: m.fill_block,
            size: None,
            revalidate_after: m.revalidate_after,
        },
        content_type: m.content_type.clone(),
        write_token: None,
        seek: None,
        line: m.line,
    }
}

/// Whether `id` is a mounted object's (`<prefix>/<name>`).
pub fn is_mounted_id(id: &str) -> bool {
    id.contains('/')
}

/// The file stem of a video's files: its id, with a mounted object's `/` as `@`.
pub fn file_stem(id: &str) -> String {
    id.replace('/', "@")
}

impl Store {
    /// The mounted object `<prefix>/<name>` as a video in the store, created now (no files yet) if it
    /// is not there. Err: why not (an unknown prefix, a bad name: 404/400; too many: 503).
    pub fn mount(&mut self, prefix: &str, name: &str) -> Result<String, (u16, String)> {
        let Some(m) = self.mounts.get(prefix) else {
            return Err((404, format!("no mount {prefix}")));
        };
        if !is_valid_video_id(name) {
            return Err((400, format!("malformed object name under mount {prefix}")));
        }
        let id = m.video_id(name);
        if self.videos.contains_key(&id) {
            return Ok(id);
        }
        let uncached = self
            .videos
            .iter()
            .filter(|(id, v)| is_mounted_id(id) && v.origin().is_some_and(|o| o.len().is_none()))
            .count();
        if uncached >= MAX_UNCACHED_MOUNTED {
            return Err((
                503,
                format!("{MAX_UNCACHED_MOUNTED} mounted objects are being learned; retry shortly"),
            ));
        }
        let video = self
            .open_mounted(m.clone(), name)
            .map_err(|why| (502, why))?;
        self.insert_video(id.clone(), video);
        Ok(id)
    }

    fn open_mounted(&self, m: MountConfig, name: &str) -> Result<Video, String> {
        let vc = mounted_config(&m, name);
        let resolved = self.mounts.addrs.get(&m.prefix);
        let mut video = self.paths().open_video(&vc, resolved)?;
        if let Some(o) = video.origin_mut() {
            o.set_negative_ttl(std::time::Duration::from_secs(m.negative_ttl));
        }
        Ok(video)
    }

    /// At start-up: every mounted object with files in the data directory is opened (its cached
    /// bytes serve at once and count against the budget). Files of a prefix no longer mounted are
    /// left alone and reported.
    pub fn open_mounted_files(&mut self) -> Vec<super::VideoProblem> {
        let mut problems = Vec::new();
        if self.mounts.is_empty() {
            return problems;
        }
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return problems;
        };
        let mut found: Vec<(String, String)> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".meta")?;
                let (prefix, object) = stem.split_once('@')?;
                Some((prefix.to_string(), object.to_string()))
            })
            .collect();
        found.sort();
        for (prefix, object) in found {
            let id = format!("{prefix}/{object}");
            let Some(m) = self.mounts.get(&prefix).cloned() else {
                log::warn!(
                    "files of {id} are in the data directory but no [[mount]] has prefix {prefix}; left alone"
                );
                continue;
            };
            match self.open_mounted(m, &object) {
                Ok(video) => self.insert_video(id, video),
                Err(message) => problems.push(super::VideoProblem { id, message }),
            }
        }
        problems
    }

    /// Drop mounted objects that hold nothing and nobody uses (their length not learned, or a
    /// remembered 404 that expired): they are learned again on the next request.
    pub fn drop_unused_mounted(&mut self) {
        self.videos.retain(|id, v| {
            !(is_mounted_id(id)
                && v.byte_waiters.is_empty()
                && v.origin().is_some_and(|o| o.is_unused_and_unknown()))
        });
    }
}
