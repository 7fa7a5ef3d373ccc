//! The write half of a connection: head and framing bytes waiting to go, and the calls that send them
//! together with payload — one `writev(2)` for head + payload slice (+ a chunk's CRLF), or `send(2)` with
//! `MSG_MORE` for the head followed by `sendfile(2)`, so a response leaves in one segment train instead of
//! one write per piece. Payload is never copied here: slices of the mapping go straight into the iovec.

use std::io::{self, IoSlice, Write};
use std::os::unix::io::AsRawFd;

/// What one send did, or the connection step to take instead.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The socket is full: wait for writability.
    Blocked,
    /// Interrupted: try again.
    Retry,
    /// The peer is gone or the socket failed: close.
    Close,
}

/// Bytes one send wrote: head/framing bytes from the queue, and payload bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wrote {
    pub framing: u64,
    pub payload: u64,
}

/// The write half. `writable` is the readiness the loop last saw; `sent_this_turn` counts payload for the
/// per-turn budget.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
    pos: usize,
    pub writable: bool,
    pub sent_this_turn: u64,
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            writable: true,
            ..Writer::default()
        }
    }

    /// Take `spare` as the queue if this writer has none (see `Reader::borrow_buffer`).
    pub fn borrow_buffer(&mut self, spare: &mut Vec<u8>) {
        if self.out.capacity() == 0 {
            std::mem::swap(&mut self.out, spare);
            self.out.clear();
            self.pos = 0;
        }
    }

    /// Give the queue back to `spare` once everything in it is sent (dropped if `spare` already has
    /// one); a writer with bytes still to send keeps it.
    pub fn return_buffer(&mut self, spare: &mut Vec<u8>) {
        if !self.is_flushed() {
            return;
        }
        self.out.clear();
        self.pos = 0;
        if spare.capacity() == 0 {
            std::mem::swap(&mut self.out, spare);
        } else {
            self.out = Vec::new();
        }
    }

    /// Nothing queued is left to send.
    pub fn is_flushed(&self) -> bool {
        self.pos >= self.out.len()
    }

    /// Queue head or framing bytes; they leave with the next send.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.queue_in_place().extend_from_slice(bytes);
    }

    /// The queue, to append head bytes to in place (they leave with the next send).
    pub fn queue_in_place(&mut self) -> &mut Vec<u8> {
        if self.is_flushed() {
            self.out.clear();
            self.pos = 0;
        }
        &mut self.out
    }

    /// Queue a chunk-size line for `n` payload bytes, without allocating.
    pub fn queue_chunk_size(&mut self, n: u64) {
        // Writing into a Vec cannot fail.
        let _ = write!(self.queue_in_place(), "{n:x}\r\n");
    }

    fn pending(&self) -> &[u8] {
        &self.out[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        assert!(n <= self.out.len() - self.pos, "consumed more than queued");
        self.pos += n;
    }

    /// Send what is queued (no payload). Ok once the queue is empty.
    pub fn flush<S: Write>(&mut self, stream: &mut S) -> Result<u64, Stop> {
        let mut sent = 0;
        while !self.is_flushed() {
            if !self.writable {
                return Err(Stop::Blocked);
            }
            let n = match self.classify(stream.write(self.pending())) {
                Ok(n) => n,
                Err(Stop::Retry) => continue,
                Err(stop) => return Err(stop),
            };
            self.consume(n);
            sent += n as u64;
        }
        Ok(sent)
    }

    /// One writev of the queued bytes, `payload` and — only once all of `payload` is written — `suffix`
    /// (a chunk's CRLF). A suffix written only in part is queued for the next send.
    pub fn send<S: Write>(
        &mut self,
        stream: &mut S,
        payload: &[u8],
        suffix: &[u8],
    ) -> Result<Wrote, Stop> {
        if !self.writable {
            return Err(Stop::Blocked);
        }
        let queued = self.pending().len();
        let iov = [
            IoSlice::new(self.pending()),
            IoSlice::new(payload),
            IoSlice::new(suffix),
        ];
        let n = self.classify(stream.write_vectored(&iov))?;
        let framing = n.min(queued);
        self.consume(framing);
        let body = (n - framing).min(payload.len());
        let tail = n - framing - body;
        assert!(tail <= suffix.len(), "writev wrote more than it was given");
        if body == payload.len() && tail < suffix.len() {
            self.queue(&suffix[tail..]);
        }
        Ok(Wrote {
            framing: (framing + tail) as u64,
            payload: body as u64,
        })
    }

    /// Send the queued bytes with MSG_MORE (they leave with the file's first bytes), then `count` bytes
    /// of `file` from `offset` with sendfile(2).
    pub fn send_file<S: AsRawFd>(
        &mut self,
        stream: &S,
        file: &std::fs::File,
        offset: u64,
        count: u64,
    ) -> Result<Wrote, Stop> {
        if !self.writable {
            return Err(Stop::Blocked);
        }
        let mut wrote = Wrote::default();
        if !self.is_flushed() {
            let n = self.classify(send_more(stream, self.pending()))?;
            self.consume(n);
            wrote.framing = n as u64;
            if !self.is_flushed() {
                return Ok(wrote);
            }
        }
        match sendfile(stream, file, offset, count) {
            Ok(0) if wrote.framing > 0 => Ok(wrote),
            result => {
                wrote.payload = self.classify(result)? as u64;
                Ok(wrote)
            }
        }
    }

    /// Bytes written, or why not (a would-block clears `writable`; no progress or an error closes).
    fn classify(&mut self, result: io::Result<usize>) -> Result<usize, Stop> {
        match result {
            Ok(0) => Err(Stop::Close),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable = false;
                Err(Stop::Blocked)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(Stop::Retry),
            Err(_) => Err(Stop::Close),
        }
    }
}

