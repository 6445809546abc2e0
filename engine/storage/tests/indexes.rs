//! Secondary index entries against the rows they index: after any sequence
//! of writes, index builds and crashes, a partition's index holds exactly
//! the entries its rows call for.

mod common;

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use photondb_storage::index::{entry_key, Index, IndexFunction};
use photondb_storage::io::simulated::{CrashMode, SimulatedFileSystem};
use photondb_storage::{Backend, Conflict, Durability, Mutation, ScanRange, TableId, WriteBatch};
use proptest::prelude::*;

const TABLE: TableId = TableId(7);
const INDEX: TableId = TableId(70);

/// Indexes a row by its first byte modulo 5 and, as a multi index would,
/// also by its second byte modulo 5; an empty row has no entries (as a
/// document the function fails on).
struct ByLeadingBytes;

impl IndexFunction for ByLeadingBytes {
    fn secondary_keys(&self, document: &[u8]) -> Vec<Vec<u8>> {
        document.iter().take(2).map(|byte| vec![byte % 5]).collect()
    }
}

fn index() -> Index {
    Index {
        id: INDEX,
        function: Rc::new(ByLeadingBytes),
    }
}

fn expected_entries(rows: &BTreeMap<Bytes, Bytes>) -> BTreeMap<Bytes, Bytes> {
    let mut entries = BTreeMap::new();
    for (key, row) in rows {
        for secondary in ByLeadingBytes.secondary_keys(row) {
            entries.insert(entry_key(&secondary, key), key.clone());
        }
    }
    entries
}

fn scan_all(backend: &Simulated, table: TableId) -> BTreeMap<Bytes, Bytes> {
    block_on(backend.scan(table, &ScanRange::all()))
        .expect("scan")
        .into_iter()
        .collect()
}

fn assert_consistent(backend: &Simulated) {
    let rows = scan_all(backend, TABLE);
    assert_eq!(
        scan_all(backend, INDEX),
        expected_entries(&rows),
        "index entries disagree with rows {rows:?}"
    );
}

#[derive(Clone, Debug)]
enum Operation {
    /// Several mutations in one batch, possibly of the same key.
    Batch(Vec<(u8, Option<usize>, u8)>),
    CompareAndSet {
        key: u8,
        new_length: Option<usize>,
        seed: u8,
    },
    Checkpoint,
    Crash,
}

fn operation() -> impl Strategy<Value = Operation> {
    let length = prop_oneof![6 => 0usize..40, 1 => 300usize..600];
    let mutation = (0..24u8, proptest::option::of(length.clone()), any::<u8>());
    prop_oneof![
        10 => proptest::collection::vec(mutation, 1..5).prop_map(Operation::Batch),
        3 => (0..24u8, proptest::option::of(length), any::<u8>())
            .prop_map(|(key, new_length, seed)| Operation::CompareAndSet { key, new_length, seed }),
        1 => Just(Operation::Checkpoint),
        1 => Just(Operation::Crash),
    ]
}

fn row_value(length: usize, seed: u8) -> Bytes {
    value_of(u64::from(seed) * 1000 + length as u64, length)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn entries_follow_rows_through_writes_and_crashes(operations in proptest::collection::vec(operation(), 1..40)) {
        let mut fs = SimulatedFileSystem::new();
        let mut backend = create(&fs, 256 << 10);
        backend.set_indexes(TABLE, vec![index()]);
        for operation in operations {
            match operation {
                Operation::Batch(mutations) => {
                    let mutations = mutations
                        .into_iter()
                        .map(|(key, length, seed)| match length {
                            Some(length) => Mutation::Put { table: TABLE, key: Bytes::from(vec![key]), value: row_value(length, seed), conflict: Conflict::Replace },
                            None => Mutation::Delete { table: TABLE, key: Bytes::from(vec![key]) },
                        })
                        .collect();
                    block_on(backend.write(WriteBatch::new(mutations), Durability::Hard)).expect("write");
                }
                Operation::CompareAndSet { key, new_length, seed } => {
                    let key = Bytes::from(vec![key]);
                    let expected = block_on(backend.get(TABLE, &key)).expect("get");
                    let new = new_length.map(|length| row_value(length, seed));
                    let outcome = block_on(backend.write(WriteBatch::new(vec![Mutation::CompareAndSet { table: TABLE, key, expected, new }]), Durability::Soft)).expect("write");
                    prop_assert!(!outcome[0].conflicted);
                }
                Operation::Checkpoint => block_on(backend.checkpoint()).expect("checkpoint"),
                Operation::Crash => {
                    block_on(backend.flush()).expect("flush");
                    drop(backend);
                    fs = fs.crash(CrashMode::DropUnsynced);
                    backend = open(&fs).expect("reopen");
                    // Replay needs no index function: entries are logged.
                    assert_consistent(&backend);
                    backend.set_indexes(TABLE, vec![index()]);
                }
            }
            assert_consistent(&backend);
        }
    }
}

/// An index registered over rows written before it: `Reindex` of every row
/// fills it, and writes in between keep what is already there right.
#[test]
fn reindex_fills_an_index_built_over_existing_rows() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 256 << 10);
    for key in 0..60u8 {
        put(
            &backend,
            TABLE,
            &[key],
            &row_value(usize::from(key % 7) * 20 + 1, key),
        )
        .expect("put");
    }
    backend.set_indexes(TABLE, vec![index()]);
    for key in (0..60u8).step_by(3) {
        // Written while the build runs: their entries are made by the write.
        put(&backend, TABLE, &[key], &row_value(9, key.wrapping_mul(7))).expect("put");
    }
    let keys: Vec<Bytes> = scan_all(&backend, TABLE).into_keys().collect();
    for chunk in keys.chunks(16) {
        let rebuild = chunk
            .iter()
            .map(|key| Mutation::Reindex {
                table: TABLE,
                key: key.clone(),
                index: INDEX,
            })
            .collect();
        block_on(backend.write(WriteBatch::new(rebuild), Durability::Hard)).expect("reindex");
    }
    assert_consistent(&backend);
    assert_eq!(scan_all(&backend, TABLE).len(), 60);
    // And it survives a crash.
    drop(backend);
    let fs = fs.crash(CrashMode::DropUnsynced);
    let backend = open(&fs).expect("reopen");
    assert_consistent(&backend);
}
