//! The engine handle: routing, fan-out and the catalog.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use photondb_storage::catalog::{self, DatabaseConfig, Entry, TableConfig, UserConfig};
use photondb_storage::{
    Backend, Conflict, Direction, Durability, Mutation, ScanRange, StorageError, TableId,
    WriteBatch, WriteOutcome,
};

use crate::bus::{self, Message};
use crate::data_directory::{self, Identity};
use crate::error::EngineError;
use crate::indexes::{BuildProgress, IndexCatalog, IndexCompiler};
use crate::partition::AnyBackend as PartitionBackend;
use crate::shard::{self, PartitionStorage, ShardPlan};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    Durable,
    Memory,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_directory: PathBuf,
    /// Number of shards (threads), one per core by default.
    pub shards: usize,
    pub storage: StorageKind,
    /// Partition count for a new data directory; an existing one keeps its own.
    pub partitions: u32,
    /// WAL ring size per partition for a new data directory.
    pub wal_ring_bytes: u64,
    /// Memory for cached B-Tree pages, shared out evenly among partitions.
    pub cache_bytes: u64,
    /// Pin shard threads to cores.
    pub pin_to_cores: bool,
    /// Compiles index functions; without one, indexes cannot be created
    /// (and existing ones are not maintained).
    pub index_compiler: Option<Arc<dyn IndexCompiler>>,
}

impl std::fmt::Debug for dyn IndexCompiler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("IndexCompiler")
    }
}

impl EngineConfig {
    pub fn new(data_directory: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
        EngineConfig {
            data_directory: data_directory.into(),
            shards: cores,
            storage: StorageKind::Durable,
            partitions: 8,
            wal_ring_bytes: 64 << 20,
            cache_bytes: 1 << 30,
            pin_to_cores: true,
            index_compiler: None,
        }
    }
}

/// Databases and tables by name. A copy of what partition 0's catalog table
/// holds; every change is written there (hard durability) before it is
/// visible here.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// Keyed by (database id, table name).
    pub tables: BTreeMap<(u128, String), TableConfig>,
    pub users: BTreeMap<String, UserConfig>,
    pub indexes: IndexCatalog,
}

pub(crate) struct Inner {
    inboxes: Vec<flume::Sender<Message>>,
    /// Jobs sent to each shard over the mesh and not yet started there.
    mesh_queued: shard::MeshQueued,
    partitions: u32,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(crate) catalog: crate::catalog_cell::CatalogCell,
    pub(crate) index_compiler: Option<Arc<dyn IndexCompiler>>,
    /// Builds of indexes not ready yet, by index id.
    pub(crate) builds: Mutex<HashMap<TableId, Arc<BuildProgress>>>,
    /// Set once, when `start` finishes.
    recovery: Mutex<std::time::Duration>,
}

/// A handle to the running engine; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// The partition that owns an encoded key. Stable forever: changing it would
/// misplace every stored row.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    crc32c::crc32c(key) % partitions
}

