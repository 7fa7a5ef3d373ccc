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

/// The first socket passed by systemd socket activation, if LISTEN_PID names this process. The fd must
/// be a listening TCP socket (`ListenStream=` with an IP address); anything else is refused with a clear
/// error rather than served badly.
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
    if fds > 1 {
        log::warn!(
            "socket activation passed {fds} sockets; only the first (fd 3) is used, the others are closed"
        );
        for fd in SD_LISTEN_FDS_START + 1..SD_LISTEN_FDS_START + fds {
            // SAFETY: fds 3..3+LISTEN_FDS were handed to this process by the activation protocol and
            // nothing else owns them; closing the extra ones releases them.
            unsafe { libc::close(fd) };
        }
    }
    check_listening_tcp(SD_LISTEN_FDS_START)?;
    // SAFETY: F_SETFD on an open descriptor we were handed; no memory is passed.
    if unsafe { libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd 3 was checked above to be an open, listening TCP socket; the activation protocol hands
    // it to this process (LISTEN_PID matched) and nothing else in this process has taken ownership of it.
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

/// Is `fd` an open socket of type SOCK_STREAM, family AF_INET/AF_INET6, in the listening state?
fn check_listening_tcp(fd: RawFd) -> io::Result<()> {
    let refuse = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} from LISTEN_FDS is {what}; vcache.socket needs ListenStream=ADDRESS:PORT"
            ),
        )
    };
    // SAFETY: libc::stat is plain old data; all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the stat struct we own; an invalid fd only yields EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        let e = io::Error::last_os_error();
        return Err(refuse(format!("not open ({e})")));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(refuse("not a socket".into()));
    }
    let opt = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the c_int we own and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v)
    };
    let domain = opt(libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(refuse(format!(
            "not an IP socket (address family {domain})"
        )));
    }
    if opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(refuse("not a stream (TCP) socket".into()));
    }
    if opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(refuse("a TCP socket that is not listening".into()));
    }
    Ok(())
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

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` wants it in `MONOTONIC_USEC=` (systemd >= 253,
/// Type=notify-reload; older versions ignore the field).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The watchdog period systemd expects pings at (WATCHDOG_USEC), if it is for this process.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
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
