//! The `[cluster]` table: this node's own address (`self`), the tier's nodes (`peers`) and the drain
//! delay before a SIGTERM closes the listener (`drain_ms`). Validated like every table: each error
//! names the file, the line and the key.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Found, MAX_TIMEOUT_MS, Source, Sp, int_in};

/// Most nodes in `peers`.
pub const MAX_PEERS: usize = 64;

/// `[cluster]`, validated. Empty `peers` (the default) is a node on its own.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterConfig {
    /// This node as its peers name it (one of `peers`).
    pub self_addr: Option<SocketAddr>,
    /// Every node of the tier, this one included, in the order written.
    pub peers: Vec<SocketAddr>,
    /// After SIGTERM, `/readyz` answers 503 for this long while everything is still served; only then
    /// does the listener close (0: at once).
    pub drain_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(rename = "self")]
    self_url: Option<Sp<String>>,
    peers: Option<Sp<Vec<Sp<String>>>>,
    drain_ms: Option<Sp<i64>>,
}

/// `http://IP:port` (a trailing `/` allowed): peers are named by address, never resolved.
fn peer_address(
    src: &Source<'_>,
    value: &Sp<String>,
    key: &str,
) -> Result<SocketAddr, super::ConfigError> {
    let text = value.get_ref();
    let bad = || {
        src.error(
            value.span(),
            key,
            format!(
                "`{text}` is not a node address such as \"http://10.0.0.1:8080\" \
                 (http://, an IP address and a port; host names are not resolved)"
            ),
        )
    };
    let rest = text.strip_prefix("http://").ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>().map_err(|_| bad())
}

/// A relayed channel's `upstream`: the channel on another node it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written, for messages and the refusal of local publishers.
    pub url: String,
    pub addr: SocketAddr,
    /// `/videos/ID` on the upstream node.
    pub path: String,
}

/// `http://IP:port/videos/ID`: a channel on another vcache node (addresses are not resolved, like
/// `peers`).
pub(super) fn parse_upstream(text: &str) -> Result<Upstream, String> {
    let bad = || {
        format!(
            "`upstream = \"{text}\"` is not a channel on another node such as \
             \"http://10.0.0.1:8080/videos/ch\" (http://, an IP address, a port and /videos/ID; \
             host names are not resolved)"
        )
    };
    let rest = text.strip_prefix("http://").ok_or_else(bad)?;
    let slash = rest.find('/').ok_or_else(bad)?;
    let addr = rest[..slash].parse::<SocketAddr>().map_err(|_| bad())?;
    let path = &rest[slash..];
    let id = path.strip_prefix("/videos/").ok_or_else(bad)?;
    if !super::is_valid_video_id(id) {
        return Err(bad());
    }
    Ok(Upstream {
        url: text.to_string(),
        addr,
        path: path.to_string(),
    })
}

