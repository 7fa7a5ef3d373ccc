//! The standard `process_*` metrics (as the Prometheus client libraries export them), read from /proc
//! at scrape time: resident memory, open file descriptors, CPU seconds, start time, and the fd limit.
//! A value that cannot be read is left out, never guessed.

/// Append the process metrics to `s`.
pub fn render(s: &mut String) {
    // SAFETY: sysconf takes no pointers and only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields = stat_fields(&stat);
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    if ticks > 0 {
        let ticks = ticks as f64;
        // Fields after the command name, 0-based from the state: utime 11, stime 12, starttime 19.
        if let (Some(u), Some(st)) = (field(11), field(12)) {
            let cpu = (u + st) as f64 / ticks;
            one(
                s,
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent, in seconds.",
                cpu,
            );
        }
        if let (Some(start), Some(boot)) = (field(19), boot_time()) {
            let t = boot as f64 + start as f64 / ticks;
            one(
                s,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                t,
            );
        }
    }
    // rss in pages: field 21.
    if let (Some(rss), true) = (field(21), page > 0) {
        let bytes = rss as f64 * page as f64;
        one(
            s,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            bytes,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let n = dir.count().saturating_sub(1);
        one(
            s,
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            n as f64,
        );
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        one(
            s,
            "process_max_fds",
            "gauge",
            "The open file descriptor limit.",
            lim.rlim_cur as f64,
        );
    }
}

fn one(s: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    s.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// The fields of /proc/self/stat after `pid (comm)`: the command name may hold spaces and
/// parentheses, so the split starts after its last `)`.
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(i) => stat[i + 1..].split_whitespace().collect(),
        None => Vec::new(),
    }
}

/// The kernel's boot time (`btime` of /proc/stat), in seconds since the epoch.
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_start_after_the_command_name_even_with_parentheses_in_it() {
        let f = stat_fields("42 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21");
        assert_eq!(f[0], "S");
        assert_eq!(f[11], "11");
        assert_eq!(f[21], "21");
    }

    #[test]
    fn the_process_metrics_are_read() {
        let mut s = String::new();
        render(&mut s);
        for name in [
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(s.contains(&format!("\n{name}")), "{name} in {s}");
        }
    }
}
