//! The thread-per-core runtime and the storage API the layers above use.
//!
//! - [`Engine`]: a `Send + Sync + Clone` handle usable from any thread —
//!   a shard, a tokio runtime, a test. It routes every storage call by the
//!   hash of the encoded primary key to the partition that owns it, fans
//!   scans out to every partition and merges them in key order, and keeps
//!   the catalog.
//! - [`shard`]: one glommio executor pinned per core, owning the partitions
//!   placed on it and running the jobs the bus brings.
//! - [`bus`]: the channels between threads and shards. A job is an owned
//!   closure run on the target shard; nothing is serialized.
//! - [`file`]: the direct-I/O (O_DIRECT, io_uring) implementation of the
//!   storage crate's file seam.
//! - [`data_directory`]: the data directory's identity file (format version
//!   and partition count).
//!
//! glommio appears only in `shard.rs`, `file.rs` and `network.rs`: replacing
//! the runtime (compio, say) touches those three files.

mod bus;
mod catalog_cell;
pub mod data_directory;
mod engine;
mod error;
mod feeds;
pub mod file;
mod indexes;
pub mod network;
mod partition;
mod shard;

pub use engine::{
    block_on_thread, join_all, partition_of, Catalog, Engine, EngineConfig, StorageKind,
};
pub use error::EngineError;
pub use feeds::{FeedEvent, Subscription};
pub use indexes::{IndexCompiler, IndexedRow};
pub use partition::AnyBackend as PartitionBackend;
