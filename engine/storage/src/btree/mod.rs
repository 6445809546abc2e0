//! The B+Tree each partition keeps its rows in, in 4 KiB pages of its data
//! file. `node` is the page format, `tree` the copy-on-write algorithm over
//! in-memory nodes, `separators` a branch's keys with the index its
//! searches use, `pager` the data file: the page cache, page allocation
//! and checkpoint writing.

pub mod node;
pub mod pager;
pub mod separators;
pub mod store;
pub mod tree;
