//! Checkpoints: a frozen view of the partition written to its own file, and
//! the double superblock that says which checkpoint is current.
//!
//! Commit protocol (each step completes before the next starts):
//! 1. freeze the tables (an O(1) persistent-map clone) at the WAL's appended
//!    LSN and make the WAL durable up to it;
//! 2. write `checkpoint-<sequence>.dat`, fdatasync it, fsync the directory;
//! 3. write the superblock slot not holding the newest checkpoint, fdatasync;
//! 4. let the WAL reuse space before the *previous* checkpoint's LSN, and
//!    delete checkpoint files older than the previous one.
//!
//! Keeping one checkpoint back means either superblock slot can be lost to a
//! torn write or a flipped bit and recovery still finds a checkpoint whose
//! WAL tail is intact.

pub mod file;
pub mod superblock;
