//! Secondary indexes across partitions: their catalog entries, their
//! registration with every partition, building them over existing rows,
//! and reading rows through them.
//!
//! The engine does not evaluate index functions; the query layer supplies
//! an [`IndexCompiler`] that turns an index's stored function into an
//! [`IndexFunction`] on each shard thread. Every partition keeps its part
//! of an index beside its rows (see `photondb_storage::index`).
//!
//! Life of an index:
//! 1. `create_index` writes the catalog entry (not ready, hard durability)
//!    and registers the index with every partition: from then on every
//!    write keeps its entries in step.
//! 2. A build thread walks each partition's rows in chunks and writes the
//!    entries of rows written before (`Mutation::Reindex`), then makes them
//!    durable and marks the index ready in the catalog. A restart resumes
//!    the builds of indexes not ready (rewriting entries is harmless).
//! 3. `drop_index` removes the catalog entry first, then unregisters the
//!    index and removes its entries; entries of an index the catalog no
//!    longer has are removed at startup.

use std::collections::HashMap;
use std::ops::Bound;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use photondb_storage::catalog::{self, IndexConfig, TableConfig};
use photondb_storage::{
    Backend, Conflict, Direction, Durability, Index, IndexFunction, Mutation, ScanRange, TableId,
    WriteBatch,
};

use crate::engine::{block_on_thread, new_uuid, Engine};
use crate::error::EngineError;

/// Rows a build reads and indexes per batch.
const BUILD_CHUNK_ROWS: usize = 256;

/// Turns an index's stored function into something a partition can run.
/// Called once per index on every shard thread (the result need not be
/// `Send`).
pub trait IndexCompiler: Send + Sync {
    fn compile(
        &self,
        engine: &Engine,
        index: &IndexConfig,
    ) -> Result<Rc<dyn IndexFunction>, String>;
}

/// How far a build has come.
#[derive(Debug, Default)]
pub struct BuildProgress {
    pub rows_done: AtomicU64,
    pub rows_total: AtomicU64,
    /// Set when the index is dropped: the build stops.
    pub cancelled: AtomicBool,
}

impl BuildProgress {
    /// Between 0 and 1.
    pub fn fraction(&self) -> f64 {
        let total = self.rows_total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        (self.rows_done.load(Ordering::Relaxed) as f64 / total as f64).min(0.999)
    }
}

/// One row read through an index: its entry key (the secondary key part
/// possibly cut, then the primary key), its primary key and the document
/// (`None` if the row went away between reading the entry and the row).
#[derive(Clone, Debug)]
pub struct IndexedRow {
    pub entry: Bytes,
    pub primary: Bytes,
    pub document: Option<Bytes>,
}

impl Engine {
    /// The indexes of a table, by name.
    pub fn indexes_of(&self, table: TableId) -> Vec<IndexConfig> {
        let mut indexes: Vec<IndexConfig> = self.inner.catalog.with(|catalog| {
            catalog
                .indexes
                .values()
                .filter(|index| index.table == table)
                .cloned()
                .collect()
        });
        indexes.sort_by(|a, b| a.name.cmp(&b.name));
        indexes
    }

    pub fn index(&self, table: TableId, name: &str) -> Option<IndexConfig> {
        self.inner.catalog.with(|catalog| {
            catalog
                .indexes
                .values()
                .find(|index| index.table == table && index.name == name)
                .cloned()
        })
    }

    /// How far the build of a not-ready index has come (0 to 1), if one is
    /// running.
    pub fn build_progress(&self, index: TableId) -> Option<f64> {
        self.inner
            .builds
            .lock()
            .expect("builds lock")
            .get(&index)
            .map(|progress| progress.fraction())
    }

    fn qualified_name(&self, table: &TableConfig) -> String {
        let catalog = self.inner.catalog.read();
        let database = catalog
            .databases
            .values()
            .find(|database| database.id == table.database)
            .map_or("?", |database| database.name.as_str());
        format!("{database}.{}", table.name)
    }

    /// Creates an index and starts building it; returns once it is in the
    /// catalog and every later write maintains it.
    pub async fn create_index(
        &self,
        table: &TableConfig,
        name: &str,
        function: String,
        multi: bool,
        geo: bool,
    ) -> Result<IndexConfig, EngineError> {
        if self.inner.index_compiler.is_none() {
            return Err(EngineError::Catalog(
                "This server was started without secondary index support.".into(),
            ));
        }
        let index = IndexConfig {
            id: TableId(new_uuid()),
            table: table.id,
            name: name.to_owned(),
            function,
            multi,
            geo,
            ready: false,
        };
        {
            // Reserve the name before the write: concurrent creates of one
            // name cannot both succeed.
            let mut catalog = self.inner.catalog.write();
            if catalog
                .indexes
                .values()
                .any(|existing| existing.table == table.id && existing.name == name)
            {
                drop(catalog);
                return Err(EngineError::Catalog(format!(
                    "Index `{name}` already exists on table `{}`.",
                    self.qualified_name(table)
                )));
            }
            catalog.indexes.insert(index.id, index.clone());
        }
        if let Err(error) = self.write_index_entry(&index).await {
            self.inner.catalog.write().indexes.remove(&index.id);
            return Err(error);
        }
        self.register_indexes(table.id).await?;
        self.start_build(index.clone());
        Ok(index)
    }

