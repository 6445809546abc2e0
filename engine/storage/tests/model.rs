//! Random operation sequences against the durable backend and a BTreeMap
//! model, with checkpoints, ring wrap-around, and crashes of every kind.
//! Every acknowledged write must survive; an unacknowledged one may survive
//! whole or vanish, never half.

mod common;

use std::ops::Bound;
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use futures::task::LocalSpawnExt;
use photondb_storage::io::simulated::{CrashMode, SimulatedFileSystem};
use photondb_storage::{
    Backend, Conflict, Direction, Durability, Mutation, ScanRange, TableId, WriteBatch,
};
use proptest::prelude::*;

const TABLES: [TableId; 2] = [TableId(7), TableId(9)];

#[derive(Clone, Debug)]
enum Operation {
    Put {
        table: usize,
        key: u8,
        length: usize,
        conflict: Conflict,
        durability: Durability,
    },
    Delete {
        table: usize,
        key: u8,
    },
    /// With `expect_current`, expects what the model holds (must apply);
    /// otherwise something else (must conflict and change nothing).
    CompareAndSet {
        table: usize,
        key: u8,
        expect_current: bool,
        new_length: Option<usize>,
    },
    DropTable {
        table: usize,
    },
    Scan {
        table: usize,
        from: u8,
        to: u8,
        descending: bool,
        limit: Option<usize>,
    },
    Checkpoint,
    Crash {
        mode: CrashModeChoice,
    },
    UnacknowledgedPutsThenCrash {
        puts: Vec<(usize, u8, usize)>,
        mode: CrashModeChoice,
    },
}

#[derive(Clone, Copy, Debug)]
enum CrashModeChoice {
    Drop,
    Tear(usize),
    Keep,
}

impl CrashModeChoice {
    fn mode(self) -> CrashMode {
        match self {
            CrashModeChoice::Drop => CrashMode::DropUnsynced,
            CrashModeChoice::Tear(sectors_kept) => CrashMode::TearLastWrite { sectors_kept },
            CrashModeChoice::Keep => CrashMode::KeepEverything,
        }
    }
}

fn length() -> impl Strategy<Value = usize> {
    // Small documents, ones that span checkpoint pages, and ones bigger
    // than a WAL block.
    prop_oneof![6 => 0usize..200, 2 => 3000usize..5000, 1 => 9000usize..20000]
}

fn crash_mode() -> impl Strategy<Value = CrashModeChoice> {
    prop_oneof![
        Just(CrashModeChoice::Drop),
        (0usize..12).prop_map(CrashModeChoice::Tear),
        Just(CrashModeChoice::Keep)
    ]
}

fn operation() -> impl Strategy<Value = Operation> {
    let conflict = prop_oneof![
        Just(Conflict::Error),
        Just(Conflict::Replace),
        Just(Conflict::Update)
    ];
    let durability = prop_oneof![4 => Just(Durability::Hard), 1 => Just(Durability::Soft)];
    prop_oneof![
        30 => (0..2usize, 0..48u8, length(), conflict, durability)
            .prop_map(|(table, key, length, conflict, durability)| Operation::Put { table, key, length, conflict, durability }),
        8 => (0..2usize, 0..48u8).prop_map(|(table, key)| Operation::Delete { table, key }),
        6 => (0..2usize, 0..48u8, any::<bool>(), proptest::option::of(length()))
            .prop_map(|(table, key, expect_current, new_length)| Operation::CompareAndSet { table, key, expect_current, new_length }),
        1 => (0..2usize).prop_map(|table| Operation::DropTable { table }),
        4 => (0..2usize, 0..48u8, 0..48u8, any::<bool>(), proptest::option::of(1..6usize))
            .prop_map(|(table, from, to, descending, limit)| Operation::Scan { table, from, to, descending, limit }),
        2 => Just(Operation::Checkpoint),
        3 => crash_mode().prop_map(|mode| Operation::Crash { mode }),
        2 => (proptest::collection::vec((0..2usize, 0..48u8, length()), 1..4), crash_mode())
            .prop_map(|(puts, mode)| Operation::UnacknowledgedPutsThenCrash { puts, mode }),
    ]
}

fn key_bytes(key: u8) -> Bytes {
    Bytes::from(vec![b'k', key])
}

