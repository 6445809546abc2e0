//! Secondary indexes as storage keeps them.
//!
//! An index is a table of its own (its id is a [`TableId`] the catalog
//! hands out) in the same partition as the documents it indexes. Each entry
//! is keyed by the document's secondary key followed by its primary key,
//! and holds the primary key:
//!
//! ```text
//! entry key   := truncate(secondary key encoding, MAX_SECONDARY_BYTES) ++ primary key encoding
//! entry value := primary key encoding
//! ```
//!
//! The key encoding is self-delimiting, so entries sort by secondary key
//! first and then by primary key. A secondary key longer than
//! [`MAX_SECONDARY_BYTES`] is cut (as RethinkDB cuts long index keys):
//! readers recognise such entries by their length and check the document
//! itself.
//!
//! Storage does not know what an index function is. The layer above
//! registers, per table, an [`IndexFunction`] that turns a stored document
//! into its secondary keys; every write to the table then changes the
//! entries in the same batch, logged in the same WAL record, so documents
//! and their index entries can never disagree after a crash. Replay needs
//! no index function: the entries are in the log.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::batch::WalOperation;
use crate::tables::TableId;

/// Longest secondary key part of an entry key, in bytes.
pub const MAX_SECONDARY_BYTES: usize = 250;

/// Computes the secondary keys of a document (its stored bytes). A
/// document the function fails on, or whose value cannot be indexed, has
/// none.
pub trait IndexFunction {
    fn secondary_keys(&self, document: &[u8]) -> Vec<Vec<u8>>;
}

/// One index of a table, as registered with a partition.
#[derive(Clone)]
pub struct Index {
    pub id: TableId,
    pub function: Rc<dyn IndexFunction>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Index")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The entry key of a document with primary key `primary` under
/// `secondary`.
pub fn entry_key(secondary: &[u8], primary: &[u8]) -> Bytes {
    let cut = secondary.len().min(MAX_SECONDARY_BYTES);
    let mut out = BytesMut::with_capacity(cut + primary.len());
    out.extend_from_slice(&secondary[..cut]);
    out.extend_from_slice(primary);
    out.freeze()
}

/// Whether an entry's secondary key was cut (so a reader must look at the
/// document to know its real secondary key).
pub fn is_truncated(entry: &[u8], primary: &[u8]) -> bool {
    entry.len() >= MAX_SECONDARY_BYTES + primary.len()
}

/// The indexes of each table in one partition.
#[derive(Default)]
pub struct IndexRegistry {
    by_table: RefCell<HashMap<TableId, Rc<[Index]>>>,
}

impl IndexRegistry {
    pub fn set(&self, table: TableId, indexes: Vec<Index>) {
        let mut by_table = self.by_table.borrow_mut();
        if indexes.is_empty() {
            by_table.remove(&table);
        } else {
            by_table.insert(table, indexes.into());
        }
    }

    pub fn of(&self, table: TableId) -> Option<Rc<[Index]>> {
        self.by_table.borrow().get(&table).cloned()
    }

    pub fn any(&self) -> bool {
        !self.by_table.borrow().is_empty()
    }
}

fn entries(index: &Index, document: &[u8], primary: &[u8]) -> BTreeSet<Bytes> {
    index
        .function
        .secondary_keys(document)
        .iter()
        .map(|secondary| entry_key(secondary, primary))
        .collect()
}

/// The entry changes that take the indexes of a row from document `old`
/// to `new` (either absent): removals of entries only `old` has, then
/// insertions of entries only `new` has.
pub(crate) fn changes(
    indexes: &[Index],
    primary: &Bytes,
    old: Option<&Bytes>,
    new: Option<&Bytes>,
    out: &mut Vec<WalOperation>,
) {
    for index in indexes {
        let before = old
            .map(|document| entries(index, document, primary))
            .unwrap_or_default();
        let after = new
            .map(|document| entries(index, document, primary))
            .unwrap_or_default();
        for key in before.difference(&after) {
            out.push(WalOperation::Delete {
                table: index.id,
                key: key.clone(),
            });
        }
        for key in after.difference(&before) {
            out.push(WalOperation::Put {
                table: index.id,
                key: key.clone(),
                value: primary.clone(),
            });
        }
    }
}

/// The entries of `document` in one index, written whether or not they are
/// there already (building an index on rows written before it existed).
pub(crate) fn fill(index: &Index, primary: &Bytes, document: &Bytes, out: &mut Vec<WalOperation>) {
    for key in entries(index, document, primary) {
        out.push(WalOperation::Put {
            table: index.id,
            key,
            value: primary.clone(),
        });
    }
}
