//! The durable backend: tables in memory, made durable by the WAL ring and
//! periodic checkpoints, rebuilt at open by loading the newest checkpoint and
//! replaying the WAL after it.
//!
//! Files in the partition directory:
//! ```text
//! wal.ring                  the WAL ring, preallocated and zero-filled
//! superblock                two slots (see checkpoint::superblock)
//! checkpoint-<seq>.dat      the newest two checkpoints
//! ```

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::backend::{Backend, Durability, ScanRange};
use crate::batch::{decode_operations, encode_operations, Conflict, Mutation, WriteBatch, WriteOutcome};
use crate::checkpoint::superblock::{self, Superblock};
use crate::checkpoint::file as checkpoint_file;
use crate::error::{Result, StorageError};
use crate::io::{read_whole, DirectFile, FileSystem, BLOCK_BYTES};
use crate::tables::{TableId, Tables};
use crate::waiters::Waiters;
use crate::wal::record::block_ceil;
use crate::wal::{replay, Wal};

const WAL_FILE: &str = "wal.ring";
const SUPERBLOCK_FILE: &str = "superblock";

#[derive(Clone, Copy, Debug)]
pub struct DurableOptions {
    /// Size of the WAL ring file; fixed when the partition is created.
    pub ring_bytes: u64,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions { ring_bytes: 64 << 20 }
    }
}

pub struct DurableBackend<S: FileSystem> {
    fs: S,
    directory: PathBuf,
    partition: u32,
    tables: RefCell<Tables>,
    wal: Wal<S::File>,
    superblock_file: S::File,
    superblock_path: PathBuf,
    /// The newest superblock written or loaded.
    newest: Cell<Superblock>,
    checkpointing: Cell<bool>,
    checkpoint_waiters: Waiters,
}

impl<S: FileSystem> DurableBackend<S> {
    /// Creates a new, empty partition in `directory` (which must not hold
    /// one) and makes its files durable before returning.
    pub async fn create(fs: S, directory: &Path, partition: u32, options: DurableOptions) -> Result<Self> {
        let ring_bytes = block_ceil(options.ring_bytes.max(64 * BLOCK_BYTES as u64));
        fs.create_directory(directory).await.map_err(|error| StorageError::io(directory, error))?;
        let wal_path = directory.join(WAL_FILE);
        let wal_file = fs.create(&wal_path).await.map_err(|error| StorageError::io(&wal_path, error))?;
        // Zero-filled rather than fallocated: overwriting written blocks
        // needs no metadata update, so fdatasync stays a data-only flush.
        let zeros = vec![0u8; (1 << 20).min(ring_bytes as usize)];
        let mut offset = 0;
        while offset < ring_bytes {
            let len = zeros.len().min((ring_bytes - offset) as usize);
            wal_file.write_at(offset, &zeros[..len]).await.map_err(|error| StorageError::io(&wal_path, error))?;
            offset += len as u64;
        }
        wal_file.sync_data().await.map_err(|error| StorageError::io(&wal_path, error))?;
        let superblock_path = directory.join(SUPERBLOCK_FILE);
        let superblock_file = fs.create(&superblock_path).await.map_err(|error| StorageError::io(&superblock_path, error))?;
        let first = Superblock {
            sequence: 1,
            checkpoint_lsn: 0,
            wal_epoch: 1,
            partition,
            ring_bytes,
            checkpoint_pages: 0,
            checkpoint_entries: 0,
        };
        let mut both_slots = vec![0u8; 2 * BLOCK_BYTES];
        both_slots[BLOCK_BYTES..].copy_from_slice(&first.encode());
        superblock_file.write_at(0, &both_slots).await.map_err(|error| StorageError::io(&superblock_path, error))?;
        superblock_file.sync_data().await.map_err(|error| StorageError::io(&superblock_path, error))?;
        fs.sync_directory(directory).await.map_err(|error| StorageError::io(directory, error))?;
        if let Some(parent) = directory.parent() {
            fs.sync_directory(parent).await.map_err(|error| StorageError::io(parent, error))?;
        }
        let wal = Wal::new(wal_file, wal_path, partition, ring_bytes, 0, 1, 0);
        Ok(Self::assemble(fs, directory, partition, Tables::default(), wal, superblock_file, superblock_path, first))
    }

