use std::cell::RefCell;

use bytes::Bytes;

use crate::backend::{Backend, Durability, RowVisitor, ScanRange};
use crate::batch::{WriteBatch, WriteOutcome};
use crate::changes::{ChangeListener, ChangeQueue, RowChange};
use crate::error::Result;
use crate::index::{Index, IndexRegistry};
use crate::tables::{TableId, Tables};

/// Tables in memory only (`--storage memory`): nothing survives a restart.
#[derive(Default)]
pub struct MemoryBackend {
    tables: RefCell<Tables>,
    indexes: IndexRegistry,
    changes: ChangeQueue,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Backend for MemoryBackend {
    async fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<Vec<WriteOutcome>> {
        let mut changes = Vec::new();
        let outcomes: Vec<WriteOutcome> = {
            let mut tables = self.tables.borrow_mut();
            batch
                .mutations
                .into_iter()
                .map(|mutation| {
                    let row = mutation
                        .row()
                        .filter(|(table, _)| self.changes.wants(*table))
                        .map(|(table, key)| (table, key.clone()));
                    let indexes = mutation.row().and_then(|(table, _)| self.indexes.of(table));
                    let outcome = tables.apply(mutation, indexes.as_deref());
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
                    outcome
                })
                .collect()
        };
        // Nothing to wait for in memory: released as applied.
        self.changes.record(0, changes);
        self.changes.release(0);
        Ok(outcomes)
    }

    async fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.tables.borrow().get(table, key))
    }

    async fn scan(&self, table: TableId, range: &ScanRange) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self.tables.borrow().scan(table, range))
    }

    async fn visit(
        &self,
        table: TableId,
        range: &ScanRange,
        visitor: &mut dyn RowVisitor,
    ) -> Result<()> {
        self.tables.borrow().visit(table, range, visitor);
        Ok(())
    }

    fn count(&self, table: TableId) -> Result<u64> {
        Ok(self.tables.borrow().count(table))
    }

    fn table_ids(&self) -> Vec<TableId> {
        self.tables.borrow().table_ids().collect()
    }

    fn set_indexes(&self, table: TableId, indexes: Vec<Index>) {
        self.indexes.set(table, indexes);
    }

    fn set_change_listener(&self, listener: std::rc::Rc<dyn ChangeListener>) {
        self.changes.set_listener(listener);
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> Result<()> {
        Ok(())
    }

    fn wants_checkpoint(&self) -> bool {
        false
    }

    fn wants_flush(&self) -> bool {
        false
    }

    fn stats(&self) -> crate::stats::PartitionStats {
        crate::stats::PartitionStats::default()
    }
}