pub(super) fn validate_cluster(
    src: &Source<'_>,
    raw: Option<RawCluster>,
    found: &mut Found,
) -> ClusterConfig {
    let Some(raw) = raw else {
        return ClusterConfig::default();
    };
    let self_addr = raw
        .self_url
        .as_ref()
        .and_then(|v| found.ok(peer_address(src, v, "self")));
    let mut peers: Vec<SocketAddr> = Vec::new();
    if let Some(list) = &raw.peers {
        if list.get_ref().len() > MAX_PEERS {
            found.errors.push(src.error(
                list.span(),
                "peers",
                format!("more than {MAX_PEERS} nodes"),
            ));
        }
        for p in list.get_ref() {
            let Some(addr) = found.ok(peer_address(src, p, "peers")) else {
                continue;
            };
            if peers.contains(&addr) {
                found
                    .errors
                    .push(src.error(p.span(), "peers", format!("{addr} is listed twice")));
            }
            peers.push(addr);
        }
        match (raw.self_url.is_some(), self_addr) {
            (false, _) => found.errors.push(src.error(
                list.span(),
                "self",
                "`peers` needs `self`: this node's own address as the others name it",
            )),
            (true, Some(me)) if !peers.contains(&me) => peers.push(me),
            _ => {}
        }
    }
    let drain_ms = raw
        .drain_ms
        .as_ref()
        .and_then(|v| found.ok(int_in(src, v, "drain_ms", "", 0, MAX_TIMEOUT_MS)))
        .unwrap_or(0);
    ClusterConfig {
        self_addr,
        peers,
        drain_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigErrors, parse};

    fn errors(text: &str) -> Vec<(Option<usize>, Option<String>, String)> {
        match parse(text, "tier.toml", Path::new("/")) {
            Ok(_) => panic!("accepted: {text}"),
            Err(ConfigErrors(e)) => e.into_iter().map(|e| (e.line, e.key, e.message)).collect(),
        }
    }

    #[test]
    fn a_tier_is_parsed_and_self_joins_the_peers() {
        let c = parse(
            "[cluster]\nself = \"http://10.0.0.1:8080\"\npeers = [\"http://10.0.0.2:8080/\"]\ndrain_ms = 3000\n",
            "tier.toml",
            Path::new("/"),
        )
        .unwrap();
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(c.cluster.self_addr, Some(addr("10.0.0.1:8080")));
        assert_eq!(
            c.cluster.peers,
            [addr("10.0.0.2:8080"), addr("10.0.0.1:8080")]
        );
        assert_eq!(c.cluster.drain_ms, 3000);
        let alone = parse("", "t.toml", Path::new("/")).unwrap();
        assert!(alone.cluster.peers.is_empty() && alone.cluster.drain_ms == 0);
    }

    #[test]
    fn a_relay_names_a_channel_on_another_node() {
        let c = parse(
            "[[video]]\nid = \"ch\"\nkind = \"live\"\ncapacity = 4096\nupstream = \"http://10.0.0.1:8080/videos/ch\"\n",
            "relay.toml",
            Path::new("/"),
        )
        .unwrap();
        let crate::config::VideoKind::Live {
            upstream: Some(up), ..
        } = &c.videos[0].kind
        else {
            panic!("{:?}", c.videos[0].kind);
        };
        assert_eq!(up.addr, "10.0.0.1:8080".parse().unwrap());
        assert_eq!(up.path, "/videos/ch");
        for bad in [
            "10.0.0.1:8080/videos/ch",
            "http://origin.example:80/videos/ch",
            "http://10.0.0.1:8080/ch",
            "http://10.0.0.1:8080/videos/",
            "http://10.0.0.1:8080",
        ] {
            let e = errors(&format!(
                "[[video]]\nid = \"ch\"\nkind = \"live\"\ncapacity = 4096\nupstream = \"{bad}\"\n"
            ));
            assert_eq!(
                (e[0].0, e[0].1.as_deref()),
                (Some(5), Some("upstream")),
                "{bad}"
            );
            assert!(e[0].2.contains("/videos/ID"), "{e:?}");
        }
        let e = errors(
            "[[video]]\nid = \"u\"\nkind = \"upload\"\nsize = 1\nupstream = \"http://10.0.0.1:1/videos/u\"\n",
        );
        assert!(
            e[0].2.contains("does not belong to a `upload` video"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_cluster_keys_name_the_file_line_and_key() {
        let e = errors("[cluster]\nself = \"10.0.0.1:8080\"\n");
        assert_eq!(e[0].0, Some(2));
        assert_eq!(e[0].1.as_deref(), Some("self"));
        assert!(e[0].2.contains("http://10.0.0.1:8080"), "{e:?}");
        let e = errors("[cluster]\npeers = [\"http://a.example:80\"]\n");
        assert!(
            e.iter()
                .any(|(l, k, _)| *l == Some(2) && k.as_deref() == Some("peers"))
        );
        assert!(
            e.iter()
                .any(|(_, k, m)| k.as_deref() == Some("self") && m.contains("needs `self`"))
        );
        let e = errors(
            "[cluster]\nself = \"http://10.0.0.1:1\"\npeers = [\"http://10.0.0.2:1\",\n\"http://10.0.0.2:1\"]\n",
        );
        assert_eq!(e[0].0, Some(4));
        assert!(e[0].2.contains("listed twice"), "{e:?}");
        let e = errors("[cluster]\ndrain_ms = -1\n");
        assert_eq!((e[0].0, e[0].1.as_deref()), (Some(2), Some("drain_ms")));
        let e = errors("[cluster]\nfriends = 1\n");
        assert_eq!(e[0].0, Some(2));
        assert!(e[0].2.contains("unknown field `friends`"), "{e:?}");
    }
}
