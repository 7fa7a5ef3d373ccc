//! External tools the tests run (nginx, ffmpeg, ffprobe, curl, systemd-socket-activate). Locally a test
//! whose tool is missing is skipped with a note; with `VCACHE_REQUIRE_TOOLS=1` (set by `.ci/run`) it
//! fails, so that no test passes in CI without having run.

use std::path::PathBuf;

/// The apt package that installs `tool` (Debian).
fn package_of(tool: &str) -> &'static str {
    match tool {
        "nginx" => "nginx-light",
        "ffmpeg" | "ffprobe" => "ffmpeg",
        "curl" => "curl",
        "systemd-socket-activate" => "systemd",
        "chromium" => "chromium",
        "node" => "nodejs",
        other => panic!("require_tool: no apt package known for {other:?}; add it to package_of"),
    }
}

/// Is VCACHE_REQUIRE_TOOLS set (to anything but "" or "0")?
pub fn tools_required() -> bool {
    std::env::var_os("VCACHE_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The path of the executable `tool`: on PATH, or in an sbin directory (nginx lives in /usr/sbin,
/// which is not on every PATH).
fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Where `tool` is, for a test that runs it. When it is missing the test must not pass as if it had
/// run: with VCACHE_REQUIRE_TOOLS this panics naming the tool and its apt package; otherwise it
/// prints a SKIP line (shown with `--nocapture`) and returns None, and the test returns at once:
///
/// ```ignore
/// let Some(ffmpeg) = require_tool("ffmpeg") else { return };
/// ```
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    if let Some(path) = find_tool(tool) {
        return Some(path);
    }
    missing_tool(tool, package_of(tool));
    None
}

/// Report that `what` (a tool, or a part of one such as an ffmpeg encoder, installed by the apt
/// package `package`) is missing: a panic with VCACHE_REQUIRE_TOOLS, a SKIP line otherwise.
pub fn missing_tool(what: &str, package: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if tools_required() {
        panic!(
            "{test} needs {what}, which is missing: apt-get install {package} \
             (VCACHE_REQUIRE_TOOLS is set, so a missing tool fails the test instead of skipping it)"
        );
    }
    eprintln!(
        "SKIP {test}: {what} is missing (apt-get install {package}; \
         VCACHE_REQUIRE_TOOLS=1 makes this a failure)"
    );
}