pub(crate) fn new_uuid() -> u128 {
    // Version 4 UUID from the kernel's random source.
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let from_kernel =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if from_kernel.is_err() {
        // std seeds RandomState from the OS too; two hashers give 128 bits.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(nanos);
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    let mut id = u128::from_be_bytes(bytes);
    id = (id & !(0xF000u128 << 64)) | (0x4000u128 << 64);
    id = (id & !(0xC000u128 << 48)) | (0x8000u128 << 48);
    id
}

impl Engine {
    /// Opens (or creates) the data directory and starts one shard per
    /// configured core. Recovery happens here: when this returns, every
    /// partition has replayed its WAL.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        let started = std::time::Instant::now();
        let shards = config.shards.max(1);
        let (partitions, storage, created) = match config.storage {
            StorageKind::Memory => (config.partitions.max(1), PartitionStorage::Memory, true),
            StorageKind::Durable => {
                // glommio opens a relative directory path against a bad
                // descriptor (EBADF), so every path the shards see is absolute.
                let root = std::path::absolute(&config.data_directory).map_err(|error| {
                    EngineError::Startup(format!("{}: {error}", config.data_directory.display()))
                })?;
                let cache_for = |partitions: u32| {
                    (config.cache_bytes / u64::from(partitions.max(1))).max(1 << 20) as usize
                };
                match data_directory::read(&root)? {
                    Some(identity) => {
                        let cache_bytes = cache_for(identity.partitions);
                        (
                            identity.partitions,
                            PartitionStorage::Durable {
                                root,
                                create: false,
                                ring_bytes: 0,
                                cache_bytes,
                            },
                            false,
                        )
                    }
                    None => {
                        data_directory::clear_incomplete(&root)?;
                        let partitions = config.partitions.max(1);
                        let cache_bytes = cache_for(partitions);
                        let storage = PartitionStorage::Durable {
                            root,
                            create: true,
                            ring_bytes: config.wal_ring_bytes,
                            cache_bytes,
                        };
                        (partitions, storage, true)
                    }
                }
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
        let mut inboxes = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        let mesh = shard::new_mesh(shards);
        let mesh_queued: shard::MeshQueued = (0..shards).map(|_| Default::default()).collect();
        let (mesh_joined, joined) = flume::bounded(shards);
        for id in 0..shards {
            let (sender, receiver) = flume::unbounded();
            let plan = ShardPlan {
                id,
                core: config.pin_to_cores.then_some(id % cores),
                partitions: (0..partitions)
                    .filter(|partition| *partition as usize % shards == id)
                    .collect(),
                storage: storage.clone(),
                mesh: mesh.clone(),
                mesh_queued: mesh_queued.clone(),
                mesh_joined: mesh_joined.clone(),
            };
            match shard::start(plan, receiver) {
                Ok(thread) => {
                    inboxes.push(sender);
                    threads.push(thread);
                }
                Err(error) => {
                    stop_shards(&inboxes, threads);
                    return Err(error);
                }
            }
        }
        // Every shard has joined the mesh before the first job is sent, so
        // shard-to-shard calls never take the slower inbox path. (One that
        // cannot join logs why; jobs to it then go through its inbox.)
        for _ in 0..shards {
            if joined
                .recv_timeout(std::time::Duration::from_secs(30))
                .is_err()
            {
                tracing::warn!(
                    "the shards did not all join the mesh; some calls go through inboxes"
                );
                break;
            }
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                inboxes,
                mesh_queued,
                partitions,
                threads: Mutex::new(threads),
                catalog: Default::default(),
                index_compiler: config.index_compiler.clone(),
                builds: Mutex::new(HashMap::new()),
                recovery: Mutex::new(std::time::Duration::ZERO),
            }),
        };
        if created {
            if let PartitionStorage::Durable { root, .. } = &storage {
                data_directory::write(root, Identity { partitions })?;
            }
        }
        engine.load_catalog()?;
        *engine.inner.recovery.lock().expect("recovery lock") = started.elapsed();
        Ok(engine)
    }

    /// How long the start took: every partition opened (its WAL replayed)
    /// and the catalog loaded.
    pub fn recovery_duration(&self) -> std::time::Duration {
        *self.inner.recovery.lock().expect("recovery lock")
    }

    /// Jobs waiting in each shard's inbox (work sent from threads that are
    /// not shards: driver-less callers such as the HTTP API), by shard.
    pub fn inbox_depths(&self) -> Vec<usize> {
        self.inner.inboxes.iter().map(flume::Sender::len).collect()
    }

    /// Jobs other shards sent each shard over the mesh that it has not
    /// started yet, by shard.
    pub fn mesh_depths(&self) -> Vec<usize> {
        self.inner
            .mesh_queued
            .iter()
            .map(|queued| queued.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// Checkpoints every partition and stops the shards.
    pub fn shutdown(&self) -> Result<(), EngineError> {
        let threads = std::mem::take(&mut *self.inner.threads.lock().expect("engine threads lock"));
        let mut result = Ok(());
        for inbox in &self.inner.inboxes {
            let (reply, answer) = flume::bounded(1);
            if inbox.send(Message::Shutdown(reply)).is_ok() {
                if let Ok(Err(error)) = answer.recv() {
                    result = Err(error);
                }
            }
        }
        for thread in threads {
            let _ = thread.join();
        }
        result
    }

    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    pub fn shards(&self) -> usize {
        self.inner.inboxes.len()
    }

    pub(crate) fn shard_inbox(&self, shard: usize) -> &flume::Sender<Message> {
        &self.inner.inboxes[shard]
    }

    fn shard_of(&self, partition: u32) -> usize {
        partition as usize % self.inner.inboxes.len()
    }

    fn inbox_for(&self, partition: u32) -> &flume::Sender<Message> {
        &self.inner.inboxes[self.shard_of(partition)]
    }

    fn route(&self, table: TableId, key: &[u8]) -> u32 {
        if table == TableId::CATALOG {
            0
        } else {
            partition_of(key, self.inner.partitions)
        }
    }

    /// Runs `work` on the shard that owns `partition`, with that partition's
    /// backend: the way to push work to the data instead of data to the work.
    pub async fn run_on_partition<R, W, F>(&self, partition: u32, work: W) -> Result<R, EngineError>
    where
        R: Send + 'static,
        W: FnOnce(std::rc::Rc<PartitionBackend>) -> F + Send + 'static,
        F: std::future::Future<Output = R> + 'static,
    {
        if partition >= self.inner.partitions {
            return Err(EngineError::Catalog(format!(
                "partition {partition} does not exist"
            )));
        }
        bus::call(
            self.shard_of(partition),
            self.inbox_for(partition),
            move |shard| work(shard.partition(partition).clone()),
        )
        .await
    }

    /// Like [`Engine::run_on_partition`], for callers on threads that are
    /// not shards and need a `Send` future (a tokio runtime): the work
    /// always travels through the shard's inbox.
    pub fn run_on_partition_from_outside<R, W, F>(
        &self,
        partition: u32,
        work: W,
    ) -> impl std::future::Future<Output = Result<R, EngineError>> + Send
    where
        R: Send + 'static,
        W: FnOnce(std::rc::Rc<PartitionBackend>) -> F + Send + 'static,
        F: std::future::Future<Output = R> + 'static,
    {
        let partition = partition % self.inner.partitions;
        bus::call_from_outside(self.inbox_for(partition).clone(), move |shard| {
            work(shard.partition(partition).clone())
        })
    }

    // ----- documents -------------------------------------------------------

    /// Applies mutations, each routed to the partition owning its key. The
    /// mutations of one partition form one atomic batch; partitions commit
    /// independently. Outcomes come back in the order given.
    pub async fn write(
        &self,
        mutations: Vec<Mutation>,
        durability: Durability,
    ) -> Result<Vec<WriteOutcome>, EngineError> {
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<Mutation>)> = BTreeMap::new();
        let count = mutations.len();
        for (index, mutation) in mutations.into_iter().enumerate() {
            let partition = match &mutation {
                Mutation::Put { table, key, .. }
                | Mutation::Delete { table, key }
                | Mutation::CompareAndSet { table, key, .. }
                | Mutation::Reindex { table, key, .. } => self.route(*table, key),
                Mutation::DropTable { .. } => {
                    return Err(EngineError::Catalog(
                        "tables are dropped with Engine::drop_table".into(),
                    ));
                }
            };
            let entry = by_partition.entry(partition).or_default();
            entry.0.push(index);
            entry.1.push(mutation);
        }
        let mut pending = Vec::with_capacity(by_partition.len());
        for (partition, (indexes, batch)) in by_partition {
            let call = bus::call(
                self.shard_of(partition),
                self.inbox_for(partition),
                move |shard| async move {
                    let backend = shard.partition(partition).clone();
                    backend.write(WriteBatch::new(batch), durability).await
                },
            );
            pending.push((indexes, call));
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; count];
        // Futures are lazy: polling them together sends every partition's
        // batch before waiting on any.
        let results = join_all(
            pending
                .into_iter()
                .map(|(indexes, call)| async move { (indexes, call.await) }),
        )
        .await;
        for (indexes, result) in results {
            for (index, outcome) in indexes.into_iter().zip(result??) {
                outcomes[index] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every mutation has an outcome"))
            .collect())
    }

    /// Inserts or replaces one document.
    pub async fn put(
        &self,
        table: TableId,
        key: Bytes,
        value: Bytes,
        conflict: Conflict,
        durability: Durability,
    ) -> Result<WriteOutcome, EngineError> {
        let mut outcomes = self
            .write(
                vec![Mutation::Put {
                    table,
                    key,
                    value,
                    conflict,
                }],
                durability,
            )
            .await?;
        Ok(outcomes.remove(0))
    }

    pub async fn delete(
        &self,
        table: TableId,
        key: Bytes,
        durability: Durability,
    ) -> Result<WriteOutcome, EngineError> {
        let mut outcomes = self
            .write(vec![Mutation::Delete { table, key }], durability)
            .await?;
        Ok(outcomes.remove(0))
    }

    pub async fn get(&self, table: TableId, key: Bytes) -> Result<Option<Bytes>, EngineError> {
        let partition = self.route(table, &key);
        let result = bus::call(
            self.shard_of(partition),
            self.inbox_for(partition),
            move |shard| async move { shard.partition(partition).get(table, &key).await },
        )
        .await?;
        Ok(result?)
    }

    /// An ordered scan over the whole table: every partition scans its part
    /// (each up to the limit) and the results are merged in key order.
    pub async fn scan(
        &self,
        table: TableId,
        range: ScanRange,
    ) -> Result<Vec<(Bytes, Bytes)>, EngineError> {
        let partitions: Vec<u32> = if table == TableId::CATALOG {
            vec![0]
        } else {
            (0..self.inner.partitions).collect()
        };
        let calls = partitions.into_iter().map(|partition| {
            let range = range.clone();
            bus::call(
                self.shard_of(partition),
                self.inbox_for(partition),
                move |shard| async move { shard.partition(partition).scan(table, &range).await },
            )
        });
        let mut rows = Vec::new();
        for result in join_all(calls).await {
            rows.extend(result??);
        }
        match range.direction {
            Direction::Ascending => rows.sort_unstable_by(|a, b| a.0.cmp(&b.0)),
            Direction::Descending => rows.sort_unstable_by(|a, b| b.0.cmp(&a.0)),
        }
        rows.truncate(range.limit.unwrap_or(usize::MAX));
        Ok(rows)
    }

    /// An ordered scan of one partition's part of a table, for callers
    /// that merge partitions themselves (each row fetched once).
    pub async fn scan_partition(
        &self,
        table: TableId,
        partition: u32,
        range: ScanRange,
    ) -> Result<Vec<(Bytes, Bytes)>, EngineError> {
        let result = bus::call(
            self.shard_of(partition),
            self.inbox_for(partition),
            move |shard| async move { shard.partition(partition).scan(table, &range).await },
        )
        .await?;
        Ok(result?)
    }

    /// The next batch of a full-table scan in key order, after `after`
    /// (exclusive). An empty batch means the scan is complete.
    pub async fn scan_batch(
        &self,
        table: TableId,
        after: Option<Bytes>,
        rows: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, EngineError> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.scan(
            table,
            ScanRange {
                start,
                end: Bound::Unbounded,
                direction: Direction::Ascending,
                limit: Some(rows),
            },
        )
        .await
    }

    /// Runs `work` on every partition at once, on the shards that own them,
    /// and returns each partition's result (the first error otherwise).
    pub(crate) async fn on_every_partition<R, W, F>(&self, work: W) -> Result<Vec<R>, EngineError>
    where
        R: Send + 'static,
        W: Fn(Rc<PartitionBackend>) -> F + Clone + Send + 'static,
        F: std::future::Future<Output = Result<R, StorageError>> + 'static,
    {
        let calls = (0..self.inner.partitions).map(|partition| {
            let work = work.clone();
            bus::call(
                self.shard_of(partition),
                self.inbox_for(partition),
                move |shard| work(shard.partition(partition).clone()),
            )
        });
        let mut results = Vec::with_capacity(self.inner.partitions as usize);
        for result in join_all(calls).await {
            results.push(result??);
        }
        Ok(results)
    }

    pub async fn count(&self, table: TableId) -> Result<u64, EngineError> {
        let counts = self
            .on_every_partition(move |backend| async move { backend.count(table) })
            .await?;
        Ok(counts.into_iter().sum())
    }

    /// Makes every write so far durable, soft ones included (ReQL `sync`).
    pub async fn sync(&self) -> Result<(), EngineError> {
        self.on_every_partition(|backend| async move { backend.flush().await })
            .await
            .map(|_| ())
    }

    /// Every partition's counters, summed.
    pub async fn storage_stats(&self) -> Result<photondb_storage::PartitionStats, EngineError> {
        let all = self
            .on_every_partition(|backend| async move { Ok::<_, StorageError>(backend.stats()) })
            .await?;
        let mut total = photondb_storage::PartitionStats::default();
        for stats in &all {
            total.merge(stats);
        }
        Ok(total)
    }

    pub async fn checkpoint(&self) -> Result<(), EngineError> {
        self.on_every_partition(|backend| async move { backend.checkpoint().await })
            .await
            .map(|_| ())
    }

    // ----- catalog ---------------------------------------------------------

    fn load_catalog(&self) -> Result<(), EngineError> {
        let rows = block_on_thread(self.scan(TableId::CATALOG, ScanRange::all()))?;
        let mut loaded = Catalog::default();
        for (_, value) in rows {
            match catalog::decode(&value) {
                Some(Entry::Database(database)) => {
                    loaded.databases.insert(database.name.clone(), database);
                }
                Some(Entry::Table(table)) => {
                    loaded
                        .tables
                        .insert((table.database, table.name.clone()), table);
                }
                Some(Entry::User(user)) => {
                    loaded.users.insert(user.name.clone(), user);
                }
                Some(Entry::Index(index)) => {
                    loaded.indexes.insert(index.id, index);
                }
                None => tracing::warn!("skipping a catalog entry this build does not understand"),
            }
        }
        let fresh = loaded.databases.is_empty() && loaded.tables.is_empty();
        // An index whose table is gone (a crash in the middle of a drop).
        let tables: std::collections::BTreeSet<TableId> =
            loaded.tables.values().map(|table| table.id).collect();
        let orphaned: Vec<TableId> = loaded
            .indexes
            .values()
            .filter(|index| !tables.contains(&index.table))
            .map(|index| index.id)
            .collect();
        for index in orphaned {
            loaded.indexes.remove(&index);
            block_on_thread(self.delete(
                TableId::CATALOG,
                Bytes::from(catalog::index_key(index)),
                Durability::Hard,
            ))?;
        }
        let known: std::collections::BTreeSet<TableId> = tables
            .iter()
            .copied()
            .chain(loaded.indexes.keys().copied())
            .collect();
        *self.inner.catalog.write() = loaded;
        block_on_thread(self.remove_orphaned_rows(known))?;
        self.install_indexes()?;
        if fresh {
            // A new cluster starts with database `test`, as RethinkDB's does.
            block_on_thread(self.create_database("test"))?;
        }
        Ok(())
    }

    /// Removes rows of tables the catalog no longer has. A drop removes the
    /// catalog entry first, so a write racing it, or a crash between the two
    /// steps, can leave rows nothing can reach; they go here, at startup.
    async fn remove_orphaned_rows(
        &self,
        known: std::collections::BTreeSet<TableId>,
    ) -> Result<(), EngineError> {
        let removed = self
            .on_every_partition(move |backend| {
                let known = known.clone();
                async move {
                    let orphans: Vec<Mutation> = backend
                        .table_ids()
                        .into_iter()
                        .filter(|table| *table != TableId::CATALOG && !known.contains(table))
                        .map(|table| Mutation::DropTable { table })
                        .collect();
                    let count = orphans.len();
                    if count > 0 {
                        backend
                            .write(WriteBatch::new(orphans), Durability::Hard)
                            .await?;
                    }
                    Ok(count)
                }
            })
            .await?;
        let removed: usize = removed.into_iter().sum();
        if removed > 0 {
            tracing::info!(tables = removed, "removed rows of dropped tables");
        }
        Ok(())
    }

    /// A snapshot of the catalog.
    pub fn catalog(&self) -> Catalog {
        self.inner.catalog.with(Catalog::clone)
    }

    pub fn database(&self, name: &str) -> Option<DatabaseConfig> {
        self.inner
            .catalog
            .with(|catalog| catalog.databases.get(name).cloned())
    }

    pub fn table(&self, database: &str, name: &str) -> Option<TableConfig> {
        self.inner.catalog.with(|catalog| {
            let database = catalog.databases.get(database)?;
            catalog.tables.get(&(database.id, name.to_owned())).cloned()
        })
    }

    pub fn user(&self, name: &str) -> Option<UserConfig> {
        self.inner
            .catalog
            .with(|catalog| catalog.users.get(name).cloned())
    }

    /// Creates or replaces a user (hard durability, before it is visible).
    pub async fn put_user(&self, user: UserConfig) -> Result<(), EngineError> {
        let key = Bytes::from(catalog::user_key(&user.name));
        self.put(
            TableId::CATALOG,
            key,
            Bytes::from(user.encode()),
            Conflict::Replace,
            Durability::Hard,
        )
        .await?;
        self.inner
            .catalog
            .write()
            .users
            .insert(user.name.clone(), user);
        Ok(())
    }

    pub async fn create_database(&self, name: &str) -> Result<DatabaseConfig, EngineError> {
        let database = DatabaseConfig {
            id: new_uuid(),
            name: name.to_owned(),
        };
        {
            // Reserve the name before the write so concurrent creates of the
            // same name cannot both succeed.
            let mut catalog = self.inner.catalog.write();
            if catalog.databases.contains_key(name) {
                return Err(EngineError::Catalog(format!(
                    "Database `{name}` already exists."
                )));
            }
            catalog.databases.insert(name.to_owned(), database.clone());
        }
        let key = Bytes::from(catalog::database_key(database.id));
        let written = self
            .put(
                TableId::CATALOG,
                key,
                Bytes::from(database.encode()),
                Conflict::Replace,
                Durability::Hard,
            )
            .await;
        if let Err(error) = written {
            self.inner.catalog.write().databases.remove(name);
            return Err(error);
        }
        Ok(database)
    }

    pub async fn drop_database(
        &self,
        name: &str,
    ) -> Result<(DatabaseConfig, Vec<TableConfig>), EngineError> {
        let database = self
            .database(name)
            .ok_or_else(|| EngineError::Catalog(format!("Database `{name}` does not exist.")))?;
        let tables: Vec<TableConfig> = {
            let catalog = self.inner.catalog.read();
            catalog
                .tables
                .values()
                .filter(|table| table.database == database.id)
                .cloned()
                .collect()
        };
        for table in &tables {
            self.drop_table(name, &table.name).await?;
        }
        self.delete(
            TableId::CATALOG,
            Bytes::from(catalog::database_key(database.id)),
            Durability::Hard,
        )
        .await?;
        self.inner.catalog.write().databases.remove(name);
        Ok((database, tables))
    }

    pub async fn create_table(
        &self,
        database: &str,
        name: &str,
        primary_key: &str,
        durability: Durability,
    ) -> Result<TableConfig, EngineError> {
        let database_id = self
            .database(database)
            .ok_or_else(|| EngineError::Catalog(format!("Database `{database}` does not exist.")))?
            .id;
        self.create_table_in(database_id, database, name, primary_key, durability)
            .await
    }

    /// A table of a database the catalog does not list (the query layer's
    /// system database), created on first use.
    pub async fn internal_table(
        &self,
        database_id: u128,
        database: &str,
        name: &str,
    ) -> Result<TableConfig, EngineError> {
        if let Some(table) = self
            .inner
            .catalog
            .read()
            .tables
            .get(&(database_id, name.to_owned()))
        {
            return Ok(table.clone());
        }
        match self
            .create_table_in(database_id, database, name, "id", Durability::Hard)
            .await
        {
            Ok(table) => Ok(table),
            // Created by a concurrent first use.
            Err(_) => self
                .inner
                .catalog
                .read()
                .tables
                .get(&(database_id, name.to_owned()))
                .cloned()
                .ok_or_else(|| {
                    EngineError::Catalog(format!("Table `{database}.{name}` could not be created."))
                }),
        }
    }

    async fn create_table_in(
        &self,
        database_id: u128,
        database: &str,
        name: &str,
        primary_key: &str,
        durability: Durability,
    ) -> Result<TableConfig, EngineError> {
        let table = {
            let mut catalog = self.inner.catalog.write();
            let entry = (database_id, name.to_owned());
            if catalog.tables.contains_key(&entry) {
                return Err(EngineError::Catalog(format!(
                    "Table `{database}.{name}` already exists."
                )));
            }
            let table = TableConfig {
                id: TableId(new_uuid()),
                database: database_id,
                name: name.to_owned(),
                primary_key: primary_key.to_owned(),
                durability,
                shards: 1,
            };
            catalog.tables.insert(entry, table.clone());
            table
        };
        let key = Bytes::from(catalog::table_key(table.id));
        let written = self
            .put(
                TableId::CATALOG,
                key,
                Bytes::from(table.encode()),
                Conflict::Replace,
                Durability::Hard,
            )
            .await;
        if let Err(error) = written {
            self.inner
                .catalog
                .write()
                .tables
                .remove(&(table.database, table.name.clone()));
            return Err(error);
        }
        Ok(table)
    }

    /// Replaces a table's configuration (its name, durability or shard
    /// count; never its id, database or primary key), durably.
    pub async fn update_table(&self, table: TableConfig) -> Result<TableConfig, EngineError> {
        let previous = {
            let mut catalog = self.inner.catalog.write();
            let previous = catalog
                .tables
                .values()
                .find(|existing| existing.id == table.id)
                .cloned()
                .ok_or_else(|| {
                    EngineError::Catalog(format!("Table `{}` does not exist.", table.name))
                })?;
            if previous.database != table.database || previous.primary_key != table.primary_key {
                return Err(EngineError::Catalog(
                    "A table's database and primary key cannot be changed.".into(),
                ));
            }
            if previous.name != table.name
                && catalog
                    .tables
                    .contains_key(&(table.database, table.name.clone()))
            {
                let database = catalog
                    .databases
                    .values()
                    .find(|database| database.id == table.database)
                    .map_or("?", |database| database.name.as_str());
                return Err(EngineError::Catalog(format!(
                    "Table `{database}.{}` already exists.",
                    table.name
                )));
            }
            catalog
                .tables
                .remove(&(previous.database, previous.name.clone()));
            catalog
                .tables
                .insert((table.database, table.name.clone()), table.clone());
            previous
        };
        let key = Bytes::from(catalog::table_key(table.id));
        let written = self
            .put(
                TableId::CATALOG,
                key,
                Bytes::from(table.encode()),
                Conflict::Replace,
                Durability::Hard,
            )
            .await;
        if let Err(error) = written {
            let mut catalog = self.inner.catalog.write();
            catalog.tables.remove(&(table.database, table.name.clone()));
            catalog
                .tables
                .insert((previous.database, previous.name.clone()), previous);
            return Err(error);
        }
        Ok(table)
    }

    /// Removes the table from the catalog (durably, first), then its rows
    /// from every partition. Rows of a table no longer in the catalog are
    /// unreachable, so a crash between the two steps loses nothing visible.
    pub async fn drop_table(&self, database: &str, name: &str) -> Result<TableConfig, EngineError> {
        let table = self.table(database, name).ok_or_else(|| {
            EngineError::Catalog(format!("Table `{database}.{name}` does not exist."))
        })?;
        self.delete(
            TableId::CATALOG,
            Bytes::from(catalog::table_key(table.id)),
            Durability::Hard,
        )
        .await?;
        self.inner
            .catalog
            .write()
            .tables
            .remove(&(table.database, table.name.clone()));
        let indexes = self.drop_indexes_of(table.id).await?;
        let drops: Vec<Mutation> = std::iter::once(table.id)
            .chain(indexes)
            .map(|table| Mutation::DropTable { table })
            .collect();
        self.on_every_partition(move |backend| {
            let drops = drops.clone();
            async move {
                backend
                    .write(WriteBatch::new(drops), Durability::Hard)
                    .await
            }
        })
        .await?;
        Ok(table)
    }
}

fn stop_shards(inboxes: &[flume::Sender<Message>], threads: Vec<std::thread::JoinHandle<()>>) {
    for inbox in inboxes {
        let (reply, answer) = flume::bounded(1);
        if inbox.send(Message::Shutdown(reply)).is_ok() {
            let _ = answer.recv();
        }
    }
    for thread in threads {
        let _ = thread.join();
    }
}

pub use photondb_storage::join_all;

/// Runs a future to completion on the calling (non-shard) thread. Used at
/// startup only, before any async runtime of the caller's exists.
pub fn block_on_thread<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::{Arc, Condvar, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    struct Signal {
        ready: Mutex<bool>,
        condvar: Condvar,
    }
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            *self.ready.lock().expect("signal lock") = true;
            self.condvar.notify_one();
        }
    }
    let signal = Arc::new(Signal {
        ready: Mutex::new(false),
        condvar: Condvar::new(),
    });
    let waker = Waker::from(signal.clone());
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        let mut ready = signal.ready.lock().expect("signal lock");
        while !*ready {
            ready = signal.condvar.wait(ready).expect("signal lock");
        }
        *ready = false;
    }
}

impl From<EngineError> for StorageError {
    fn from(error: EngineError) -> StorageError {
        match error {
            EngineError::Storage(error) => error,
            other => StorageError::Io {
                path: PathBuf::new(),
                detail: other.to_string(),
            },
        }
    }
}