    /// Drops an index: out of the catalog first (durably), then out of
    /// every partition.
    pub async fn drop_index(
        &self,
        table: &TableConfig,
        name: &str,
    ) -> Result<IndexConfig, EngineError> {
        let index = self.index(table.id, name).ok_or_else(|| {
            EngineError::Catalog(format!(
                "Index `{name}` does not exist on table `{}`.",
                self.qualified_name(table)
            ))
        })?;
        self.delete(
            TableId::CATALOG,
            Bytes::from(catalog::index_key(index.id)),
            Durability::Hard,
        )
        .await?;
        self.inner.catalog.write().indexes.remove(&index.id);
        if let Some(progress) = self
            .inner
            .builds
            .lock()
            .expect("builds lock")
            .remove(&index.id)
        {
            progress.cancelled.store(true, Ordering::Relaxed);
        }
        self.register_indexes(table.id).await?;
        self.remove_index_entries(index.id).await?;
        Ok(index)
    }

    /// Renames an index (its entries stay). With `overwrite`, an index
    /// already called `new_name` is dropped first. Returns whether a rename
    /// happened (renaming to the same name does nothing).
    pub async fn rename_index(
        &self,
        table: &TableConfig,
        old_name: &str,
        new_name: &str,
        overwrite: bool,
    ) -> Result<bool, EngineError> {
        let missing_or_taken = || {
            EngineError::Catalog(format!(
                "Index `{old_name}` does not exist or index `{new_name}` already exists on table `{}`.",
                self.qualified_name(table)
            ))
        };
        let mut index = self
            .index(table.id, old_name)
            .ok_or_else(missing_or_taken)?;
        if old_name == new_name {
            return Ok(false);
        }
        if self.index(table.id, new_name).is_some() {
            if !overwrite {
                return Err(missing_or_taken());
            }
            self.drop_index(table, new_name).await?;
        }
        index.name = new_name.to_owned();
        self.write_index_entry(&index).await?;
        self.inner.catalog.write().indexes.insert(index.id, index);
        Ok(true)
    }

    /// Removes every index of a dropped table (catalog entries; the rows
    /// of the indexes go with the table's own).
    pub(crate) async fn drop_indexes_of(
        &self,
        table: TableId,
    ) -> Result<Vec<TableId>, EngineError> {
        let indexes = self.indexes_of(table);
        for index in &indexes {
            self.delete(
                TableId::CATALOG,
                Bytes::from(catalog::index_key(index.id)),
                Durability::Hard,
            )
            .await?;
            self.inner.catalog.write().indexes.remove(&index.id);
            if let Some(progress) = self
                .inner
                .builds
                .lock()
                .expect("builds lock")
                .remove(&index.id)
            {
                progress.cancelled.store(true, Ordering::Relaxed);
            }
        }
        self.register_indexes(table).await?;
        Ok(indexes.into_iter().map(|index| index.id).collect())
    }

    async fn write_index_entry(&self, index: &IndexConfig) -> Result<(), EngineError> {
        let key = Bytes::from(catalog::index_key(index.id));
        self.put(
            TableId::CATALOG,
            key,
            Bytes::from(index.encode()),
            Conflict::Replace,
            Durability::Hard,
        )
        .await
        .map(|_| ())
    }

    async fn remove_index_entries(&self, index: TableId) -> Result<(), EngineError> {
        self.on_every_partition(move |backend| async move {
            backend
                .write(
                    WriteBatch::new(vec![Mutation::DropTable { table: index }]),
                    Durability::Hard,
                )
                .await
        })
        .await?;
        Ok(())
    }

    /// Tells every partition which indexes `table` has now (compiled on
    /// each shard's own thread).
    pub(crate) async fn register_indexes(&self, table: TableId) -> Result<(), EngineError> {
        let Some(compiler) = self.inner.index_compiler.clone() else {
            return Ok(());
        };
        let configs = self.indexes_of(table);
        let engine = self.clone();
        self.on_every_partition(move |backend| {
            let compiled: Vec<Index> = configs
                .iter()
                .filter_map(|config| match compiler.compile(&engine, config) {
                    Ok(function) => Some(Index { id: config.id, function }),
                    Err(error) => {
                        tracing::error!(index = %config.name, %error, "index function does not compile; the index is not maintained");
                        None
                    }
                })
                .collect();
            backend.set_indexes(table, compiled);
            async { Ok::<(), photondb_storage::StorageError>(()) }
        })
        .await?;
        Ok(())
    }

