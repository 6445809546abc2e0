//! Checkpoints: the pages a partition's B+Tree changed since the last
//! checkpoint, written to `data.pages`, and the double superblock that says
//! which checkpoint is current.
//!
//! Commit protocol (each step completes before the next starts):
//! 1. freeze the tree (an O(1) clone of its root; nodes are copy-on-write)
//!    at the WAL's appended LSN and make the WAL durable up to it;
//! 2. write the frozen tree's in-memory nodes to free pages (children
//!    before parents, large values to overflow runs), then its metadata run
//!    (root page, row counts, the allocation bitmap), and fdatasync;
//! 3. write the superblock slot not holding the newest checkpoint, fdatasync;
//! 4. let the WAL reuse space before the *previous* checkpoint's LSN; pages
//!    the tree stopped using are reused only once two more checkpoints have
//!    committed.
//!
//! Keeping one checkpoint back means either superblock slot can be lost to a
//! torn write or a flipped bit and recovery still finds a checkpoint whose
//! pages and WAL tail are intact.

pub mod superblock;
