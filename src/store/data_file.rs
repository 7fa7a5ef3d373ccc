//! Data files on disk: creating them fully allocated, locking them against a second daemon, and mapping
//! them. A data file is created at its final size with `posix_fallocate`, so a full disk is an error at
//! creation and never a SIGBUS when a write later touches a page of the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

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
            // SAFETY: the mapping is read-only and private to this process's reads. The file is the
            // operator's and is documented as immutable while configured (ARCHITECTURE.md, "file
            // videos"): like nginx's open_file_cache, vcache assumes it is not truncated in place. The
            // default send path is sendfile(2), which does not touch the mapping and so cannot SIGBUS
            // even if that assumption is broken.
            Some(unsafe { Mmap::map(&file)? })
        };
        Ok(ReadOnlyFile {
            file: Arc::new(file),
            map,
            len,
        })
    }
}

/// A writable, fully allocated, exclusively locked data file and two shared mappings of it: `map` for
/// reading (normal read-ahead, so serving bytes that are not in the page cache reads ahead) and
/// `write_map` for ingest, advised MADV_RANDOM — a write fault into a page of a fully allocated but
/// unwritten extent would otherwise read ahead (zero-fill) megabytes of neighbouring pages. Both map
/// the same page cache, so a byte written through one is seen through the other.
pub struct WritableFile {
    pub file: Arc<File>,
    pub map: MmapMut,
    pub write_map: MmapMut,
    pub len: u64,
}

fn writable(file: File, len: u64) -> Result<WritableFile, DataFileError> {
    let map = map_shared(&file)?;
    let write_map = map_shared(&file)?;
    if let Err(e) = write_map.advise(memmap2::Advice::Random) {
        log::warn!("madvise(MADV_RANDOM) on a data file failed: {e}");
    }
    Ok(WritableFile {
        file: Arc::new(file),
        map,
        write_map,
        len,
    })
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
pub fn create(path: &Path, len: u64) -> Result<WritableFile, DataFileError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)?;
    let result = allocate_and_map(file, len);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn allocate_and_map(file: File, len: u64) -> Result<WritableFile, DataFileError> {
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
    writable(file, len)
}

/// Open an existing data file that must be exactly `len` bytes; never changes its size or content.
pub fn open_existing(path: &Path, len: u64) -> Result<WritableFile, DataFileError> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    lock_exclusive(&file)?;
    let on_disk = file.metadata()?.len();
    if on_disk != len {
        return Err(DataFileError::SizeMismatch {
            on_disk,
            configured: len,
        });
    }
    writable(file, len)
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
        let mut f = create(&p, 1 << 20).unwrap();
        assert_eq!(f.map.len(), 1 << 20);
        f.write_map[5] = 7;
        assert_eq!(f.map[5], 7, "both mappings see one page cache");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 20, "file is fully allocated");
        // A second open is refused while the first holds the lock.
        assert!(matches!(
            open_existing(&p, 1 << 20),
            Err(DataFileError::Locked)
        ));
        drop(f);
        let g = open_existing(&p, 1 << 20).unwrap();
        assert_eq!(g.map[5], 7);
        drop(g);
        assert!(matches!(
            open_existing(&p, 2 << 20),
            Err(DataFileError::SizeMismatch { .. })
        ));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20, "untouched");
    }

    #[test]
    fn create_refuses_existing_file() {
        let d = temp_dir("exists");
        let p = d.join("b.data");
        std::fs::write(&p, b"keep").unwrap();
        assert!(create(&p, 10).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
    }
}