/// Values are opaque bytes except under `Conflict::Update`, which merges
/// documents: use encoded documents so merges are meaningful.
fn document(seed: u64, length: usize) -> Bytes {
    use photondb_datum::{document, Datum, Object};
    let mut fields = Object::new();
    fields.insert(
        format!("f{}", seed % 3),
        Datum::String(
            value_of(seed, length)
                .iter()
                .map(|byte| char::from(b'a' + byte % 26))
                .collect(),
        ),
    );
    fields.insert("seed".into(), Datum::Number(seed as f64));
    Bytes::from(document::encode(&Datum::Object(fields)))
}

fn merged(old: &Bytes, patch: &Bytes) -> Bytes {
    use photondb_datum::{document, Datum};
    let (Datum::Object(mut old), Datum::Object(patch)) = (
        document::decode(old).unwrap(),
        document::decode(patch).unwrap(),
    ) else {
        unreachable!("the test writes objects only")
    };
    old.extend(patch);
    Bytes::from(document::encode(&Datum::Object(old)))
}

fn run(operations: Vec<Operation>) -> Result<(), TestCaseError> {
    let mut fs = SimulatedFileSystem::new();
    let mut backend = create(&fs, 512 * 1024);
    // What must be there after any crash, and what is there now.
    let mut model = Model::new();
    let mut seed = 0u64;
    for operation in operations {
        seed += 1;
        match operation {
            Operation::Put {
                table,
                key,
                length,
                conflict,
                durability,
            } => {
                let table = TABLES[table];
                let (key, value) = (key_bytes(key), document(seed, length));
                let outcomes = block_on(backend.write(
                    WriteBatch::new(vec![Mutation::Put {
                        table,
                        key: key.clone(),
                        value: value.clone(),
                        conflict,
                    }]),
                    durability,
                ))
                .expect("write");
                let old = model.get(&(table, key.clone())).cloned();
                prop_assert_eq!(&outcomes[0].old, &old);
                let expected_new = match (&old, conflict) {
                    (Some(_), Conflict::Error) => {
                        prop_assert!(outcomes[0].conflicted);
                        continue;
                    }
                    (Some(old), Conflict::Update) => merged(old, &value),
                    _ => value,
                };
                prop_assert_eq!(outcomes[0].new.as_ref(), Some(&expected_new));
                if durability == Durability::Soft {
                    // Soft writes are acknowledged before they are durable; make
                    // them durable now so the model stays exact.
                    block_on(backend.flush()).expect("flush");
                }
                model.insert((table, key), expected_new);
            }
            Operation::Delete { table, key } => {
                let table = TABLES[table];
                let key = key_bytes(key);
                let outcomes = block_on(backend.write(
                    WriteBatch::new(vec![Mutation::Delete {
                        table,
                        key: key.clone(),
                    }]),
                    Durability::Hard,
                ))
                .expect("delete");
                prop_assert_eq!(&outcomes[0].old, &model.remove(&(table, key)));
            }
            Operation::CompareAndSet {
                table,
                key,
                expect_current,
                new_length,
            } => {
                let table = TABLES[table];
                let key = key_bytes(key);
                let current = model.get(&(table, key.clone())).cloned();
                let expected = if expect_current {
                    current.clone()
                } else {
                    Some(Bytes::from_static(b"not what is stored"))
                };
                let new = new_length.map(|length| document(seed, length));
                let mutation = Mutation::CompareAndSet {
                    table,
                    key: key.clone(),
                    expected,
                    new: new.clone(),
                };
                let outcomes =
                    block_on(backend.write(WriteBatch::new(vec![mutation]), Durability::Hard))
                        .expect("compare and set");
                prop_assert_eq!(&outcomes[0].old, &current);
                prop_assert_eq!(outcomes[0].conflicted, !expect_current);
                if expect_current {
                    match new {
                        Some(value) => model.insert((table, key), value),
                        None => model.remove(&(table, key)),
                    };
                }
            }
            Operation::DropTable { table } => {
                let table = TABLES[table];
                block_on(backend.write(
                    WriteBatch::new(vec![Mutation::DropTable { table }]),
                    Durability::Hard,
                ))
                .expect("drop");
                model.retain(|(row_table, _), _| *row_table != table);
            }
            Operation::Scan {
                table,
                from,
                to,
                descending,
                limit,
            } => {
                let table = TABLES[table];
                let range = ScanRange {
                    start: Bound::Included(key_bytes(from)),
                    end: Bound::Excluded(key_bytes(to)),
                    direction: if descending {
                        Direction::Descending
                    } else {
                        Direction::Ascending
                    },
                    limit,
                };
                let actual = block_on(backend.scan(table, &range)).expect("scan");
                let mut expected: Vec<(Bytes, Bytes)> = if from < to {
                    model
                        .range((table, key_bytes(from))..(table, key_bytes(to)))
                        .map(|((_, key), value)| (key.clone(), value.clone()))
                        .collect()
                } else {
                    Vec::new()
                };
                if descending {
                    expected.reverse();
                }
                expected.truncate(limit.unwrap_or(usize::MAX));
                prop_assert_eq!(actual, expected.clone());
                // The same rows lent to a visitor that stops at the limit,
                // overflow runs and pages loaded on the way included.
                let mut visited = Vec::new();
                block_on(
                    backend.visit(table, &range, &mut |key: &[u8], value: &[u8]| {
                        visited.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)));
                        if visited.len() >= limit.unwrap_or(usize::MAX) {
                            std::ops::ControlFlow::Break(())
                        } else {
                            std::ops::ControlFlow::Continue(())
                        }
                    }),
                )
                .expect("visit");
                prop_assert_eq!(visited, expected);
            }
            Operation::Checkpoint => block_on(backend.checkpoint()).expect("checkpoint"),
            Operation::Crash { mode } => {
                fs = fs.crash(mode.mode());
                backend = open(&fs).map_err(|error| TestCaseError::fail(error.to_string()))?;
                prop_assert_eq!(contents(&backend, &TABLES), model.clone());
            }
            Operation::UnacknowledgedPutsThenCrash { puts, mode } => {
                // Several records in one flush that never completes: after the
                // crash the recovered rows are the model plus a prefix of them.
                let puts: Vec<(TableId, Bytes, Bytes)> = puts
                    .into_iter()
                    .enumerate()
                    .map(|(index, (table, key, length))| {
                        (
                            TABLES[table],
                            key_bytes(key),
                            document(seed * 16 + index as u64, length),
                        )
                    })
                    .collect();
                let shared = Rc::new(backend);
                let writer = shared.clone();
                let mut pool = futures::executor::LocalPool::new();
                fs.stall_syncs(true);
                let batches = puts.clone();
                pool.spawner()
                    .spawn_local(async move {
                        let last = batches.len() - 1;
                        for (index, (table, key, value)) in batches.into_iter().enumerate() {
                            let mutation = Mutation::Put {
                                table,
                                key,
                                value,
                                conflict: Conflict::Replace,
                            };
                            let durability = if index == last {
                                Durability::Hard
                            } else {
                                Durability::Soft
                            };
                            let _ = writer
                                .write(WriteBatch::new(vec![mutation]), durability)
                                .await;
                        }
                    })
                    .expect("spawn");
                pool.run_until_stalled();
                drop(pool);
                drop(shared);
                fs = fs.crash(mode.mode());
                backend = open(&fs).map_err(|error| TestCaseError::fail(error.to_string()))?;
                let recovered = contents(&backend, &TABLES);
                let mut candidate = model.clone();
                let mut matched = recovered == candidate;
                for (table, key, value) in &puts {
                    if matched {
                        break;
                    }
                    candidate.insert((*table, key.clone()), value.clone());
                    matched = recovered == candidate;
                }
                prop_assert!(
                    matched,
                    "recovered rows are not the model plus a prefix of the unacknowledged writes"
                );
                model = recovered;
            }
        }
    }
    // A clean close and reopen keeps everything.
    block_on(backend.close()).expect("close");
    let backend = open(&fs).expect("reopen after close");
    prop_assert_eq!(contents(&backend, &TABLES), model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn durable_backend_matches_a_btreemap_through_crashes(operations in proptest::collection::vec(operation(), 1..160)) {
        run(operations)?;
    }
}

/// Enough writes to wrap the ring many times, forcing checkpoints from the
/// write path, then a crash.
#[test]
fn ring_wraps_many_times_and_recovers() {
    let operations: Vec<Operation> = (0..1500)
        .map(|index| Operation::Put {
            table: index % 2,
            key: (index * 7 % 48) as u8,
            length: 700 + index % 900,
            conflict: Conflict::Replace,
            durability: Durability::Hard,
        })
        .chain(std::iter::once(Operation::Crash {
            mode: CrashModeChoice::Drop,
        }))
        .collect();
    run(operations).unwrap();
}
