//! The file I/O seam.
//!
//! Storage reaches disks only through these traits so that the runtime can
//! supply direct I/O on io_uring and tests can supply [`simulated`], a file
//! system that models what a crash or a failing disk does to un-synced data.
//!
//! Contract for implementations:
//! - `write_at` writes every byte or fails (short writes are retried inside).
//! - `sync_data` returns only after every write that *completed before it was
//!   called* is durable. Writes still in flight are not covered.
//! - Offsets and lengths given by storage are multiples of [`BLOCK_BYTES`].
//! - A created file's directory entry is durable only after
//!   `sync_directory` on its parent.

pub mod simulated;

use std::io;
use std::path::{Path, PathBuf};

/// Every storage write is a whole number of these, at an offset that is a
/// multiple of it. 4 KiB covers the direct-I/O alignment of the drives we
/// run on (512 B or 4 KiB) and the page size.
pub const BLOCK_BYTES: usize = 4096;

pub trait DirectFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    async fn sync_data(&self) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    async fn close(self) -> io::Result<()>;
}

pub trait FileSystem {
    type File: DirectFile;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates a new empty file, failing if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    async fn create_directory(&self, path: &Path) -> io::Result<()>;
    async fn sync_directory(&self, path: &Path) -> io::Result<()>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    async fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Names of the entries in a directory.
    async fn list(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
}

/// Reads a whole file made of whole blocks, in large chunks.
pub(crate) async fn read_whole<F: DirectFile>(file: &F, len: u64) -> io::Result<Vec<u8>> {
    const CHUNK_BYTES: usize = 1 << 20;
    let mut out = Vec::with_capacity(len as usize);
    let mut offset = 0u64;
    while offset < len {
        let want = CHUNK_BYTES.min((len - offset) as usize);
        let chunk = file.read_at(offset, want).await?;
        if chunk.len() != want {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        out.extend_from_slice(&chunk);
        offset += want as u64;
    }
    Ok(out)
}
