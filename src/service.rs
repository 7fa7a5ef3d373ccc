//! Service integration: signals delivered to the event loop as readable sockets, the listening socket
//! (bound, or handed over by systemd through LISTEN_FDS), sd_notify messages, and the open-file limit.

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

/// The read ends of the signal pipes: one for "stop" (SIGTERM, SIGINT), one for "reload" (SIGHUP).
pub struct SignalPipes {
    pub stop: mio::net::UnixStream,
    pub reload: mio::net::UnixStream,
}

/// Route SIGTERM/SIGINT and SIGHUP into two non-blocking sockets the loop polls.
pub fn install_signal_pipes() -> io::Result<SignalPipes> {
    let (stop_r, stop_w) = UnixStream::pair()?;
    let (reload_r, reload_w) = UnixStream::pair()?;
    for s in [&stop_r, &stop_w, &reload_r, &reload_w] {
        s.set_nonblocking(true)?;
    }
    let stop_w2 = stop_w.try_clone()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, stop_w)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, stop_w2)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, reload_w)?;
    Ok(SignalPipes {
        stop: mio::net::UnixStream::from_std(stop_r),
        reload: mio::net::UnixStream::from_std(reload_r),
    })
}

/// Drain a signal pipe; true if at least one signal arrived.
pub fn drain_signal_pipe(s: &mut mio::net::UnixStream) -> bool {
    use std::io::Read;
    let mut got = false;
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(_) => got = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return got,
        }
    }
}

/// The first socket passed by systemd socket activation, if LISTEN_PID names this process.
pub fn listener_from_systemd() -> io::Result<Option<std::net::TcpListener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if !pid_ok || fds < 1 {
        return Ok(None);
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    // SAFETY: fstat-free check that fd 3 is a socket would need more syscalls; systemd's protocol
    // guarantees that fds 3..3+LISTEN_FDS are open sockets handed to this process (LISTEN_PID matched),
    // and nothing else in this process has taken ownership of fd 3.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(SD_LISTEN_FDS_START) };
    listener.set_nonblocking(true)?;
    // The variables are for this process only; children must not take the fds.
    // SAFETY: single-threaded at this point of start-up (before the commit worker starts), so no other
    // thread reads the environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Ok(Some(listener))
}

/// Bind the configured address (SO_REUSEADDR as std sets it) with a deep accept queue.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Send a state line to systemd when NOTIFY_SOCKET is set (Type=notify); a no-op otherwise.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("sd_notify: {e}");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        log::warn!("sd_notify {state:?}: {e}");
    }
}

/// The watchdog period systemd expects pings at (WATCHDOG_USEC), if it is for this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    if usec == 0 {
        return None;
    }
    Some(std::time::Duration::from_micros(usec / 2))
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
