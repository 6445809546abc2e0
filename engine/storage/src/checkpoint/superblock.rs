//! The superblock: two 4 KiB slots, written alternately.
//!
//! ```text
//! offset size field
//!      0    4 magic "PSUP"
//!      4    4 format version (2)
//!      8    8 sequence        (higher is newer)
//!     16    8 checkpoint_lsn  WAL replay starts here
//!     24    4 wal_epoch       epoch of the writer when the checkpoint was taken
//!     28    4 partition
//!     32    8 ring_bytes
//!     40    8 metadata_page   first page of the checkpoint's metadata run in
//!                             data.pages (0: the partition was empty)
//!     48    8 metadata_pages  pages in that run
//!     56    8 metadata_bytes  bytes of metadata in it
//!     64    4 crc32c of bytes 0..64
//! ```

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::io::{DirectFile, BLOCK_BYTES};

const MAGIC: u32 = u32::from_le_bytes(*b"PSUP");
pub const FORMAT_VERSION: u32 = 2;
const USED_BYTES: usize = 68;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub sequence: u64,
    pub checkpoint_lsn: u64,
    pub wal_epoch: u32,
    pub partition: u32,
    pub ring_bytes: u64,
    pub metadata_page: u64,
    pub metadata_pages: u64,
    pub metadata_bytes: u64,
}

impl Superblock {
    /// The slot this superblock is written to.
    pub fn slot(&self) -> u64 {
        self.sequence % 2
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BLOCK_BYTES);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.checkpoint_lsn.to_le_bytes());
        out.extend_from_slice(&self.wal_epoch.to_le_bytes());
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&self.ring_bytes.to_le_bytes());
        out.extend_from_slice(&self.metadata_page.to_le_bytes());
        out.extend_from_slice(&self.metadata_pages.to_le_bytes());
        out.extend_from_slice(&self.metadata_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.resize(BLOCK_BYTES, 0);
        out
    }

    /// `Ok(None)` for a slot never written (all zeros); an error names what
    /// is wrong with a slot that was written and is now damaged.
    fn decode(bytes: &[u8]) -> std::result::Result<Option<Superblock>, String> {
        if bytes.len() < USED_BYTES {
            return Err("slot is truncated".into());
        }
        if bytes.iter().all(|&byte| byte == 0) {
            return Ok(None);
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return Err("bad magic".into());
        }
        if crc32c::crc32c(&bytes[..64]) != u32_at(64) {
            return Err("checksum mismatch".into());
        }
        if u32_at(4) != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                u32_at(4)
            ));
        }
        Ok(Some(Superblock {
            sequence: u64_at(8),
            checkpoint_lsn: u64_at(16),
            wal_epoch: u32_at(24),
            partition: u32_at(28),
            ring_bytes: u64_at(32),
            metadata_page: u64_at(40),
            metadata_pages: u64_at(48),
            metadata_bytes: u64_at(56),
        }))
    }
}

/// What the two slots hold.
#[derive(Debug)]
pub struct Loaded {
    /// The newest valid slot: recovery starts from it.
    pub newest: Superblock,
    /// The other slot, when it is valid too.
    pub older: Option<Superblock>,
}

/// Reads both slots. One damaged slot is tolerated (a torn superblock write,
/// or a flipped bit: the other slot and its intact WAL still describe every
/// acknowledged write); two are not.
pub async fn load<F: DirectFile>(file: &F, path: &Path) -> Result<Loaded> {
    let bytes = file
        .read_at(0, 2 * BLOCK_BYTES)
        .await
        .map_err(|error| StorageError::io(path, error))?;
    let mut valid = Vec::new();
    let mut damage = Vec::new();
    for slot in 0..2 {
        let start = slot * BLOCK_BYTES;
        match Superblock::decode(bytes.get(start..start + BLOCK_BYTES).unwrap_or(&[])) {
            Ok(Some(superblock)) => valid.push(superblock),
            Ok(None) => {}
            Err(detail) => damage.push((start as u64, detail)),
        }
    }
    valid.sort_by_key(|superblock| std::cmp::Reverse(superblock.sequence));
    for (offset, detail) in &damage {
        tracing::warn!(path = %path.display(), offset, detail, "superblock slot damaged; using the other slot");
    }
    match valid.len() {
        0 => {
            let (offset, detail) = damage
                .into_iter()
                .next()
                .unwrap_or((0, "no superblock was ever written".into()));
            Err(StorageError::Corruption {
                path: path.to_owned(),
                offset,
                detail: format!("no valid superblock: {detail}"),
            })
        }
        _ => Ok(Loaded {
            newest: valid[0],
            older: valid.get(1).copied(),
        }),
    }
}

pub async fn store<F: DirectFile>(file: &F, path: &Path, superblock: &Superblock) -> Result<()> {
    let io_error = |error| StorageError::io(path, error);
    file.write_at(superblock.slot() * BLOCK_BYTES as u64, &superblock.encode())
        .await
        .map_err(io_error)?;
    file.sync_data().await.map_err(io_error)
}
