//! The durable backend: rows in a copy-on-write B+Tree of 4 KiB pages
//! (`btree`), changes made durable by the WAL ring, and checkpoints that
//! write the pages changed since the last one. At open, the newest valid
//! checkpoint's tree is opened (pages load on demand) and the WAL after it
//! replayed.
//!
//! Files in the partition directory:
//! ```text
//! wal.ring                  the WAL ring, preallocated and zero-filled
//! superblock                two slots (see checkpoint::superblock)
//! data.pages                the B+Tree pages, overflow and metadata runs
//! ```

use std::cell::Cell;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::backend::{Backend, Durability, RowVisitor, ScanRange};
use crate::batch::{
    decode_operations, encode_operations, Conflict, Mutation, WriteBatch, WriteOutcome,
};
use crate::btree::store::{Store, StoreOptions, MAX_KEY_BYTES};
use crate::changes::{ChangeListener, ChangeQueue, RowChange};
use crate::checkpoint::superblock::{self, Superblock};
use crate::error::{Result, StorageError};
use crate::index::{Index, IndexRegistry};
use crate::io::{read_whole, DirectFile, FileSystem, BLOCK_BYTES};
use crate::tables::TableId;
use crate::waiters::Waiters;
use crate::wal::record::block_ceil;
use crate::wal::{replay, Wal};

const WAL_FILE: &str = "wal.ring";
const SUPERBLOCK_FILE: &str = "superblock";
const DATA_FILE: &str = "data.pages";
/// Rows of a dropped table removed per batch.
const DROP_BATCH_ROWS: usize = 256;

#[derive(Clone, Copy, Debug)]
pub struct DurableOptions {
    /// Size of the WAL ring file; fixed when the partition is created.
    pub ring_bytes: u64,
    /// Node sizes and the page cache budget.
    pub store: StoreOptions,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions {
            ring_bytes: 64 << 20,
            store: StoreOptions::default(),
        }
    }
}

pub struct DurableBackend<S: FileSystem> {
    partition: u32,
    store: Store<S::File>,
    wal: Wal<S::File>,
    superblock_file: S::File,
    superblock_path: PathBuf,
    /// The newest superblock written or loaded.
    newest: Cell<Superblock>,
    checkpointing: Cell<bool>,
    checkpoint_waiters: Waiters,
    indexes: IndexRegistry,
    changes: ChangeQueue,
}

impl<S: FileSystem> DurableBackend<S> {
    /// Creates a new, empty partition in `directory` (which must not hold
    /// one) and makes its files durable before returning.
    pub async fn create(
        fs: S,
        directory: &Path,
        partition: u32,
        options: DurableOptions,
    ) -> Result<Self> {
        let ring_bytes = block_ceil(options.ring_bytes.max(64 * BLOCK_BYTES as u64));
        fs.create_directory(directory)
            .await
            .map_err(|error| StorageError::io(directory, error))?;
        let wal_path = directory.join(WAL_FILE);
        let wal_file = fs
            .create(&wal_path)
            .await
            .map_err(|error| StorageError::io(&wal_path, error))?;
        // Zero-filled rather than fallocated: overwriting written blocks
        // needs no metadata update, so fdatasync stays a data-only flush.
        let zeros = vec![0u8; (1 << 20).min(ring_bytes as usize)];
        let mut offset = 0;
        while offset < ring_bytes {
            let len = zeros.len().min((ring_bytes - offset) as usize);
            wal_file
                .write_at(offset, &zeros[..len])
                .await
                .map_err(|error| StorageError::io(&wal_path, error))?;
            offset += len as u64;
        }
        wal_file
            .sync_data()
            .await
            .map_err(|error| StorageError::io(&wal_path, error))?;
        let superblock_path = directory.join(SUPERBLOCK_FILE);
        let superblock_file = fs
            .create(&superblock_path)
            .await
            .map_err(|error| StorageError::io(&superblock_path, error))?;
        let first = Superblock {
            sequence: 1,
            checkpoint_lsn: 0,
            wal_epoch: 1,
            partition,
            ring_bytes,
            metadata_page: 0,
            metadata_pages: 0,
            metadata_bytes: 0,
        };
        let mut both_slots = vec![0u8; 2 * BLOCK_BYTES];
        both_slots[BLOCK_BYTES..].copy_from_slice(&first.encode());
        superblock_file
            .write_at(0, &both_slots)
            .await
            .map_err(|error| StorageError::io(&superblock_path, error))?;
        superblock_file
            .sync_data()
            .await
            .map_err(|error| StorageError::io(&superblock_path, error))?;
        let data_path = directory.join(DATA_FILE);
        let data_file = fs
            .create(&data_path)
            .await
            .map_err(|error| StorageError::io(&data_path, error))?;
        fs.sync_directory(directory)
            .await
            .map_err(|error| StorageError::io(directory, error))?;
        if let Some(parent) = directory.parent() {
            fs.sync_directory(parent)
                .await
                .map_err(|error| StorageError::io(parent, error))?;
        }
        let wal = Wal::new(wal_file, wal_path, partition, ring_bytes, 0, 1, 0);
        let store = Store::create(data_file, data_path, options.store, first.sequence);
        Ok(Self::assemble(
            partition,
            store,
            wal,
            superblock_file,
            superblock_path,
            first,
        ))
    }

