//! The command line as a shell uses it: `--help`, `--version`, usage errors (status 2), the
//! `--config` spellings, the man page, `vcache check` on the shipped example and on a config with many
//! errors, the placeholder-token warning, and output piped into a reader that stops early
//! (`vcache check | head`).

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn check_piped_into_a_reader_that_closes_early_ends_cleanly() {
    let dir = TestDir::new("cli-pipe");
    // Far more output than a pipe holds (64 KiB): vcache is still writing when the reader leaves.
    let mut config = String::from("[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n");
    for i in 0..3000 {
        config.push_str(&format!(
            "\n[[video]]\nid = \"slot-{i}\"\nkind = \"upload\"\nsize = 1000\n"
        ));
    }
    let path = dir.join("vcache.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(vcache_bin())
        .arg("check")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vcache check");
    // `head -n 1`: one line, then the read end is closed.
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("config "), "first line {first:?}");
    drop(out);
    let done = child.wait_with_output().expect("wait for vcache check");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "vcache check complained about the closed pipe: {stderr}"
    );
    assert_eq!(
        done.status.code(),
        Some(0),
        "vcache check did not exit cleanly: {:?}; stderr: {stderr}",
        done.status
    );
}

/// Runs `vcache ARGS` and returns (exit code, stdout, stderr).
fn vcache(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(vcache_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vcache");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_and_version_follow_the_usual_conventions() {
    let (code, help, _) = vcache(&["--help"]);
    assert_eq!(code, Some(0), "{help}");
    for word in ["serve", "check", "index", "RUST_LOG", "--version"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
    assert!(!help.contains("man "), "the man command is hidden: {help}");
    let want = format!("vcache {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V", "version"] {
        assert_eq!(vcache(&[flag]).1, want, "{flag}");
    }
    for sub in ["serve", "check"] {
        let (code, text, err) = vcache(&[sub, "--help"]);
        assert_eq!(code, Some(0), "{sub} --help: {err}");
        assert!(text.contains("--config <FILE>"), "{sub} --help: {text}");
    }
    let (code, text, _) = vcache(&["index", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("--fps <N>") && text.contains("<FILE>"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_was_wrong() {
    let (code, out, err) = vcache(&[]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty() && err.contains("Usage: vcache"), "{err}");
    let cases: [(&[&str], &str); 6] = [
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&["serve", "extra"], "unexpected argument 'extra'"),
        (
            &["check", "--config"],
            "a value is required for '--config <FILE>'",
        ),
        (&["index"], "<FILE>"),
        (&["index", "a.ts", "--fps", "0"], "from 1 to 1000"),
        (
            &["index", "a.ts", "--fps", "25", "--fps", "30"],
            "cannot be used multiple times",
        ),
    ];
    for (args, message) in cases {
        let (code, out, err) = vcache(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn config_flag_spellings_all_work() {
    let dir = TestDir::new("cli-flags");
    let path = dir.join("vcache.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n[[video]]\nid = \"one\"\nkind = \"upload\"\nsize = 10\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let joined = format!("--config={path}");
    for args in [
        vec!["check", "--config", path],
        vec!["check", "-c", path],
        vec!["check", &joined],
    ] {
        let (code, out, err) = vcache(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(
            out.contains("  1 video:\n"),
            "{args:?}: one video, singular: {out}"
        );
    }
}

#[test]
fn the_man_page_comes_from_the_same_definition() {
    let (code, page, err) = vcache(&["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains("\n.TH vcache 1 "), "{page}");
    assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble: {page}");
    for part in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH \"VCACHE SERVE\"",
        ".SH \"VCACHE CHECK\"",
        ".SH \"VCACHE INDEX\"",
        "\\-\\-config",
        "\\-\\-fps",
        ".SH ENVIRONMENT",
        ".SH FILES",
    ] {
        assert!(page.contains(part), "man page lacks {part}: {page}");
    }
    assert!(
        !page.contains("vcache\\-serve(1)"),
        "no pointers to pages that do not exist"
    );
}

#[test]
fn the_example_config_checks_clean_on_a_fresh_clone() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vcache.toml");
    let (code, out, err) = vcache(&["check", "--config", example]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("  4 videos:\n") && !out.contains("PROBLEM"),
        "{out}"
    );
    assert!(out.contains("movie (file, seek table): file "), "{out}");
    // Its write token is the documented placeholder: a warning naming the file, line and key.
    assert!(
        err.contains(&format!(
            "{example}:16: key `write_token`: the token is still the placeholder"
        )),
        "{err}"
    );
}

#[test]
fn check_reports_every_config_error_with_file_line_and_key() {
    let dir = TestDir::new("cli-errors");
    let path = dir.join("vcache.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"localhost\"\nsync = \"never\"\n\n[limits]\nmax_headers = 0\n\n\
         [[video]]\nid = \"m\"\nkind = \"file\"\npath = \"missing.ts\"\n\n\
         [[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"ftp://x/\"\nfill_block = 3\n",
    )
    .unwrap();
    let (code, out, err) = vcache(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    let shown = path.display();
    for (line, key) in [
        (2, "listen"),
        (3, "sync"),
        (6, "max_headers"),
        (11, "path"),
        (16, "url"),
        (17, "fill_block"),
    ] {
        assert!(
            err.contains(&format!("{shown}:{line}: key `{key}`: ")),
            "{line} {key}: {err}"
        );
    }
    assert!(err.contains("config refused: 6 errors"), "{err}");
    // The shape errors (unknown keys, wrong types) are all reported too.
    std::fs::write(
        &path,
        "[server]\nlisen = 1\nsync = 2\n[limits]\nmax_conections = 5\n",
    )
    .unwrap();
    let (code, _, err) = vcache(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    for (line, key) in [(2, "lisen"), (3, "sync"), (5, "max_conections")] {
        assert!(
            err.contains(&format!("{shown}:{line}: key `{key}`: ")),
            "{line} {key}: {err}"
        );
    }
    assert!(err.contains("config refused: 3 errors"), "{err}");
}

#[test]
fn serve_warns_about_a_placeholder_token_naming_file_and_line() {
    let dir = TestDir::new("cli-placeholder");
    let port = free_port();
    let path = dir.join("vcache.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n\
             read_token = \"change-me\"\nwrite_token = \"secret\"\n"
        ),
    )
    .unwrap();
    let mut d = Daemon::start_with_config(&dir.path, &path, port);
    assert!(d.stop(std::time::Duration::from_secs(10)).success());
    let log = d.log();
    assert!(
        log.contains(&format!(
            "{}:4: key `read_token`: the token is still the placeholder",
            path.display()
        )),
        "{log}"
    );
}

#[test]
fn check_reports_an_origin_whose_host_does_not_resolve() {
    let dir = TestDir::new("cli-unresolvable");
    let path = dir.join("vcache.toml");
    std::fs::write(
        &path,
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n\n\
         [[video]]\nid = \"o\"\nkind = \"origin\"\nurl = \"http://no-such-host.invalid/film.mp4\"\n\n\
         [[video]]\nid = \"near\"\nkind = \"origin\"\nurl = \"http://127.0.0.1:9/film.mp4\"\n",
    )
    .unwrap();
    let (code, out, err) = vcache(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("PROBLEM: cannot resolve the origin host no-such-host.invalid"),
        "{out}"
    );
    assert!(err.contains("1 video has a problem"), "{err}");
}
