//! Data files on disk: creating them fully allocated, locking them against a second daemon, and mapping
//! them. A data file is created at its final size with `posix_fallocate`, so a full disk is an error at
//! creation and never a SIGBUS when a write later touches a page of the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{Mmap, MmapMut};

/// A read-only video file served as it is (`kind = "file"`).
pub struct ReadOnlyFile {
    pub file: Arc<File>,
    /// None for an empty file (a zero-length mapping is not allowed).
    pub map: Option<Mmap>,
    pub len: u64,
}

impl ReadOnlyFile {
    pub fn open(path: &Path) -> io::Result<ReadOnlyFile> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let len = meta.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the mapping is read-only. The file is the operator's and documented as immutable
            // while configured (ARCHITECTURE.md, "File videos"), but if it is truncated in place the
            // process stays sound: vcache never reads these bytes in user space — slices of this map
            // are only handed to write(2)/writev(2) (`Video::payload_slice`), and a kernel copy from a
            // page past EOF fails with EFAULT (the response is cut) where a user-space read would
            // raise SIGBUS. tests/send_path.rs truncates a file under a reader.
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(ReadOnlyFile {
            file: Arc::new(file),
            map,
            len,
        })
    }
}

/// How a data file's bytes arrive, which decides how its write mapping is advised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePattern {
    /// Long runs in order (upload slots, live rings): the write mapping is advised MADV_HUGEPAGE, so a
    /// write fault allocates one large folio (up to 2 MiB) instead of 512 pages — measured 5–8× less
    /// CPU per byte than order-0 faults on ext4 (benches/RESULTS.md, "Ingest").
    Runs,
    /// Scattered blocks (origin fills): advised MADV_RANDOM, so a fault allocates exactly its page and
    /// reads nothing ahead: a cold 64 KiB block must not zero-fill megabytes of page cache around it.
    Blocks,
}

/// A writable, fully allocated, exclusively locked data file and two shared mappings of it: `map` for
/// reading (normal read-ahead, so serving bytes that are not in the page cache reads ahead) and
/// `write_map` for ingest, advised by its `WritePattern`. Both map the same page cache, so a byte
/// written through one is seen through the other. Keeping them apart keeps the write advice off the
/// read path, and keeps the read mapping's entries read-only (clean), so writeback never has to
/// write-protect them.
pub struct WritableFile {
    pub file: Arc<File>,
    pub map: MmapMut,
    pub write_map: MmapMut,
    pub len: u64,
}

fn writable(file: File, len: u64, pattern: WritePattern) -> Result<WritableFile, DataFileError> {
    let map = map_shared(&file)?;
    let write_map = map_shared(&file)?;
    let advice = match pattern {
        WritePattern::Runs => memmap2::Advice::HugePage,
        WritePattern::Blocks => memmap2::Advice::Random,
    };
    if let Err(e) = write_map.advise(advice) {
        log::warn!("madvise({advice:?}) on a data file failed: {e}");
    }
    Ok(WritableFile {
        file: Arc::new(file),
        map,
        write_map,
        len,
    })
}

/// How far ahead of an in-flight write its target pages are faulted in, in one call, before the socket
/// is read into them (see `prefault_for_write`).
pub const PREFAULT_WINDOW: u64 = 4 << 20;

/// Whether the kernel took MADV_POPULATE_WRITE (Linux 5.14+); once refused, it is not tried again.
static POPULATE_WRITE_WORKS: AtomicBool = AtomicBool::new(true);