    /// Opens an existing partition: loads the newest valid checkpoint and
    /// replays the WAL after it. Fails on any corruption, naming file and
    /// offset.
    pub async fn open(fs: S, directory: &Path, partition: u32) -> Result<Self> {
        let superblock_path = directory.join(SUPERBLOCK_FILE);
        let superblock_file = fs.open(&superblock_path).await.map_err(|error| StorageError::io(&superblock_path, error))?;
        let loaded = superblock::load(&superblock_file, &superblock_path).await?;
        let newest = loaded.newest;
        if newest.partition != partition {
            return Err(StorageError::Incompatible {
                path: superblock_path,
                detail: format!("holds partition {}, expected {partition}", newest.partition),
            });
        }
        let mut tables = Tables::default();
        if newest.checkpoint_pages > 0 || newest.checkpoint_entries > 0 {
            checkpoint_file::read(&fs, directory, newest.sequence, newest.checkpoint_pages, newest.checkpoint_entries, &mut tables)
                .await?;
        }

        let wal_path = directory.join(WAL_FILE);
        let io_error = |error| StorageError::io(&wal_path, error);
        let wal_file = fs.open(&wal_path).await.map_err(io_error)?;
        let size = wal_file.size().await.map_err(io_error)?;
        if size != newest.ring_bytes {
            return Err(StorageError::Corruption {
                path: wal_path.clone(),
                offset: size,
                detail: format!("WAL ring is {size} bytes, the superblock says {}", newest.ring_bytes),
            });
        }
        let ring = read_whole(&wal_file, size).await.map_err(io_error)?;
        let tail = replay(&wal_path, &ring, newest.checkpoint_lsn, newest.wal_epoch, |lsn, payload| {
            let operations = decode_operations(payload).ok_or_else(|| StorageError::Corruption {
                path: wal_path.clone(),
                offset: lsn % size,
                detail: "WAL record passes its checksum but its operations do not decode".into(),
            })?;
            for operation in operations {
                tables.replay(operation);
            }
            Ok(())
        })?;
        drop(ring);
        tracing::debug!(partition, records = tail.records, end_lsn = tail.end_lsn, "WAL replayed");
        let reclaim = loaded.older.map_or(newest.checkpoint_lsn, |older| older.checkpoint_lsn.min(newest.checkpoint_lsn));
        let resume = block_ceil(tail.end_lsn);
        let wal = Wal::new(wal_file, wal_path, partition, newest.ring_bytes, resume, tail.epoch + 1, reclaim);
        Ok(Self::assemble(fs, directory, partition, tables, wal, superblock_file, superblock_path, newest))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        fs: S,
        directory: &Path,
        partition: u32,
        tables: Tables,
        wal: Wal<S::File>,
        superblock_file: S::File,
        superblock_path: PathBuf,
        newest: Superblock,
    ) -> Self {
        DurableBackend {
            fs,
            directory: directory.to_owned(),
            partition,
            tables: RefCell::new(tables),
            wal,
            superblock_file,
            superblock_path,
            newest: Cell::new(newest),
            checkpointing: Cell::new(false),
            checkpoint_waiters: Waiters::default(),
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    pub fn wal_stats(&self) -> crate::wal::ring::WalStats {
        self.wal.stats()
    }

    /// Flushes, checkpoints and closes the files (clean shutdown).
    pub async fn close(self) -> Result<()> {
        if self.wal.poisoned().is_none() {
            self.checkpoint().await?;
        }
        let path = self.superblock_path.clone();
        self.superblock_file.close().await.map_err(|error| StorageError::io(&path, error))?;
        self.wal.close().await
    }

    async fn checkpoint_now(&self) -> Result<()> {
        let lsn = self.wal.appended_lsn();
        let previous = self.newest.get();
        if self.wal.used_bytes() == 0 {
            // Both checkpoints are at the end of the log: nothing to write,
            // no WAL space to free. (Skipping when only the newest one is at
            // the end would never move the reclaim point up to it.)
            return Ok(());
        }
        let epoch = self.wal.epoch();
        let frozen = self.tables.borrow().clone();
        self.wal.wait_durable(lsn).await?;
        let sequence = previous.sequence + 1;
        let written = checkpoint_file::write(&self.fs, &self.directory, sequence, &frozen).await?;
        drop(frozen);
        let next = Superblock {
            sequence,
            checkpoint_lsn: lsn,
            wal_epoch: epoch,
            partition: self.partition,
            ring_bytes: self.wal.ring_bytes(),
            checkpoint_pages: written.pages,
            checkpoint_entries: written.entries,
        };
        superblock::store(&self.superblock_file, &self.superblock_path, &next).await?;
        self.newest.set(next);
        self.wal.set_reclaim(previous.checkpoint_lsn);
        self.remove_checkpoints_before(previous.sequence).await;
        Ok(())
    }

    /// Old checkpoint files are garbage once a newer pair exists; failing to
    /// remove one wastes space but loses nothing, so it is only logged.
    async fn remove_checkpoints_before(&self, sequence: u64) {
        let Ok(entries) = self.fs.list(&self.directory).await else { return };
        for entry in entries {
            let name = entry.to_string_lossy();
            let Some(number) = name.strip_prefix("checkpoint-").and_then(|rest| rest.strip_suffix(".dat")) else {
                continue;
            };
            if number.parse::<u64>().is_ok_and(|number| number < sequence) {
                let path = self.directory.join(&entry);
                if let Err(error) = self.fs.remove(&path).await {
                    tracing::warn!(path = %path.display(), %error, "could not remove an old checkpoint");
                }
            }
        }
    }
}

impl<S: FileSystem> Backend for DurableBackend<S> {
    async fn write(&self, batch: WriteBatch, durability: Durability) -> Result<Vec<WriteOutcome>> {
        let bound = {
            let tables = self.tables.borrow();
            batch.payload_bound(|mutation| match mutation {
                Mutation::Put { table, key, conflict: Conflict::Update, .. } => tables.get(*table, key).map_or(0, |old| old.len()),
                _ => 0,
            })
        };
        if bound > self.wal.max_payload_bytes() {
            return Err(StorageError::WriteTooLarge { bytes: bound, limit: self.wal.max_payload_bytes() });
        }
        while !self.wal.has_room(bound) {
            self.checkpoint().await?;
        }
        // From here to the append nothing awaits: the batch is applied and
        // logged atomically with respect to every other task on this core.
        if let Some(error) = self.wal.poisoned() {
            return Err(error);
        }
        let mut outcomes = Vec::with_capacity(batch.mutations.len());
        let mut operations = Vec::with_capacity(batch.mutations.len());
        {
            let mut tables = self.tables.borrow_mut();
            for mutation in batch.mutations {
                let (outcome, operation) = tables.apply(mutation);
                outcomes.push(outcome);
                operations.extend(operation);
            }
        }
        if operations.is_empty() {
            return Ok(outcomes);
        }
        let end = self.wal.append(&encode_operations(&operations))?;
        if durability == Durability::Hard {
            self.wal.wait_durable(end).await?;
        }
        Ok(outcomes)
    }

    fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.tables.borrow().get(table, key))
    }

