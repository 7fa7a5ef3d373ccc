//! vcache: a persistent video cache daemon. `main` only parses the command line and wires the parts:
//! config → store → event loop (serve), config → report (check), and the offline MPEG-TS indexer.

mod config;
mod conn;
mod event_loop;
mod http;
mod index_cmd;
mod metrics;
mod origin;
mod routes;
mod seek;
mod service;
mod store;
mod tsindex;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
vcache — a persistent video cache daemon

usage:
  vcache serve [--config PATH]   serve (without --config: the embedded default, data in ./vcache-data)
  vcache check [--config PATH]   validate a config and print what it defines and what is cached
  vcache index FILE [--fps N]    print the keyframe seek table of an MPEG-TS file
  vcache --version | --help

environment: RUST_LOG (default info), VCACHE_SEND_PATH=sendfile|mmap (payload send path; default: mmap
             for vcache's own data files, sendfile for file videos)";

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "serve" => match config_arg(rest) {
            Ok(path) => exit(serve(path)),
            Err(e) => usage_error(&e),
        },
        "check" => match config_arg(rest) {
            Ok(path) => exit(check(path)),
            Err(e) => usage_error(&e),
        },
        "index" => match index_cmd::run(rest) {
            Ok(text) => exit(Stdout::default().print(&text)),
            Err(e) => {
                eprintln!("{e}"); // run_index_command errors already say "vcache index:"
                ExitCode::FAILURE
            }
        },
        "--version" | "-V" | "version" => {
            exit(Stdout::default().line(format_args!("vcache {}", env!("CARGO_PKG_VERSION"))))
        }
        "--help" | "-h" | "help" => exit(Stdout::default().line(format_args!("{USAGE}"))),
        other => usage_error(&format!("unknown command {other:?}")),
    }
}

/// Standard output of the CLI commands. A reader that goes away early (`vcache check | head`) is not
/// an error: the rest of the output is dropped and the command ends with its own status. (println!
/// would panic there: Rust ignores SIGPIPE, as `serve` needs for its sockets, so a write to a closed
/// pipe fails with EPIPE instead of ending the process.)
#[derive(Default)]
struct Stdout {
    reader_gone: bool,
}

impl Stdout {
    fn print(&mut self, text: &str) -> Result<(), String> {
        if self.reader_gone {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            Err(e) => Err(format!("cannot write to standard output: {e}")),
        }
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) -> Result<(), String> {
        self.print(&format!("{args}\n"))
    }
}

fn usage_error(msg: &str) -> ExitCode {
    eprintln!("vcache: {msg}\n\n{USAGE}");
    ExitCode::from(2)
}

fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn config_arg(rest: &[String]) -> Result<Option<PathBuf>, String> {
    match rest {
        [] => Ok(None),
        [flag, path] if flag == "--config" || flag == "-c" => Ok(Some(PathBuf::from(path))),
        [one] if one.starts_with("--config=") => Ok(Some(PathBuf::from(&one["--config=".len()..]))),
        _ => Err(format!("unexpected arguments {rest:?}")),
    }
}

fn load_config(path: Option<&Path>) -> Result<config::Config, String> {
    match path {
        Some(p) => config::load(p).map_err(|e| format!("config refused: {e}")),
        None => {
            let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
            config::try_embedded_default(&cwd).map_err(|e| format!("embedded default config: {e}"))
        }
    }
}

fn serve(path: Option<PathBuf>) -> Result<(), String> {
    let cfg = load_config(path.as_deref())?;
    match service::raise_nofile_limit() {
        Ok(n) => log::debug!("open-file limit: {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let boot = store::meta::current_boot_id().map_err(|e| {
        format!(
            "cannot read the kernel boot id ({}): {e}",
            store::meta::BOOT_ID_PATH
        )
    })?;
    let listener =
        match service::listener_from_systemd().map_err(|e| format!("socket activation: {e}"))? {
            Some(l) => {
                log::info!("using the listening socket passed by systemd");
                l
            }
            None => service::bind(cfg.server.listen).map_err(|e| {
                format!(
                    "cannot listen on {}: {e} ([server] listen)",
                    cfg.server.listen
                )
            })?,
        };
    let local = listener
        .local_addr()
        .map_err(|e| format!("listening socket: {e}"))?;
    let (store, problems) = store::Store::open(&cfg, boot)?;
    for p in &problems {
        log::error!("video {}: {}", p.id, p.message);
    }
    log::info!(
        "vcache {} serving {} videos on http://{local}/ from {} (config {}, sync = {:?})",
        env!("CARGO_PKG_VERSION"),
        store.videos.len(),
        cfg.server.data_dir.display(),
        cfg.source,
        cfg.server.sync
    );
    if path.is_none() {
        log::warn!(
            "embedded default config: the write token is \"change-me\"; use --config for anything real"
        );
    }
    let server = event_loop::Server::new(cfg, path, store, problems, listener)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    server.run()
}

fn check(path: Option<PathBuf>) -> Result<(), String> {
    let cfg = load_config(path.as_deref())?;
    let boot = store::meta::current_boot_id().unwrap_or([0; 16]);
    let mut out = Stdout::default();
    out.line(format_args!("config {}: OK", cfg.source))?;
    out.line(format_args!("  listen {}", cfg.server.listen))?;
    out.line(format_args!("  data_dir {}", cfg.server.data_dir.display()))?;
    out.line(format_args!(
        "  sync {:?}, checkpoint every {} ms",
        cfg.server.sync, cfg.server.checkpoint_interval_ms
    ))?;
    out.line(format_args!("  {} videos:", cfg.videos.len()))?;
    let mut problems = 0;
    for v in &cfg.videos {
        let what = store::describe_cached(&cfg, v, &boot);
        if what.starts_with("PROBLEM") {
            problems += 1;
        }
        let seek = if v.seek.is_some() { ", seek table" } else { "" };
        out.line(format_args!(
            "    {} ({}{seek}): {what}",
            v.id,
            v.kind_name()
        ))?;
    }
    if problems > 0 {
        return Err(format!("{problems} videos have problems (see above)"));
    }
    Ok(())
}
