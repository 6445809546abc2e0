//! The ordered contents of a partition's tables.
//!
//! Each table is a persistent ordered map from encoded key to encoded
//! document. Cloning [`Tables`] is O(number of tables) and shares every node,
//! which is what lets a checkpoint write a frozen view while writes go on.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;

use crate::backend::{Direction, ScanRange};
use crate::batch::{Conflict, Mutation, WalOperation, WriteOutcome};

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
        let Some(rows) = self.tables.get(&table) else { return Vec::new() };
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

    pub fn table_ids(&self) -> impl Iterator<Item = TableId> + '_ {
        self.tables.keys().copied()
    }

    pub fn rows(&self, table: TableId) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.tables.get(&table).into_iter().flat_map(|rows| rows.iter())
    }

    /// Applies one mutation, returning what happened and the WAL operation
    /// that repeats it (none when nothing changed).
    pub fn apply(&mut self, mutation: Mutation) -> (WriteOutcome, Option<WalOperation>) {
        match mutation {
            Mutation::Put { table, key, value, conflict } => {
                let rows = self.tables.entry(table).or_default();
                let old = rows.get(&key).cloned();
                let new = match (&old, conflict) {
                    (Some(_), Conflict::Error) => {
                        return (WriteOutcome { old, new: None, conflicted: true }, None);
                    }
                    (Some(old), Conflict::Update) => merge_documents(old, &value),
                    _ => value,
                };
                if old.as_ref() == Some(&new) {
                    return (WriteOutcome { old: old.clone(), new: old, conflicted: false }, None);
                }
                rows.insert(key.clone(), new.clone());
                let operation = WalOperation::Put { table, key, value: new.clone() };
                (WriteOutcome { old, new: Some(new), conflicted: false }, Some(operation))
            }
            Mutation::CompareAndSet { table, key, expected, new } => {
                let current = self.get(table, &key);
                if current != expected {
                    return (WriteOutcome { old: current.clone(), new: current, conflicted: true }, None);
                }
                if current == new {
                    return (WriteOutcome { old: current.clone(), new: current, conflicted: false }, None);
                }
                match &new {
                    Some(value) => {
                        self.tables.entry(table).or_default().insert(key.clone(), value.clone());
                        let operation = WalOperation::Put { table, key, value: value.clone() };
                        (WriteOutcome { old: current, new, conflicted: false }, Some(operation))
                    }
                    None => {
                        if let Some(rows) = self.tables.get_mut(&table) {
                            rows.remove(&key);
                        }
                        (WriteOutcome { old: current, new: None, conflicted: false }, Some(WalOperation::Delete { table, key }))
                    }
                }
            }
            Mutation::Delete { table, key } => {
                let old = self.tables.get_mut(&table).and_then(|rows| rows.remove(&key));
                let operation = old.as_ref().map(|_| WalOperation::Delete { table, key });
                (WriteOutcome { old, new: None, conflicted: false }, operation)
            }
            Mutation::DropTable { table } => {
                let existed = self.tables.remove(&table).is_some();
                let operation = existed.then_some(WalOperation::DropTable { table });
                (WriteOutcome { old: None, new: None, conflicted: false }, operation)
            }
        }
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

/// RethinkDB's `update` merge: objects merge recursively, anything else is
/// replaced. Undecodable bytes (never produced by this crate) fall back to
/// the new value rather than inventing one.
fn merge_documents(old: &Bytes, patch: &Bytes) -> Bytes {
    use photondb_datum::{document, Datum};
    fn merge(old: Datum, patch: Datum) -> Datum {
        match (old, patch) {
            (Datum::Object(mut old_fields), Datum::Object(patch_fields)) => {
                for (key, patch_value) in patch_fields {
                    let merged = match old_fields.remove(&key) {
                        Some(old_value) => merge(old_value, patch_value),
                        None => patch_value,
                    };
                    old_fields.insert(key, merged);
                }
                Datum::Object(old_fields)
            }
            (_, patch) => patch,
        }
    }
    match (document::decode(old), document::decode(patch)) {
        (Ok(old), Ok(patch)) => Bytes::from(document::encode(&merge(old, patch))),
        _ => patch.clone(),
    }
}