    /// Opens an existing partition: loads the newest valid checkpoint and
    /// replays the WAL after it. Fails on any corruption, naming file and
    /// offset.
    pub async fn open(
        fs: S,
        directory: &Path,
        partition: u32,
        options: DurableOptions,
    ) -> Result<Self> {
        let superblock_path = directory.join(SUPERBLOCK_FILE);
        let superblock_file = fs
            .open(&superblock_path)
            .await
            .map_err(|error| StorageError::io(&superblock_path, error))?;
        let loaded = superblock::load(&superblock_file, &superblock_path).await?;
        let newest = loaded.newest;
        if newest.partition != partition {
            return Err(StorageError::Incompatible {
                path: superblock_path,
                detail: format!("holds partition {}, expected {partition}", newest.partition),
            });
        }
        let data_path = directory.join(DATA_FILE);
        let data_file = fs
            .open(&data_path)
            .await
            .map_err(|error| StorageError::io(&data_path, error))?;
        let store = Store::open(
            data_file,
            data_path,
            options.store,
            newest.sequence,
            (
                newest.metadata_page,
                newest.metadata_pages,
                newest.metadata_bytes,
            ),
            loaded
                .older
                .map(|older| (older.metadata_page, older.metadata_pages)),
        )
        .await?;

        let wal_path = directory.join(WAL_FILE);
        let io_error = |error| StorageError::io(&wal_path, error);
        let wal_file = fs.open(&wal_path).await.map_err(io_error)?;
        let size = wal_file.size().await.map_err(io_error)?;
        if size != newest.ring_bytes {
            return Err(StorageError::Corruption {
                path: wal_path.clone(),
                offset: size,
                detail: format!(
                    "WAL ring is {size} bytes, the superblock says {}",
                    newest.ring_bytes
                ),
            });
        }
        let ring = read_whole(&wal_file, size).await.map_err(io_error)?;
        // The records are checked and decoded first, then applied (applying
        // may read pages, which the replay callback cannot wait for).
        let mut operations = Vec::new();
        let tail = replay(
            &wal_path,
            &ring,
            newest.checkpoint_lsn,
            newest.wal_epoch,
            |lsn, payload| {
                operations.extend(decode_operations(payload).ok_or_else(|| {
                    StorageError::Corruption {
                        path: wal_path.clone(),
                        offset: lsn % size,
                        detail: "WAL record passes its checksum but its operations do not decode"
                            .into(),
                    }
                })?);
                Ok(())
            },
        )?;
        drop(ring);
        for operation in operations {
            store.replay(operation).await?;
        }
        tracing::debug!(
            partition,
            records = tail.records,
            end_lsn = tail.end_lsn,
            "WAL replayed"
        );
        let reclaim = loaded.older.map_or(newest.checkpoint_lsn, |older| {
            older.checkpoint_lsn.min(newest.checkpoint_lsn)
        });
        let resume = block_ceil(tail.end_lsn);
        let wal = Wal::new(
            wal_file,
            wal_path,
            partition,
            newest.ring_bytes,
            resume,
            tail.epoch + 1,
            reclaim,
        );
        Ok(Self::assemble(
            partition,
            store,
            wal,
            superblock_file,
            superblock_path,
            newest,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        partition: u32,
        store: Store<S::File>,
        wal: Wal<S::File>,
        superblock_file: S::File,
        superblock_path: PathBuf,
        newest: Superblock,
    ) -> Self {
        DurableBackend {
            partition,
            store,
            wal,
            superblock_file,
            superblock_path,
            newest: Cell::new(newest),
            checkpointing: Cell::new(false),
            checkpoint_waiters: Waiters::default(),
            indexes: IndexRegistry::default(),
            changes: ChangeQueue::default(),
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
        self.superblock_file
            .close()
            .await
            .map_err(|error| StorageError::io(&path, error))?;
        self.store.close().await?;
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
        let sequence = previous.sequence + 1;
        let frozen = self.store.freeze(sequence);
        self.wal.wait_durable(lsn).await?;
        let written = self.store.write(&frozen).await?;
        let next = Superblock {
            sequence,
            checkpoint_lsn: lsn,
            wal_epoch: epoch,
            partition: self.partition,
            ring_bytes: self.wal.ring_bytes(),
            metadata_page: written.metadata_page,
            metadata_pages: written.metadata_pages,
            metadata_bytes: written.metadata_bytes,
        };
        superblock::store(&self.superblock_file, &self.superblock_path, &next).await?;
        self.newest.set(next);
        self.store.committed(frozen, written);
        self.wal.set_reclaim(previous.checkpoint_lsn);
        Ok(())
    }

    /// Pages in the data file and how many are in use; bytes of clean
    /// pages cached.
    pub fn page_stats(&self) -> (u64, u64, usize) {
        let (pages, used) = self.store.page_counts();
        (pages, used, self.store.cached_bytes())
    }

    /// Removes a table's rows in batches, each logged like any delete, so
    /// a crash in the middle leaves rows to remove again, never a half
    /// applied batch. (The table is gone from the catalog already; startup
    /// removes what a crash left.)
    async fn drop_table(&self, table: TableId, durability: Durability) -> Result<()> {
        loop {
            let keys = self.store.first_keys(table, DROP_BATCH_ROWS).await?;
            if keys.is_empty() {
                return Ok(());
            }
            let deletes = keys
                .into_iter()
                .map(|key| Mutation::Delete { table, key })
                .collect();
            self.write_rows(deletes, durability).await?;
        }
    }

    /// Applies row mutations atomically and logs them as one record.
    async fn write_rows(
        &self,
        mutations: Vec<Mutation>,
        durability: Durability,
    ) -> Result<Vec<WriteOutcome>> {
        if let Some((_, key)) = mutations
            .iter()
            .filter_map(Mutation::row)
            .find(|(_, key)| key.len() > MAX_KEY_BYTES)
        {
            return Err(StorageError::KeyTooLong {
                bytes: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        let batch = WriteBatch::new(mutations);
        let prepared = loop {
            let prepared = self.store.prepare(&batch.mutations, &self.indexes).await?;
            // Updates merge into the stored document, which may grow it.
            let bound = prepared.index_payload_bytes()
                + batch.payload_bound(|mutation| match mutation {
                    Mutation::Put {
                        key,
                        conflict: Conflict::Update,
                        ..
                    } => key.len() + self.store.stored_length(mutation),
                    _ => 0,
                });
            if bound > self.wal.max_payload_bytes() {
                return Err(StorageError::WriteTooLarge {
                    bytes: bound,
                    limit: self.wal.max_payload_bytes(),
                });
            }
            if self.wal.has_room(bound) {
                break prepared;
            }
            drop(prepared);
            self.checkpoint().await?;
        };
        // From here to the append nothing awaits: the batch is applied and
        // logged atomically with respect to every other task on this core.
        if let Some(error) = self.wal.poisoned() {
            return Err(error);
        }
        let mut outcomes = Vec::with_capacity(batch.mutations.len());
        let mut operations = Vec::with_capacity(batch.mutations.len());
        let mut changes = Vec::new();
        for mutation in batch.mutations {
            let row = mutation
                .row()
                .filter(|(table, _)| self.changes.wants(*table))
                .map(|(table, key)| (table, key.clone()));
            let (outcome, logged) = self.store.apply(&prepared, mutation, &self.indexes);
            if let Some((table, key)) = row {
                if !outcome.conflicted && outcome.old != outcome.new {
                    changes.push(RowChange {
                        table,
                        key,
                        old: outcome.old.clone(),
                        new: outcome.new.clone(),
                    });
                }
            }
            outcomes.push(outcome);
            operations.extend(logged);
        }
        drop(prepared);
        if operations.is_empty() {
            return Ok(outcomes);
        }
        let end = self.wal.append(&encode_operations(&operations))?;
        self.changes.record(
            if durability == Durability::Hard {
                end
            } else {
                0
            },
            changes,
        );
        if durability == Durability::Hard {
            self.wal.wait_durable(end).await?;
        }
        self.changes.release(self.wal.stats().durable_lsn);
        Ok(outcomes)
    }
}

impl<S: FileSystem> Backend for DurableBackend<S> {
    async fn write(&self, batch: WriteBatch, durability: Durability) -> Result<Vec<WriteOutcome>> {
        if let Some(error) = self.wal.poisoned() {
            return Err(error);
        }
        // Dropping a table takes many batches of its own.
        if batch
            .mutations
            .iter()
            .any(|mutation| matches!(mutation, Mutation::DropTable { .. }))
        {
            let mut outcomes = Vec::with_capacity(batch.mutations.len());
            for mutation in batch.mutations {
                match mutation {
                    Mutation::DropTable { table } => {
                        self.drop_table(table, durability).await?;
                        outcomes.push(WriteOutcome {
                            old: None,
                            new: None,
                            conflicted: false,
                        });
                    }
                    row => outcomes.extend(self.write_rows(vec![row], durability).await?),
                }
            }
            return Ok(outcomes);
        }
        self.write_rows(batch.mutations, durability).await
    }

    async fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        self.store.get(table, key).await
    }

    async fn scan(&self, table: TableId, range: &ScanRange) -> Result<Vec<(Bytes, Bytes)>> {
        self.store.scan(table, range).await
    }

    async fn visit(
        &self,
        table: TableId,
        range: &ScanRange,
        visitor: &mut dyn RowVisitor,
    ) -> Result<()> {
        self.store.visit(table, range, visitor).await
    }

    fn count(&self, table: TableId) -> Result<u64> {
        Ok(self.store.count(table))
    }

    fn table_ids(&self) -> Vec<TableId> {
        self.store.table_ids()
    }

    fn set_indexes(&self, table: TableId, indexes: Vec<Index>) {
        self.indexes.set(table, indexes);
    }

    fn set_change_listener(&self, listener: std::rc::Rc<dyn ChangeListener>) {
        self.changes.set_listener(listener);
    }

    async fn flush(&self) -> Result<()> {
        self.wal.wait_durable(self.wal.appended_lsn()).await?;
        // Changes of hard writes whose writers went away are released here.
        self.changes.release(self.wal.stats().durable_lsn);
        Ok(())
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

    /// After a quarter of the ring has been logged since the newest
    /// checkpoint. The ring keeps the log back to the checkpoint before
    /// that one (its superblock slot is the fallback), so two such
    /// stretches fill half of it and the other half takes the writes that
    /// arrive while the checkpoint is written. (Counting from the reclaim
    /// point instead checkpointed every eighth of the ring: each
    /// checkpoint rewrites every node changed since the last, so that
    /// doubled what a bulk load wrote.)
    fn wants_checkpoint(&self) -> bool {
        let since_newest = self
            .wal
            .appended_lsn()
            .saturating_sub(self.newest.get().checkpoint_lsn);
        since_newest > self.wal.ring_bytes() / 4
    }

    fn stats(&self) -> crate::stats::PartitionStats {
        let wal = self.wal.stats();
        let histograms = self.wal.histograms();
        let (cache_hits, cache_misses) = self.store.cache_counts();
        crate::stats::PartitionStats {
            wal_bytes_written: wal.bytes_written,
            wal_flushes: wal.flushes,
            sync_seconds: histograms.sync_seconds,
            group_commit_records: histograms.group_commit_records,
            cache_hits,
            cache_misses,
            cached_bytes: self.store.cached_bytes() as u64,
            poisoned_partitions: u64::from(self.wal.poisoned().is_some()),
        }
    }

    fn wants_flush(&self) -> bool {
        let stats = self.wal.stats();
        stats.appended_lsn > stats.durable_lsn || self.changes.is_waiting()
    }
}
