//! The write-ahead log: a preallocated ring file of framed records.
//!
//! - [`record`]: the frame (magic, kind, LSN, flush LSN, epoch, length,
//!   crc32c) and its validity rules.
//! - [`ring`]: appending, group commit and the durable LSN.
//! - [`replay`]: reading the ring back at recovery, telling a torn tail from
//!   corruption.
//!
//! An LSN is a byte position in the log's infinite logical stream; the ring
//! offset is `lsn % ring_bytes`. Because the LSN is in every record, a record
//! left from an earlier lap of the ring never matches its position.

pub mod record;
pub mod replay;
pub mod ring;

pub use replay::{replay, ReplayTail};
pub use ring::Wal;