/// Fault the pages under `target` in for writing with one `madvise(MADV_POPULATE_WRITE)`, so the
/// read(2) that fills them next takes no page faults (measured: a fault per 4 KiB page, each zero-filling
/// it and taking the mapping's locks, cost more than the copy itself). Where the kernel lacks it, the
/// pages simply fault on first touch, as before. The bytes are not changed.
pub fn prefault_for_write(target: &mut [u8]) {
    if target.is_empty() || !POPULATE_WRITE_WORKS.load(Ordering::Relaxed) {
        return;
    }
    let page = page_size();
    let addr = target.as_mut_ptr() as usize;
    let start = addr & !(page - 1);
    let len = addr + target.len() - start;
    // SAFETY: [start, start + len) lies inside one mapping: `target` is a slice of a page-aligned
    // MmapMut, and rounding its start down to a page boundary stays inside the page that holds its first
    // byte. MADV_POPULATE_WRITE only faults the pages in writable (as a write would); it changes no
    // byte and no mapping, so no reference into the mapping is invalidated.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            POPULATE_WRITE_WORKS.store(false, Ordering::Relaxed);
            log::info!(
                "madvise(MADV_POPULATE_WRITE) is not supported; ingest faults pages one by one"
            );
        } else {
            log::debug!("madvise(MADV_POPULATE_WRITE) failed: {err}");
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(n).unwrap_or(4096);
    assert!(page.is_power_of_two(), "page size {page} is a power of two");
    page
}

/// Why a data file could not be created or opened.
#[derive(Debug)]
pub enum DataFileError {
    /// Not enough disk for the full allocation (ENOSPC / EDQUOT / EFBIG).
    NoSpace {
        needed: u64,
    },
    /// Another process holds the lock.
    Locked,
    /// The file exists with another size than the config says.
    SizeMismatch {
        on_disk: u64,
        configured: u64,
    },
    Io(io::Error),
}

impl std::fmt::Display for DataFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataFileError::NoSpace { needed } => write!(
                f,
                "not enough disk space to allocate {needed} bytes (free space or lower the size)"
            ),
            DataFileError::Locked => write!(
                f,
                "the data file is locked by another process (is another vcache using this data_dir?)"
            ),
            DataFileError::SizeMismatch {
                on_disk,
                configured,
            } => write!(
                f,
                "the data file is {on_disk} bytes but the config says {configured}; \
                 it is left untouched (restore the old size, or move the file away to start afresh)"
            ),
            DataFileError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<io::Error> for DataFileError {
    fn from(e: io::Error) -> Self {
        DataFileError::Io(e)
    }
}

fn lock_exclusive(file: &File) -> Result<(), DataFileError> {
    // SAFETY: flock on a valid, open file descriptor owned by `file`; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(DataFileError::Locked)
    } else {
        Err(DataFileError::Io(err))
    }
}

fn map_shared(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file is ours: created by vcache in its data directory, opened read-write and held
    // under an exclusive flock for the life of the process, and never truncated or resized while
    // mapped (its size is fixed at creation). It is fully allocated, so stores to any page of the
    // mapping cannot fault for lack of space. Concurrent access is only from this process's single
    // event-loop thread; the sync thread touches the file descriptor (fdatasync), never the mapping.
    // A file has two such mappings (`map`, `write_map`): the event loop never holds a reference into
    // one while writing through the other, and the kernel keeps both coherent (one page cache).
    unsafe { MmapMut::map_mut(file) }
}

/// Create `path` (which must not exist) at `len` bytes, fully allocated, locked and mapped. On any
/// failure the partly created file is removed again.
pub fn create(path: &Path, len: u64, pattern: WritePattern) -> Result<WritableFile, DataFileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)?;
    let result = match pattern {
        // Origin files are sparse: each fill block is allocated before it is fetched into
        // (`allocate_range`) and given back when evicted (`punch_range`).
        WritePattern::Blocks => size_and_map(file, len, pattern),
        WritePattern::Runs => allocate_and_map(file, len, pattern),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn allocate_and_map(
    file: File,
    len: u64,
    pattern: WritePattern,
) -> Result<WritableFile, DataFileError> {
    lock_exclusive(&file)?;
    let off_len = libc::off_t::try_from(len).map_err(|_| DataFileError::NoSpace { needed: len })?;
    // SAFETY: posix_fallocate on a valid descriptor opened for writing; it returns an error number
    // instead of setting errno.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off_len) };
    match rc {
        0 => {}
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => {
            return Err(DataFileError::NoSpace { needed: len });
        }
        e => return Err(DataFileError::Io(io::Error::from_raw_os_error(e))),
    }
    file.sync_all()?;
    writable(file, len, pattern)
}

/// A sparse file of `len` bytes: sized, locked and mapped, nothing allocated.
fn size_and_map(
    file: File,
    len: u64,
    pattern: WritePattern,
) -> Result<WritableFile, DataFileError> {
    lock_exclusive(&file)?;
    file.set_len(len)?;
    file.sync_all()?;
    writable(file, len, pattern)
}

/// Allocate bytes [offset, offset + len) of a sparse file, so that writing them through the mapping
/// can never fault on a full disk (SIGBUS). Blocking: the space thread calls it.
pub fn allocate_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(file, 0, offset, len)
}

