//! WAL record frame.
//!
//! ```text
//! offset  size  field
//!      0     4  magic  "PWAL" (0x4C415750 little-endian)
//!      4     4  kind   1 = batch, 2 = padding
//!      8     8  lsn        logical position of this header
//!     16     8  flush_lsn  logical position where this record's flush began
//!     24     4  epoch      writer generation: +1 at every open after recovery
//!     28     4  payload_len
//!     32     4  crc32c of bytes 0..32, then of the payload (batch records)
//!     36     4  zero
//!     40     …  payload
//! ```
//! A flush always starts at a block boundary and ends padded to one, so
//! acknowledged bytes are never rewritten. When fewer than `HEADER_BYTES`
//! remain in a block, the rest of the block is zeros and readers skip it.

use crate::io::BLOCK_BYTES;

pub const MAGIC: u32 = u32::from_le_bytes(*b"PWAL");
pub const HEADER_BYTES: usize = 40;
pub const KIND_BATCH: u32 = 1;
pub const KIND_PADDING: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub lsn: u64,
    pub flush_lsn: u64,
    pub epoch: u32,
    pub payload_len: u32,
}

impl Header {
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(&self.lsn.to_le_bytes());
        out.extend_from_slice(&self.flush_lsn.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        let crc = checksum(&out[start..start + 32], payload_for_crc(self.kind, payload));
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Parses a header; `None` if the magic or kind is wrong.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if bytes.len() < HEADER_BYTES || u32_at(0) != MAGIC {
            return None;
        }
        let header = Header {
            kind: u32_at(4),
            lsn: u64_at(8),
            flush_lsn: u64_at(16),
            epoch: u32_at(24),
            payload_len: u32_at(28),
        };
        matches!(header.kind, KIND_BATCH | KIND_PADDING).then_some(header)
    }

    /// Whether the stored checksum matches the header and `payload`.
    pub fn checksum_matches(header_bytes: &[u8], payload: &[u8]) -> bool {
        let kind = u32::from_le_bytes(header_bytes[4..8].try_into().expect("4 bytes"));
        let stored = u32::from_le_bytes(header_bytes[32..36].try_into().expect("4 bytes"));
        stored == checksum(&header_bytes[..32], payload_for_crc(kind, payload))
    }
}

fn payload_for_crc(kind: u32, payload: &[u8]) -> &[u8] {
    // Padding payload is never read, so it is not covered.
    if kind == KIND_BATCH {
        payload
    } else {
        &[]
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), payload)
}

pub fn block_floor(position: u64) -> u64 {
    position - position % BLOCK_BYTES as u64
}

pub fn block_ceil(position: u64) -> u64 {
    position.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}