    fn scan(&self, table: TableId, range: &ScanRange) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self.tables.borrow().scan(table, range))
    }

    fn count(&self, table: TableId) -> Result<u64> {
        Ok(self.tables.borrow().count(table))
    }

    fn table_ids(&self) -> Vec<TableId> {
        self.tables.borrow().table_ids().collect()
    }

    async fn flush(&self) -> Result<()> {
        self.wal.wait_durable(self.wal.appended_lsn()).await
    }

    async fn checkpoint(&self) -> Result<()> {
        if self.checkpointing.get() {
            // Someone else's checkpoint frees the same space; wait for it.
            while self.checkpointing.get() {
                self.checkpoint_waiters.wait().await;
            }
            return self.wal.poisoned().map_or(Ok(()), Err);
        }
        if let Some(error) = self.wal.poisoned() {
            return Err(error);
        }
        self.checkpointing.set(true);
        let result = self.checkpoint_now().await;
        self.checkpointing.set(false);
        self.checkpoint_waiters.wake_all();
        if let Err(error) = &result {
            // A failed checkpoint write or sync is as fatal as a WAL one.
            self.wal.poison(format!("checkpoint failed: {error}"));
        }
        result
    }

    fn wants_checkpoint(&self) -> bool {
        self.wal.used_bytes() > self.wal.ring_bytes() / 4
    }

    fn wants_flush(&self) -> bool {
        let stats = self.wal.stats();
        stats.appended_lsn > stats.durable_lsn
    }
}
