//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use photondb_storage::io::simulated::SimulatedFileSystem;
use photondb_storage::{
    Backend, Conflict, Durability, DurableBackend, DurableOptions, Mutation, ScanRange, Shape,
    StorageError, StoreOptions, TableId, WriteBatch,
};

pub type Model = BTreeMap<(TableId, Bytes), Bytes>;
pub type Simulated = DurableBackend<SimulatedFileSystem>;

pub fn directory() -> PathBuf {
    PathBuf::from("/data/partition-0000")
}

pub fn wal_path() -> PathBuf {
    directory().join("wal.ring")
}

pub fn superblock_path() -> PathBuf {
    directory().join("superblock")
}

pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(future)
}

pub fn data_path() -> PathBuf {
    directory().join("data.pages")
}

/// Small nodes (many splits and merges with few rows), small inline values
/// (overflow runs for anything over 100 bytes) and a cache of a few pages
/// (nodes are evicted and read back all the time).
pub fn options(ring_bytes: u64) -> DurableOptions {
    DurableOptions {
        ring_bytes,
        store: StoreOptions {
            shape: Shape {
                node_bytes: 512,
                inline_limit: 100,
            },
            cache_bytes: 8 << 10,
        },
    }
}

pub fn create(fs: &SimulatedFileSystem, ring_bytes: u64) -> Simulated {
    block_on(DurableBackend::create(
        fs.clone(),
        &directory(),
        0,
        options(ring_bytes),
    ))
    .expect("create")
}

pub fn open(fs: &SimulatedFileSystem) -> Result<Simulated, StorageError> {
    block_on(DurableBackend::open(
        fs.clone(),
        &directory(),
        0,
        options(0),
    ))
}

pub fn put(
    backend: &Simulated,
    table: TableId,
    key: &[u8],
    value: &[u8],
) -> Result<(), StorageError> {
    let mutation = Mutation::Put {
        table,
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        conflict: Conflict::Replace,
    };
    block_on(backend.write(WriteBatch::new(vec![mutation]), Durability::Hard)).map(|_| ())
}

/// Every row of every table the model knows, read through scans.
pub fn contents(backend: &impl Backend, tables: &[TableId]) -> Model {
    let mut out = Model::new();
    for &table in tables {
        for (key, value) in block_on(backend.scan(table, &ScanRange::all())).expect("scan") {
            out.insert((table, key), value);
        }
    }
    out
}

pub fn value_of(seed: u64, len: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(len);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.push(state as u8);
    }
    Bytes::from(bytes)
}

pub fn assert_corruption_in(result: Result<Simulated, StorageError>, file: &Path) -> String {
    match result {
        Err(error @ StorageError::Corruption { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&file.display().to_string()),
                "error should name {}: {message}",
                file.display()
            );
            message
        }
        Err(other) => panic!("expected corruption in {}, got {other}", file.display()),
        Ok(_) => panic!(
            "expected corruption in {}, but the partition opened",
            file.display()
        ),
    }
}
