//! Storage for one partition of PhotonDB's data.
//!
//! A partition is the unit of durability: its own WAL ring, superblock and
//! checkpoint files under `<data-dir>/partition-NNNN/`. The runtime places
//! partitions on cores; this crate knows nothing of cores, threads or glommio.
//! Everything here is single-threaded (`!Send`) by design: one partition is
//! touched by one core only.
//!
//! Main types:
//! - [`Backend`]: what the layers above call — apply a [`WriteBatch`], point
//!   get, ordered range scan, count, checkpoint. Two implementations:
//!   [`DurableBackend`] (WAL + checkpoints, the default) and
//!   [`MemoryBackend`] (`--storage memory`).
//! - [`io::FileSystem`] / [`io::DirectFile`]: the only way this crate touches
//!   disks. The runtime supplies a direct-I/O implementation; tests supply
//!   [`io::simulated`], which drops un-synced writes, tears writes, flips bits
//!   and fails syncs on demand.
//! - [`wal`]: the ring, its record framing and group commit.
//! - [`checkpoint`]: the double superblock and the checkpoint files.
//! - [`catalog`]: databases, tables and users, stored in a reserved table.
//!
//! Byte formats are described in `docs/design/storage-format.md`.

#![allow(async_fn_in_trait)] // Partitions are single-threaded; futures need not be Send.

pub mod backend;
pub mod batch;
pub mod btree;
pub mod catalog;
pub mod changes;
pub mod checkpoint;
mod cooperate;
mod durable;
mod error;
pub mod index;
pub mod io;
mod join;
mod memory;
pub mod stats;
mod tables;
mod waiters;
pub mod wal;

pub use backend::{Backend, Direction, Durability, RowVisitor, ScanRange};
pub use batch::{Conflict, Mutation, WriteBatch, WriteOutcome};
pub use btree::store::StoreOptions;
pub use btree::tree::Shape;
pub use changes::{ChangeListener, RowChange};
pub use cooperate::yield_now;
pub use durable::{DurableBackend, DurableOptions};
pub use error::StorageError;
pub use index::{Index, IndexFunction};
pub use join::join_all;
pub use memory::MemoryBackend;
pub use stats::PartitionStats;
pub use tables::TableId;