    /// At startup: registers every index and resumes unfinished builds.
    pub(crate) fn install_indexes(&self) -> Result<(), EngineError> {
        let (tables, unfinished): (Vec<TableId>, Vec<IndexConfig>) = {
            let catalog = self.inner.catalog.read();
            // Each table once (its indexes are registered together).
            let tables: std::collections::BTreeSet<TableId> =
                catalog.indexes.values().map(|index| index.table).collect();
            (
                tables.into_iter().collect(),
                catalog
                    .indexes
                    .values()
                    .filter(|index| !index.ready)
                    .cloned()
                    .collect(),
            )
        };
        for table in tables {
            block_on_thread(self.register_indexes(table))?;
        }
        for index in unfinished {
            tracing::info!(index = %index.name, "resuming an index build");
            self.start_build(index);
        }
        Ok(())
    }

    /// Builds an index on a thread of its own; the work itself runs on
    /// the partitions' shards.
    fn start_build(&self, index: IndexConfig) {
        let progress = Arc::new(BuildProgress::default());
        self.inner
            .builds
            .lock()
            .expect("builds lock")
            .insert(index.id, progress.clone());
        let engine = self.clone();
        let spawned = std::thread::Builder::new().name("index-build".into()).spawn(move || {
            if let Err(error) = block_on_thread(engine.build(index.clone(), progress)) {
                tracing::error!(index = %index.name, %error, "index build failed; it resumes at the next start");
            }
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an index build thread");
        }
    }

    async fn build(
        &self,
        mut index: IndexConfig,
        progress: Arc<BuildProgress>,
    ) -> Result<(), EngineError> {
        progress
            .rows_total
            .store(self.count(index.table).await?.max(1), Ordering::Relaxed);
        let builds = (0..self.partitions()).map(|partition| {
            let progress = progress.clone();
            let (table, id) = (index.table, index.id);
            self.run_on_partition(partition, move |backend| async move {
                build_partition(&backend, table, id, &progress).await
            })
        });
        for result in crate::engine::join_all(builds).await {
            result??;
        }
        if progress.cancelled.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Entries were written soft: make them durable before saying so.
        self.sync().await?;
        let current = self.inner.catalog.read().indexes.get(&index.id).cloned();
        let Some(current) = current else {
            return Ok(());
        };
        index = IndexConfig {
            ready: true,
            ..current
        };
        self.write_index_entry(&index).await?;
        self.inner
            .catalog
            .write()
            .indexes
            .insert(index.id, index.clone());
        self.inner
            .builds
            .lock()
            .expect("builds lock")
            .remove(&index.id);
        tracing::info!(index = %index.name, "index ready");
        Ok(())
    }

    /// Up to `limit` rows of one partition read through an index, in entry
    /// order (`range` bounds entry keys).
    pub async fn scan_index_partition(
        &self,
        table: TableId,
        index: TableId,
        partition: u32,
        range: ScanRange,
    ) -> Result<Vec<IndexedRow>, EngineError> {
        let rows = self
            .run_on_partition(partition, move |backend| async move {
                let entries = backend.scan(index, &range).await?;
                let mut rows = Vec::with_capacity(entries.len());
                for (entry, primary) in entries {
                    let document = backend.get(table, &primary).await?;
                    rows.push(IndexedRow {
                        entry,
                        primary,
                        document,
                    });
                }
                Ok::<_, photondb_storage::StorageError>(rows)
            })
            .await??;
        Ok(rows)
    }

    /// How many entries of an index lie in `range`, over every partition
    /// (without reading a document).
    pub async fn count_index_range(
        &self,
        index: TableId,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
    ) -> Result<u64, EngineError> {
        let counts = self
            .on_every_partition(move |backend| {
                let range = ScanRange {
                    start: start.clone(),
                    end: end.clone(),
                    direction: Direction::Ascending,
                    limit: None,
                };
                async move {
                    backend
                        .scan(index, &range)
                        .await
                        .map(|entries| entries.len() as u64)
                }
            })
            .await?;
        Ok(counts.into_iter().sum())
    }
}

/// Writes the entries of every row of one partition, a chunk at a time.
async fn build_partition(
    backend: &crate::partition::AnyBackend,
    table: TableId,
    index: TableId,
    progress: &BuildProgress,
) -> Result<(), EngineError> {
    let mut from = Bound::Unbounded;
    loop {
        if progress.cancelled.load(Ordering::Relaxed) {
            return Ok(());
        }
        let range = ScanRange {
            start: from.clone(),
            end: Bound::Unbounded,
            direction: Direction::Ascending,
            limit: Some(BUILD_CHUNK_ROWS),
        };
        let rows = backend.scan(table, &range).await?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        from = Bound::Excluded(last.clone());
        let count = rows.len();
        let batch = rows
            .into_iter()
            .map(|(key, _)| Mutation::Reindex { table, key, index })
            .collect();
        backend
            .write(WriteBatch::new(batch), Durability::Soft)
            .await?;
        progress
            .rows_done
            .fetch_add(count as u64, Ordering::Relaxed);
        if count < BUILD_CHUNK_ROWS {
            return Ok(());
        }
    }
}

/// Index definitions by id (the catalog's view).
pub type IndexCatalog = HashMap<TableId, IndexConfig>;