/// Give bytes [offset, offset + len) of a file back to the file system; they read as zeros after.
/// Blocking: the space thread calls it, only after no durable record claims them.
pub fn punch_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "range past off_t");
    let off = libc::off_t::try_from(offset).map_err(|_| too_big())?;
    let n = libc::off_t::try_from(len).map_err(|_| too_big())?;
    if n == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a descriptor `file` keeps open for the call; it reads no memory of ours.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes the file occupies on disk (`st_blocks` × 512).
pub fn allocated_bytes(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.blocks() * 512)
}

/// Open an existing data file that must be exactly `len` bytes; never changes its size or content.
pub fn open_existing(
    path: &Path,
    len: u64,
    pattern: WritePattern,
) -> Result<WritableFile, DataFileError> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    lock_exclusive(&file)?;
    let on_disk = file.metadata()?.len();
    if on_disk != len {
        return Err(DataFileError::SizeMismatch {
            on_disk,
            configured: len,
        });
    }
    writable(file, len, pattern)
}

/// fsync a directory so that a file created or renamed in it survives a machine crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vcache-df-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn create_allocates_full_size_and_locks() {
        let d = temp_dir("create");
        let p = d.join("a.data");
        let mut f = create(&p, 1 << 20, WritePattern::Runs).unwrap();
        assert_eq!(f.map.len(), 1 << 20);
        f.write_map[5] = 7;
        assert_eq!(f.map[5], 7, "both mappings see one page cache");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 20, "file is fully allocated");
        // A second open is refused while the first holds the lock.
        assert!(matches!(
            open_existing(&p, 1 << 20, WritePattern::Runs),
            Err(DataFileError::Locked)
        ));
        drop(f);
        let g = open_existing(&p, 1 << 20, WritePattern::Runs).unwrap();
        assert_eq!(g.map[5], 7);
        drop(g);
        assert!(matches!(
            open_existing(&p, 2 << 20, WritePattern::Blocks),
            Err(DataFileError::SizeMismatch { .. })
        ));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20, "untouched");
    }

    /// Pages of `m[a..b]` resident in the page cache and mapped, per mincore(2).
    fn resident_pages(m: &[u8], a: usize, b: usize) -> usize {
        let page = page_size();
        let start = (m.as_ptr() as usize + a) & !(page - 1);
        let len = m.as_ptr() as usize + b - start;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: [start, start+len) lies inside the mapping `m`; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 == 1).count()
    }

    #[test]
    fn prefault_for_write_maps_the_pages_and_changes_no_byte() {
        let d = temp_dir("prefault");
        let p = d.join("c.data");
        let mut f = create(&p, 8 << 20, WritePattern::Blocks).unwrap();
        f.write_map[4096..4196].fill(9);
        assert_eq!(resident_pages(&f.write_map, 1 << 20, 3 << 20), 0);
        // An unaligned target: the page holding its first byte is faulted in too.
        prefault_for_write(&mut f.write_map[4100..3 << 20]);
        assert_eq!(
            resident_pages(&f.write_map, 4096, 3 << 20),
            ((3 << 20) - 4096) / 4096
        );
        assert!(
            f.map[4096..4196].iter().all(|&b| b == 9),
            "written bytes kept"
        );
        assert!(
            f.map[4196..3 << 20].iter().all(|&b| b == 0),
            "nothing written"
        );
        prefault_for_write(&mut f.write_map[0..0]);
    }

    #[test]
    fn create_refuses_existing_file() {
        let d = temp_dir("exists");
        let p = d.join("b.data");
        std::fs::write(&p, b"keep").unwrap();
        assert!(create(&p, 10, WritePattern::Blocks).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
    }
}
