//! The interface every storage backend offers the layers above.

use std::ops::Bound;

use bytes::Bytes;

use crate::batch::{WriteBatch, WriteOutcome};
use crate::error::Result;
use crate::index::Index;
use crate::tables::TableId;

/// When a write is acknowledged (RethinkDB's `durability` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After the WAL record is written and an fdatasync issued after that
    /// write has returned.
    Hard,
    /// After the change is applied in memory; it reaches the WAL with the
    /// next flush.
    Soft,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ascending,
    Descending,
}

/// What a visit lends each row's key and value to; breaking ends the
/// visit. A closure is one.
pub trait RowVisitor {
    fn row(&mut self, key: &[u8], value: &[u8]) -> std::ops::ControlFlow<()>;

    /// A row the visit reaches soon, whose first bytes were asked of memory
    /// a while ago: the time to prefetch what [`RowVisitor::row`] will read
    /// further in (a field deep in a document). A hint: it may not come,
    /// and it may come for a row the visit stops before.
    fn upcoming(&mut self, _value: &[u8]) {}
}

impl<F: FnMut(&[u8], &[u8]) -> std::ops::ControlFlow<()>> RowVisitor for F {
    fn row(&mut self, key: &[u8], value: &[u8]) -> std::ops::ControlFlow<()> {
        self(key, value)
    }
}

/// An ordered scan over encoded keys.
#[derive(Clone, Debug)]
pub struct ScanRange {
    pub start: Bound<Bytes>,
    pub end: Bound<Bytes>,
    pub direction: Direction,
    pub limit: Option<usize>,
}

impl ScanRange {
    /// Every row, ascending.
    pub fn all() -> Self {
        ScanRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            direction: Direction::Ascending,
            limit: None,
        }
    }

    /// Whether no key can lie in the range (its start is above its end, or
    /// they meet at a bound that excludes it). Ordered maps panic on such
    /// ranges, and `between(2, 1)` asks for one.
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(start), Bound::Included(end)) => start > end,
            (
                Bound::Included(start) | Bound::Excluded(start),
                Bound::Included(end) | Bound::Excluded(end),
            ) => start >= end,
        }
    }
}

/// One partition's storage. Single-threaded: all methods take `&self` and
/// are called from the partition's own core only.
pub trait Backend {
    /// Applies a batch atomically; the outcomes are in mutation order.
    /// Returns once the batch is as durable as `durability` asks.
    async fn write(&self, batch: WriteBatch, durability: Durability) -> Result<Vec<WriteOutcome>>;
    async fn get(&self, table: TableId, key: &[u8]) -> Result<Option<Bytes>>;
    async fn scan(&self, table: TableId, range: &ScanRange) -> Result<Vec<(Bytes, Bytes)>>;
    /// Calls `visitor` with the key and value of every row in `range`, in
    /// its direction, until the visitor breaks (`range.limit` is ignored).
    /// Nothing is copied: the rows are lent while storage holds them, which
    /// is what lets a full scan run at memory speed.
    async fn visit(
        &self,
        table: TableId,
        range: &ScanRange,
        visitor: &mut dyn RowVisitor,
    ) -> Result<()>;
    fn count(&self, table: TableId) -> Result<u64>;
    /// Tables (and indexes) with rows in this partition.
    fn table_ids(&self) -> Vec<TableId>;
    /// Sets the secondary indexes every later write to `table` keeps in
    /// step (none: the table has no indexes). Entries of rows written
    /// before are not touched; see [`crate::Mutation::Reindex`].
    fn set_indexes(&self, table: TableId, indexes: Vec<Index>);
    /// Where changes to rows go, once as durable as their writes asked and
    /// in commit order (see [`crate::changes`]).
    fn set_change_listener(&self, listener: std::rc::Rc<dyn crate::changes::ChangeListener>);
    /// Makes every write applied so far durable (soft writes included).
    async fn flush(&self) -> Result<()>;
    /// Writes a checkpoint so WAL space can be reused; a no-op in memory.
    async fn checkpoint(&self) -> Result<()>;
    /// Whether a checkpoint is due (WAL use past its threshold).
    fn wants_checkpoint(&self) -> bool;
    /// Whether writes are waiting to reach the disk (soft ones, typically).
    fn wants_flush(&self) -> bool;
    /// Counters for metrics.
    fn stats(&self) -> crate::stats::PartitionStats;
}
