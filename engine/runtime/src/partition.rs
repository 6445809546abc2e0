//! The backend a partition runs on, chosen at startup.

use bytes::Bytes;
use photondb_storage::{
    Backend, Durability, DurableBackend, MemoryBackend, RowVisitor, ScanRange, TableId, WriteBatch,
    WriteOutcome,
};

use crate::file::DirectFileSystem;

type StorageResult<T> = Result<T, photondb_storage::StorageError>;

/// Static dispatch over the two backends (their async trait methods are not
/// object-safe, and a match costs nothing next to the work behind it).
pub enum AnyBackend {
    Durable(DurableBackend<DirectFileSystem>),
    Memory(MemoryBackend),
}

macro_rules! delegate {
    ($self:ident, $backend:ident => $call:expr) => {
        match $self {
            AnyBackend::Durable($backend) => $call,
            AnyBackend::Memory($backend) => $call,
        }
    };
}

impl Backend for AnyBackend {
    async fn write(
        &self,
        batch: WriteBatch,
        durability: Durability,
    ) -> StorageResult<Vec<WriteOutcome>> {
        delegate!(self, backend => backend.write(batch, durability).await)
    }

    async fn get(&self, table: TableId, key: &[u8]) -> StorageResult<Option<Bytes>> {
        delegate!(self, backend => backend.get(table, key).await)
    }

    async fn scan(&self, table: TableId, range: &ScanRange) -> StorageResult<Vec<(Bytes, Bytes)>> {
        delegate!(self, backend => backend.scan(table, range).await)
    }

    async fn visit(
        &self,
        table: TableId,
        range: &ScanRange,
        visitor: &mut dyn RowVisitor,
    ) -> StorageResult<()> {
        delegate!(self, backend => backend.visit(table, range, visitor).await)
    }

    fn count(&self, table: TableId) -> StorageResult<u64> {
        delegate!(self, backend => backend.count(table))
    }

    fn table_ids(&self) -> Vec<TableId> {
        delegate!(self, backend => backend.table_ids())
    }

    fn set_indexes(&self, table: TableId, indexes: Vec<photondb_storage::Index>) {
        delegate!(self, backend => backend.set_indexes(table, indexes))
    }

    fn set_change_listener(&self, listener: std::rc::Rc<dyn photondb_storage::ChangeListener>) {
        delegate!(self, backend => backend.set_change_listener(listener))
    }

    async fn flush(&self) -> StorageResult<()> {
        delegate!(self, backend => backend.flush().await)
    }

    async fn checkpoint(&self) -> StorageResult<()> {
        delegate!(self, backend => backend.checkpoint().await)
    }

    fn wants_checkpoint(&self) -> bool {
        delegate!(self, backend => backend.wants_checkpoint())
    }

    fn wants_flush(&self) -> bool {
        delegate!(self, backend => backend.wants_flush())
    }

    fn stats(&self) -> photondb_storage::PartitionStats {
        delegate!(self, backend => backend.stats())
    }
}
