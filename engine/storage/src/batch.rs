//! Writes: what callers ask for ([`Mutation`]), what they get back
//! ([`WriteOutcome`]), and what the WAL records ([`WalOperation`]).
//!
//! WAL payload of one batch (little-endian):
//! ```text
//! u32 operation_count, then per operation:
//!   u8 kind (1 put, 2 delete, 3 drop table), u128 table,
//!   put:    u32 key_len, key, u32 value_len, value
//!   delete: u32 key_len, key
//! ```

use bytes::Bytes;

use crate::index::Index;
use crate::tables::TableId;

/// What to do when a put finds its key already present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Leave the stored document and report a conflict (ReQL's default).
    Error,
    /// Replace the stored document.
    Replace,
    /// Merge the new document into the stored one, as ReQL's `update`.
    Update,
}

#[derive(Clone, Debug)]
pub enum Mutation {
    Put {
        table: TableId,
        key: Bytes,
        value: Bytes,
        conflict: Conflict,
    },
    Delete {
        table: TableId,
        key: Bytes,
    },
    /// Sets the row to `new` (`None` deletes it) only if it is still
    /// `expected` (`None`: absent). Otherwise nothing changes and the outcome
    /// is `conflicted`, carrying the row as it is now: the caller recomputes
    /// and tries again. This makes read-modify-write atomic per document
    /// without holding anything between the read and the write.
    CompareAndSet {
        table: TableId,
        key: Bytes,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    },
    /// Removes every row of a table in this partition.
    DropTable {
        table: TableId,
    },
    /// Writes the entries the row has in `index` (a new index being built
    /// over rows written before it existed). The row is unchanged.
    Reindex {
        table: TableId,
        key: Bytes,
        index: TableId,
    },
}

impl Mutation {
    fn payload_bytes(&self) -> usize {
        match self {
            Mutation::Put { key, value, .. } => 25 + key.len() + value.len(),
            Mutation::Delete { key, .. } => 21 + key.len(),
            Mutation::CompareAndSet { key, new, .. } => {
                25 + key.len() + new.as_ref().map_or(0, |value| value.len())
            }
            Mutation::DropTable { .. } => 17,
            // Entries are counted by the caller, which computes them.
            Mutation::Reindex { .. } => 0,
        }
    }
}

/// A group of mutations applied atomically and logged as one WAL record.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub mutations: Vec<Mutation>,
}

impl WriteBatch {
    pub fn new(mutations: Vec<Mutation>) -> Self {
        WriteBatch { mutations }
    }

    /// An upper bound on the WAL payload this batch produces (merges with
    /// `Conflict::Update` may grow a document; their bound adds the old one).
    pub(crate) fn payload_bound(&self, stored_len: impl Fn(&Mutation) -> usize) -> usize {
        4 + self
            .mutations
            .iter()
            .map(|mutation| mutation.payload_bytes() + stored_len(mutation))
            .sum::<usize>()
    }
}

/// The result of one mutation: the document before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub old: Option<Bytes>,
    pub new: Option<Bytes>,
    /// A put with [`Conflict::Error`] found the key present; nothing changed.
    pub conflicted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalOperation {
    Put {
        table: TableId,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        table: TableId,
        key: Bytes,
    },
    DropTable {
        table: TableId,
    },
}

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_DROP_TABLE: u8 = 3;

pub(crate) fn encode_operations(operations: &[WalOperation]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(operations.len() as u32).to_le_bytes());
    for operation in operations {
        encode_operation(operation, &mut out);
    }
    out
}

pub(crate) fn encode_operation(operation: &WalOperation, out: &mut Vec<u8>) {
    let put_bytes = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    match operation {
        WalOperation::Put { table, key, value } => {
            out.push(KIND_PUT);
            out.extend_from_slice(&table.0.to_le_bytes());
            put_bytes(out, key);
            put_bytes(out, value);
        }
        WalOperation::Delete { table, key } => {
            out.push(KIND_DELETE);
            out.extend_from_slice(&table.0.to_le_bytes());
            put_bytes(out, key);
        }
        WalOperation::DropTable { table } => {
            out.push(KIND_DROP_TABLE);
            out.extend_from_slice(&table.0.to_le_bytes());
        }
    }
}

/// Reads operations back; `None` when the bytes are not a valid encoding
/// (the caller knows the file and offset to report).
pub(crate) struct OperationReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> OperationReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        OperationReader { bytes, position: 0 }
    }

    pub fn is_at_end(&self) -> bool {
        self.position == self.bytes.len()
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(len)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn sized(&mut self) -> Option<Bytes> {
        let len = self.u32()? as usize;
        Some(Bytes::copy_from_slice(self.take(len)?))
    }

    pub fn operation(&mut self) -> Option<WalOperation> {
        let kind = self.take(1)?[0];
        let table = TableId(u128::from_le_bytes(self.take(16)?.try_into().ok()?));
        Some(match kind {
            KIND_PUT => WalOperation::Put {
                table,
                key: self.sized()?,
                value: self.sized()?,
            },
            KIND_DELETE => WalOperation::Delete {
                table,
                key: self.sized()?,
            },
            KIND_DROP_TABLE => WalOperation::DropTable { table },
            _ => return None,
        })
    }
}

