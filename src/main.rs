//! vcache: a persistent video cache daemon. `main` only parses the command line and wires the parts:
//! config → store → event loop (serve), config → report (check), and the offline MPEG-TS indexer.

mod cluster;
mod config;
mod conn;
mod event_loop;
mod fmp4;
mod hls;
mod http;
mod index_cmd;
mod metrics;
mod origin;
mod relay;
mod routes;
mod seek;
mod service;
mod store;
mod tsindex;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// The command line. `vcache man` renders this same definition as the man page, so `--help` and
/// vcache(1) cannot disagree.
#[derive(Parser)]
#[command(
    name = "vcache",
    version,
    about = "A persistent video cache daemon",
    long_about = "vcache serves videos over HTTP/1.1 with byte ranges from memory-mapped, fully \
                  allocated files that survive crashes and restarts: complete files, upload slots, \
                  live channels with a DVR window, and videos pulled through from an HTTP origin.",
    after_help = ENVIRONMENT,
    arg_required_else_help = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The environment variables vcache reads (the man page's ENVIRONMENT section, `--help`'s footer).
const ENVIRONMENT: &str = "\
Environment:
  RUST_LOG          log filter (default: info), e.g. RUST_LOG=debug
  VCACHE_SEND_PATH  sendfile | mmap: how payload leaves for the socket (default: a write from the mapping)
  NOTIFY_SOCKET, LISTEN_FDS, LISTEN_PID, WATCHDOG_USEC  set by systemd (Type=notify, socket activation)";

#[derive(Subcommand)]
enum Command {
    /// Serve the configured videos over HTTP/1.1 until SIGTERM or SIGINT (SIGHUP reloads the config)
    Serve(ConfigArg),
    /// Validate a config, report every error in it, and print what each video holds on disk
    Check(ConfigArg),
    /// Print the [video.seek] keyframe table of an MPEG-TS file, to paste into the config
    Index {
        /// The MPEG-TS file to index
        file: PathBuf,
        /// Frames per second of the timecodes (default: detected from the video timestamps)
        #[arg(long, value_name = "N", value_parser = index_cmd::parse_fps_argument)]
        fps: Option<u32>,
    },
    /// Write the vcache(1) man page (roff) to standard output
    #[command(hide = true)]
    Man,
    /// Print the version (as --version does)
    #[command(hide = true)]
    Version,
}

#[derive(Args)]
struct ConfigArg {
    /// The config file (TOML); relative paths in it resolve against its directory. Without it: the
    /// embedded default (127.0.0.1:8080, data in ./vcache-data, write token "change-me")
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout with status 0; usage errors to stderr with status 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match cli.command {
        Command::Serve(args) => exit(serve(args.config)),
        Command::Check(args) => exit(check(args.config)),
        Command::Index { file, fps } => match index_cmd::run(&file, fps) {
            Ok(text) => exit(Stdout::default().print(&text)),
            Err(e) => {
                eprintln!("{e}"); // index_cmd errors already say "vcache index:"
                ExitCode::FAILURE
            }
        },
        Command::Man => exit(man_page()),
        Command::Version => {
            exit(Stdout::default().line(format_args!("vcache {}", env!("CARGO_PKG_VERSION"))))
        }
    }
}

