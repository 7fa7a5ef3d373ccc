//! The references in docs/ against the code, so they cannot drift: every config key the parser
//! accepts (as the real binary's "unknown field … expected one of …" errors list them) has a row in
//! docs/config.md and no row names a key it refuses; every route in src/routes.rs has a row in
//! docs/http.md whose methods are exactly those the running daemon does not answer with 405.

mod common;
use common::*;

use std::collections::BTreeSet;

const CONFIG_MD: &str = include_str!("../docs/config.md");
const HTTP_MD: &str = include_str!("../docs/http.md");
const ROUTES_RS: &str = include_str!("../src/routes.rs");

/// The docs/config.md section of each table, by its heading.
const TABLES: [(&str, &str); 8] = [
    ("server", "## `[server]`"),
    ("limits", "## `[limits]`"),
    ("cluster", "## `[cluster]`"),
    ("video", "## `[[video]]`"),
    ("seek", "## `[video.seek]`"),
    ("cache", "## `[cache]`"),
    ("mount", "## `[[mount]]`"),
    ("top", "## Top level"),
];

/// A config with an unknown key in every table: `vcache check` reports each with the keys that
/// table accepts.
const EVERY_TABLE_WRONG: &str = "unknown_top = 1\n\
    [server]\nunknown_server = 1\n\
    [limits]\nunknown_limits = 1\n\
    [cluster]\nunknown_cluster = 1\n\
    [[video]]\nid = \"a\"\nunknown_video = 1\n\
    [video.seek]\nunknown_seek = 1\n\
    [cache]\nunknown_cache = 1\n\
    [[mount]]\nunknown_mount = 1\n";

/// The keys each table accepts, from the binary's own error messages.
fn accepted_keys() -> Vec<(&'static str, BTreeSet<String>)> {
    let dir = TestDir::new("docs-keys");
    let path = dir.join("vcache.toml");
    std::fs::write(&path, EVERY_TABLE_WRONG).unwrap();
    let out = std::process::Command::new(vcache_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run vcache check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    TABLES
        .iter()
        .map(|(table, _)| {
            let marker = format!("unknown field `unknown_{table}`, expected one of ");
            let line = stderr
                .lines()
                .find(|l| l.contains(&marker))
                .unwrap_or_else(|| panic!("no unknown-field error for [{table}]: {stderr}"));
            let list = &line[line.find(&marker).unwrap() + marker.len()..];
            let keys = list
                .split(", ")
                .map(|k| k.trim().trim_matches('`').to_string())
                .collect();
            (*table, keys)
        })
        .collect()
}

/// The keys with a row (`` | `key` | ``) in a section of docs/config.md.
fn documented_keys(heading: &str) -> BTreeSet<String> {
    let start = CONFIG_MD
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/config.md has no section {heading}"));
    let section = &CONFIG_MD[start + heading.len() + 2..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter_map(|l| {
            l.strip_prefix("| `")?
                .split_once("` |")
                .map(|(k, _)| k.to_string())
        })
        .collect()
}

#[test]
fn config_md_documents_exactly_the_keys_the_parser_accepts() {
    let accepted = accepted_keys();
    for ((table, keys), (_, heading)) in accepted.iter().zip(TABLES) {
        assert!(keys.len() >= 3, "[{table}]: {keys:?}");
        let documented = documented_keys(heading);
        let missing: Vec<_> = keys.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(keys).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/config.md {heading}: keys the parser accepts but the page lacks: {missing:?}; \
             keys on the page the parser refuses: {stale:?}"
        );
    }
}

/// The paths routed in `route_head` and `route_video` of src/routes.rs: the literal paths of
/// `match path` arms, `/videos/{id}`, and `/videos/{id}/NAME` for each `Some("NAME")`.
fn routed_paths() -> BTreeSet<String> {
    let function = |name: &str| {
        let start = ROUTES_RS
            .find(&format!("\nfn {name}("))
            .unwrap_or_else(|| panic!("src/routes.rs has no fn {name}"));
        let body = &ROUTES_RS[start + 1..];
        &body[..body.find("\n}\n").unwrap_or(body.len())]
    };
    let mut paths = BTreeSet::new();
    for line in function("route_head").lines().filter(|l| l.contains("=>")) {
        let arm = line.split("=>").next().unwrap_or("");
        for literal in arm.split('"').skip(1).step_by(2) {
            if literal.starts_with('/') {
                paths.insert(literal.to_string());
            }
        }
    }
    paths.insert("/videos/{id}".to_string());
    for piece in function("route_video").split("Some(\"").skip(1) {
        if let Some((name, _)) = piece.split_once('"') {
            paths.insert(format!("/videos/{{id}}/{name}"));
        }
    }
    paths
}

const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"];

/// The methods of the docs/http.md endpoint rows whose path cell names `path`.
fn documented_methods(path: &str) -> BTreeSet<String> {
    let quoted = format!("`{path}`");
    let mut methods = BTreeSet::new();
    let mut rows = 0;
    for line in HTTP_MD.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(path_cell) = cells.get(1) else {
            continue;
        };
        if path_cell.split(", ").any(|p| p == quoted) {
            rows += 1;
            for m in cells[0].trim_start_matches("| ").split(", ") {
                methods.insert(m.trim_matches('`').to_string());
            }
        }
    }
    assert!(rows > 0, "docs/http.md has no endpoint row for {path}");
    methods
}

#[test]
fn http_md_documents_every_route_and_its_methods() {
    let paths = routed_paths();
    for expected in [
        "/",
        "/healthz",
        "/metrics",
        "/videos",
        "/videos/{id}/offset",
    ] {
        assert!(
            paths.contains(expected),
            "route extraction broke: {paths:?}"
        );
    }
    let dir = TestDir::new("docs-routes");
    let d = Daemon::start(
        &dir.path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n\
         [[video]]\nid = \"v\"\nkind = \"upload\"\nsize = 1000\n",
    );
    for path in &paths {
        let url_path = path.replace("{id}", "v");
        // Without a token nothing changes: writes stop at 401, reads of an empty slot at 409/416.
        let served: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| request(d.addr(), m, &url_path, &[], b"").status != 405)
            .map(|m| m.to_string())
            .collect();
        assert!(!served.is_empty(), "{path}: every method got 405");
        assert_eq!(
            documented_methods(path),
            served,
            "docs/http.md's methods for {path} (left) differ from what the daemon serves (right)"
        );
    }
}
