//! Reading the ring back at recovery.
//!
//! From the checkpoint LSN, records are read in order while they are valid:
//! right magic and kind, `lsn` equal to their position, checksum good, and an
//! epoch that is the current one — or a newer one, on a record that starts a
//! flush at a block boundary (the first flush after an earlier recovery).
//!
//! The first invalid record ends the log, unless the next block starts a
//! flush of a newer epoch: then the invalid bytes are the torn tail an
//! earlier recovery already stepped over, and replay goes on from there.
//!
//! At the end, every block boundary in the rest of the ring is checked for a
//! valid record of the current (or newer) epoch whose flush began *after* the
//! end. Flushes are written one at a time, so such a record proves that an
//! acknowledged flush sits beyond the damage: that is corruption, and replay
//! fails naming the file and offset instead of dropping acknowledged writes.
//! Valid records whose flush began at or before the end belong to the torn
//! flush itself, which was never acknowledged.

use std::path::Path;

use super::record::{block_ceil, Header, HEADER_BYTES, KIND_BATCH};
use crate::error::{Result, StorageError};
use crate::io::BLOCK_BYTES;

/// Where replay stopped: the writer resumes at `end_lsn` rounded up to a
/// block, in an epoch above `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayTail {
    pub end_lsn: u64,
    pub epoch: u32,
    pub records: u64,
}

struct Ring<'a> {
    bytes: &'a [u8],
    ring_bytes: u64,
}

enum Slot<'a> {
    Valid { header: Header, payload: &'a [u8] },
    Invalid,
}

impl<'a> Ring<'a> {
    /// The record at logical `lsn`, checked against its position.
    fn record_at(&self, lsn: u64) -> Slot<'a> {
        let physical = (lsn % self.ring_bytes) as usize;
        let Some(header_bytes) = self.bytes.get(physical..physical + HEADER_BYTES) else {
            return Slot::Invalid;
        };
        let Some(header) = Header::parse(header_bytes) else {
            return Slot::Invalid;
        };
        if header.lsn != lsn {
            return Slot::Invalid;
        }
        let payload_end = physical + HEADER_BYTES + header.payload_len as usize;
        if payload_end as u64 > self.ring_bytes {
            return Slot::Invalid;
        }
        let payload = if header.kind == KIND_BATCH {
            &self.bytes[physical + HEADER_BYTES..payload_end]
        } else {
            &[][..]
        };
        if !Header::checksum_matches(header_bytes, payload) {
            return Slot::Invalid;
        }
        Slot::Valid { header, payload }
    }
}

/// Replays the ring held in `ring` (the whole file) from `start_lsn`,
/// calling `apply(lsn, payload)` for each batch record in order.
pub fn replay(
    path: &Path,
    ring: &[u8],
    start_lsn: u64,
    start_epoch: u32,
    mut apply: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<ReplayTail> {
    let ring = Ring {
        bytes: ring,
        ring_bytes: ring.len() as u64,
    };
    let block = BLOCK_BYTES as u64;
    let limit = start_lsn + ring.ring_bytes;
    let mut position = start_lsn;
    let mut epoch = start_epoch;
    let mut records = 0;
    while position < limit {
        if block - position % block < HEADER_BYTES as u64 {
            position = block_ceil(position);
            continue;
        }
        match ring.record_at(position) {
            Slot::Valid { header, payload } if accepts_epoch(&header, epoch, position) => {
                epoch = header.epoch;
                if header.kind == KIND_BATCH {
                    apply(position, payload)?;
                    records += 1;
                }
                position += (HEADER_BYTES + header.payload_len as usize) as u64;
            }
            _ => {
                let next_block = block_ceil(position);
                if next_block != position && next_block < limit {
                    if let Slot::Valid { header, .. } = ring.record_at(next_block) {
                        if header.epoch > epoch && header.flush_lsn == next_block {
                            position = next_block;
                            continue;
                        }
                    }
                }
                break;
            }
        }
    }
    check_nothing_acknowledged_beyond(path, &ring, position, epoch, limit)?;
    Ok(ReplayTail {
        end_lsn: position,
        epoch,
        records,
    })
}

fn accepts_epoch(header: &Header, current: u32, position: u64) -> bool {
    header.epoch == current
        || (header.epoch > current
            && header.flush_lsn == position
            && position % BLOCK_BYTES as u64 == 0)
}

fn check_nothing_acknowledged_beyond(
    path: &Path,
    ring: &Ring,
    end: u64,
    epoch: u32,
    limit: u64,
) -> Result<()> {
    let mut candidate = block_ceil(end);
    if candidate == end {
        candidate += BLOCK_BYTES as u64;
    }
    while candidate < limit {
        if let Slot::Valid { header, .. } = ring.record_at(candidate) {
            if header.epoch >= epoch && header.flush_lsn > end {
                return Err(StorageError::Corruption {
                    path: path.to_owned(),
                    offset: end % ring.ring_bytes,
                    detail: format!(
                        "invalid WAL record at LSN {end} is followed by a valid record at LSN {} (offset {}): \
                         acknowledged writes lie beyond damaged bytes",
                        header.lsn,
                        candidate % ring.ring_bytes
                    ),
                });
            }
        }
        candidate += BLOCK_BYTES as u64;
    }
    Ok(())
}