/// vcache(1): clap_mangen's rendering of `Cli`, with one section per command (its synopsis,
/// description and options, as subsections) in place of the separate vcache-serve(1) pages it
/// would point to, then ENVIRONMENT, FILES and SEE ALSO (`MAN_TAIL`).
fn man_page() -> Result<(), String> {
    let mut cmd = Cli::command();
    cmd.build(); // sets each command's bin_name ("vcache serve") for its synopsis
    let man = clap_mangen::Man::new(cmd.clone()).manual("vcache manual");
    let mut head: Vec<u8> = Vec::new();
    let mut commands: Vec<u8> = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut head)?;
        man.render_name_section(&mut head)?;
        man.render_synopsis_section(&mut head)?;
        man.render_description_section(&mut head)?;
        man.render_options_section(&mut head)?;
        for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            writeln!(commands, ".SH \"VCACHE {}\"", sub.get_name().to_uppercase())?;
            let sub_man = clap_mangen::Man::new(sub.clone());
            sub_man.render_synopsis_section(&mut commands)?;
            sub_man.render_description_section(&mut commands)?;
            sub_man.render_options_section(&mut commands)?;
        }
        Ok(())
    })();
    rendered.map_err(|e| format!("cannot render the man page: {e}"))?;
    // Every rendering starts with the two lines that define the `Aq` string: the page has them once.
    let preamble =
        |l: &&str| (l.starts_with(".ie ") || l.starts_with(".el ")) && l.contains(".ds Aq");
    let mut page = String::from(".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n");
    for line in String::from_utf8_lossy(&head)
        .lines()
        .filter(|l| !preamble(l))
    {
        page.push_str(line);
        page.push('\n');
    }
    for line in String::from_utf8_lossy(&commands)
        .lines()
        .filter(|l| !preamble(l))
    {
        // A command's own headings are subsections of its section.
        let line = match line.strip_prefix(".SH ") {
            Some(heading) if !heading.starts_with("\"VCACHE ") => format!(".SS {heading}"),
            _ => line.to_string(),
        };
        page.push_str(&line);
        page.push('\n');
    }
    page.push_str(MAN_TAIL);
    Stdout::default().print(&page)
}

/// The man page's last sections, in roff.
const MAN_TAIL: &str = "\
.SH ENVIRONMENT
.TP
RUST_LOG
the log filter (default: info), e.g. RUST_LOG=debug
.TP
VCACHE_SEND_PATH
sendfile or mmap: how payload leaves for the socket (default: a write from the mapping)
.TP
NOTIFY_SOCKET, LISTEN_FDS, LISTEN_PID, WATCHDOG_USEC
set by systemd: readiness and watchdog notifications, socket activation
.SH FILES
.TP
/etc/vcache/vcache.toml
the config of the systemd service (docs/config.md in the source describes every key)
.TP
/var/lib/vcache
its data_dir: one data file and one metadata file per video
.SH SEE ALSO
systemctl(1), systemd.service(5), curl(1), ffmpeg(1)
";

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

fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The config at `path` (or the embedded default), its warnings logged; or, when it is refused,
/// every error logged, one per line with its file, line and key.
fn load_config(path: Option<&Path>) -> Result<config::Config, String> {
    let loaded = match path {
        Some(p) => config::load(p),
        None => {
            let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
            config::try_embedded_default(&cwd)
        }
    };
    match loaded {
        Ok(cfg) => {
            for warning in &cfg.warnings {
                log::warn!("{warning}");
            }
            Ok(cfg)
        }
        Err(errors) => {
            for error in &errors.0 {
                log::error!("{error}");
            }
            Err(format!(
                "config refused: {} (see above)",
                count(errors.0.len(), "error")
            ))
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
    // The configured videos are opened off the loop (event_loop/startup.rs): it serves at once.
    // Objects of `[[mount]]`s found in the data directory are opened here, before it serves.
    let mut store = store::Store::open_empty(&cfg, boot)?;
    let problems = store.open_mounted_files();
    for p in &problems {
        log::error!("video {}: {}", p.id, p.message);
    }
    log::info!(
        "vcache {} serving {} on http://{local}/ from {} (config {}, sync = {:?})",
        env!("CARGO_PKG_VERSION"),
        count(cfg.videos.len(), "video"),
        cfg.server.data_dir.display(),
        cfg.source,
        cfg.server.sync
    );
    if path.is_none() {
        log::warn!("running on the embedded default config; use --config for anything real");
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
    out.line(format_args!("  {}:", count(cfg.videos.len(), "video")))?;
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
        // An origin whose host does not resolve cannot be served: `serve` reports it unavailable.
        if let config::VideoKind::Origin {
            url, host, port, ..
        } = &v.kind
            && let Err(e) = store::resolve_origin(host, *port, url)
        {
            problems += 1;
            out.line(format_args!("      PROBLEM: {e}"))?;
        }
    }
    if problems > 0 {
        let have = if problems == 1 {
            "has a problem"
        } else {
            "have problems"
        };
        return Err(format!("{} {have} (see above)", count(problems, "video")));
    }
    Ok(())
}

/// "1 video", "2 videos", "0 videos" (every noun used here takes an "s").
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