/// send(2) with MSG_MORE: hold these bytes back until the next write fills the segment.
fn send_more<S: AsRawFd>(stream: &S, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the descriptor is open for the call (the stream is borrowed) and `bytes` is a valid slice
    // for its length; send(2) only reads it.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_MORE | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// sendfile(2) `count` bytes of `file` from `offset` to the socket.
fn sendfile<S: AsRawFd>(
    stream: &S,
    file: &std::fs::File,
    offset: u64,
    count: u64,
) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    // SAFETY: both descriptors are open for the duration of the call (the stream and the file are
    // borrowed), `off` is a valid, exclusively borrowed off_t; sendfile reads the file through the page
    // cache and never touches our memory otherwise.
    let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn read_all(b: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        b.read_exact(&mut v).unwrap();
        v
    }

    /// A stream that takes at most `cap` bytes per write, to test partial writev.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.cap);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(self.cap - n);
                self.got.extend_from_slice(&b[..k]);
                n += k;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn head_payload_and_crlf_leave_in_one_writev() {
        let (mut a, mut b) = pair();
        let mut w = Writer::new();
        w.queue_chunk_size(5);
        let wrote = w.send(&mut a, b"hello", b"\r\n").unwrap();
        assert_eq!(
            wrote,
            Wrote {
                framing: 5,
                payload: 5
            }
        );
        assert!(w.is_flushed());
        assert_eq!(read_all(&mut b, 10), b"5\r\nhello\r\n");
    }

    #[test]
    fn partial_writes_resume_in_order_and_never_send_the_suffix_early() {
        let mut t = Trickle {
            got: Vec::new(),
            cap: 4,
        };
        let mut w = Writer::new();
        w.queue(b"HEAD");
        let payload = b"0123456789";
        let mut sent = 0usize;
        let wrote = w.send(&mut t, &payload[sent..], b"\r\n").unwrap();
        assert_eq!(
            wrote,
            Wrote {
                framing: 4,
                payload: 0
            }
        );
        while sent < payload.len() {
            let wrote = w.send(&mut t, &payload[sent..], b"\r\n").unwrap();
            sent += wrote.payload as usize;
        }
        // The last write took "89" and the suffix's first two bytes would not fit: none left over
        // here (cap 4 = "89\r\n"), so check a cut suffix too.
        w.flush(&mut t).unwrap();
        assert_eq!(t.got, b"HEAD0123456789\r\n");
        let mut t = Trickle {
            got: Vec::new(),
            cap: 3,
        };
        let mut w = Writer::new();
        assert_eq!(w.send(&mut t, b"ab", b"\r\n").unwrap().payload, 2);
        assert!(!w.is_flushed(), "the cut CRLF is queued");
        w.flush(&mut t).unwrap();
        assert_eq!(t.got, b"ab\r\n");
    }

    #[test]
    fn a_full_socket_blocks_and_clears_writable() {
        let (mut a, _b) = pair();
        let mut w = Writer::new();
        let big = vec![7u8; 1 << 20];
        let mut r = Ok(Wrote::default());
        for _ in 0..64 {
            r = w.send(&mut a, &big, b"");
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(Stop::Blocked));
        assert!(!w.writable);
        assert_eq!(w.send(&mut a, b"x", b""), Err(Stop::Blocked));
    }

    #[test]
    fn send_file_sends_the_head_first_then_the_file() {
        let dir = std::env::temp_dir().join(format!("vcache-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let (a, mut b) = pair();
        let mut w = Writer::new();
        w.queue(b"H:");
        let mut got = Wrote::default();
        while got.payload == 0 {
            let wrote = w.send_file(&a, &f, 2, 5).unwrap();
            got.framing += wrote.framing;
            got.payload += wrote.payload;
        }
        assert_eq!(
            got,
            Wrote {
                framing: 2,
                payload: 5
            }
        );
        assert_eq!(read_all(&mut b, 7), b"H:23456");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