pub(crate) fn decode_operations(bytes: &[u8]) -> Option<Vec<WalOperation>> {
    let mut reader = OperationReader::new(bytes);
    let count = reader.u32()? as usize;
    let mut operations = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        operations.push(reader.operation()?);
    }
    reader.is_at_end().then_some(operations)
}

/// What one row mutation does to a row that is now `old`: its outcome, and
/// the WAL operation that repeats it (none when nothing changes). Every
/// backend decides the same way; only where rows live differs.
pub(crate) fn decide(
    mutation: Mutation,
    old: Option<Bytes>,
) -> (WriteOutcome, Option<WalOperation>) {
    match mutation {
        Mutation::Put {
            table,
            key,
            value,
            conflict,
        } => {
            let new = match (&old, conflict) {
                (Some(_), Conflict::Error) => {
                    return (
                        WriteOutcome {
                            old,
                            new: None,
                            conflicted: true,
                        },
                        None,
                    )
                }
                (Some(old), Conflict::Update) => merge_documents(old, &value),
                _ => value,
            };
            if old.as_ref() == Some(&new) {
                return (
                    WriteOutcome {
                        old: old.clone(),
                        new: old,
                        conflicted: false,
                    },
                    None,
                );
            }
            let operation = WalOperation::Put {
                table,
                key,
                value: new.clone(),
            };
            (
                WriteOutcome {
                    old,
                    new: Some(new),
                    conflicted: false,
                },
                Some(operation),
            )
        }
        Mutation::CompareAndSet {
            table,
            key,
            expected,
            new,
        } => {
            if old != expected {
                return (
                    WriteOutcome {
                        old: old.clone(),
                        new: old,
                        conflicted: true,
                    },
                    None,
                );
            }
            if old == new {
                return (
                    WriteOutcome {
                        old: old.clone(),
                        new: old,
                        conflicted: false,
                    },
                    None,
                );
            }
            let operation = match &new {
                Some(value) => WalOperation::Put {
                    table,
                    key,
                    value: value.clone(),
                },
                None => WalOperation::Delete { table, key },
            };
            (
                WriteOutcome {
                    old,
                    new,
                    conflicted: false,
                },
                Some(operation),
            )
        }
        Mutation::Delete { table, key } => {
            let operation = old.as_ref().map(|_| WalOperation::Delete { table, key });
            (
                WriteOutcome {
                    old,
                    new: None,
                    conflicted: false,
                },
                operation,
            )
        }
        Mutation::DropTable { .. } => unreachable!("dropping a table is not a row mutation"),
        Mutation::Reindex { .. } => (
            WriteOutcome {
                old: old.clone(),
                new: old,
                conflicted: false,
            },
            None,
        ),
    }
}

/// What a row mutation does with the table's `indexes` kept in step: its
/// outcome, and the WAL operations that repeat it (index entries first,
/// then the row).
pub(crate) fn decide_indexed(
    mutation: Mutation,
    old: Option<Bytes>,
    indexes: Option<&[Index]>,
) -> (WriteOutcome, Vec<WalOperation>) {
    let mut operations = Vec::new();
    if let Mutation::Reindex { key, index, .. } = &mutation {
        let index =
            indexes.and_then(|indexes| indexes.iter().find(|candidate| candidate.id == *index));
        if let (Some(document), Some(index)) = (&old, index) {
            crate::index::fill(index, key, document, &mut operations);
        }
        return (
            WriteOutcome {
                old: old.clone(),
                new: old,
                conflicted: false,
            },
            operations,
        );
    }
    let (outcome, operation) = decide(mutation, old);
    if let Some(operation) = operation {
        if let (Some(indexes), WalOperation::Put { key, .. } | WalOperation::Delete { key, .. }) =
            (indexes, &operation)
        {
            crate::index::changes(
                indexes,
                key,
                outcome.old.as_ref(),
                outcome.new.as_ref(),
                &mut operations,
            );
        }
        operations.push(operation);
    }
    (outcome, operations)
}

impl Mutation {
    /// The row a row mutation touches.
    pub(crate) fn row(&self) -> Option<(TableId, &Bytes)> {
        match self {
            Mutation::Put { table, key, .. }
            | Mutation::Delete { table, key }
            | Mutation::CompareAndSet { table, key, .. }
            | Mutation::Reindex { table, key, .. } => Some((*table, key)),
            Mutation::DropTable { .. } => None,
        }
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
