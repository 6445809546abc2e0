//! The ordered contents of a partition's tables.
//!
//! Each table is a persistent ordered map from encoded key to encoded
//! document. Cloning [`Tables`] is O(number of tables) and shares every node,
//! which is what lets a checkpoint write a frozen view while writes go on.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;

use crate::backend::{Direction, RowVisitor, ScanRange};
use crate::batch::{decide_indexed, Mutation, WalOperation, WriteOutcome};
use crate::index::Index;

/// A table's identity: the 128 bits of its UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u128);

impl TableId {
    /// The reserved table that holds the catalog (partition 0 only).
    pub const CATALOG: TableId = TableId(0);
}

pub type Table = OrdMap<Bytes, Bytes>;

#[derive(Clone, Default)]
pub struct Tables {
    tables: BTreeMap<TableId, Table>,
}

impl Tables {
    pub fn get(&self, table: TableId, key: &[u8]) -> Option<Bytes> {
        self.tables.get(&table)?.get(key).cloned()
    }

    pub fn count(&self, table: TableId) -> u64 {
        self.tables.get(&table).map_or(0, |rows| rows.len() as u64)
    }

    pub fn scan(&self, table: TableId, range: &ScanRange) -> Vec<(Bytes, Bytes)> {
        let Some(rows) = self.tables.get(&table) else {
            return Vec::new();
        };
        if range.is_empty() {
            return Vec::new();
        }
        let bounds = (as_slice_bound(&range.start), as_slice_bound(&range.end));
        let limit = range.limit.unwrap_or(usize::MAX);
        let iter = rows.range::<_, [u8]>(bounds);
        let pairs = |(key, value): (&Bytes, &Bytes)| (key.clone(), value.clone());
        match range.direction {
            Direction::Ascending => iter.take(limit).map(pairs).collect(),
            Direction::Descending => iter.rev().take(limit).map(pairs).collect(),
        }
    }

    /// Calls `visitor` on the rows in `range` until it breaks (the limit
    /// is ignored).
    pub fn visit(&self, table: TableId, range: &ScanRange, visitor: &mut dyn RowVisitor) {
        let Some(rows) = self.tables.get(&table) else {
            return;
        };
        if range.is_empty() {
            return;
        }
        let bounds = (as_slice_bound(&range.start), as_slice_bound(&range.end));
        let mut visit = |(key, value): (&Bytes, &Bytes)| visitor.row(key, value);
        let _ = match range.direction {
            Direction::Ascending => rows.range::<_, [u8]>(bounds).try_for_each(&mut visit),
            Direction::Descending => rows.range::<_, [u8]>(bounds).rev().try_for_each(&mut visit),
        };
    }

    pub fn table_ids(&self) -> impl Iterator<Item = TableId> + '_ {
        self.tables.keys().copied()
    }

    /// Applies one mutation, keeping `indexes` (the table's) in step.
    pub fn apply(&mut self, mutation: Mutation, indexes: Option<&[Index]>) -> WriteOutcome {
        if let Mutation::DropTable { table } = mutation {
            self.tables.remove(&table);
            return WriteOutcome {
                old: None,
                new: None,
                conflicted: false,
            };
        }
        let (table, key) = mutation.row().expect("a row mutation");
        let old = self.get(table, key);
        let (outcome, operations) = decide_indexed(mutation, old, indexes);
        for operation in operations {
            self.replay(operation);
        }
        outcome
    }

    /// Replays an operation read back from the WAL or a checkpoint.
    pub fn replay(&mut self, operation: WalOperation) {
        match operation {
            WalOperation::Put { table, key, value } => {
                self.tables.entry(table).or_default().insert(key, value);
            }
            WalOperation::Delete { table, key } => {
                if let Some(rows) = self.tables.get_mut(&table) {
                    rows.remove(&key);
                    if rows.is_empty() {
                        self.tables.remove(&table);
                    }
                }
            }
            WalOperation::DropTable { table } => {
                self.tables.remove(&table);
            }
        }
    }
}

fn as_slice_bound(bound: &Bound<Bytes>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_ref()),
        Bound::Excluded(key) => Bound::Excluded(key.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
