//! The command-line subcommands as a shell uses them: output piped into a reader that stops early
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
