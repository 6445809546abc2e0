//! Many write batches in flight on one partition at once, as a server
//! with many clients produces: every acknowledged row must read back,
//! and a scan must return each row once, in order.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use futures::future::join_all;
use photondb_storage::io::simulated::SimulatedFileSystem;
use photondb_storage::{Backend, ScanRange, TableId};
use photondb_storage::{Conflict, Durability, Mutation, WriteBatch};

const TABLE: TableId = TableId(5);

fn hashed_key(number: u64) -> Bytes {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in number.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    Bytes::from(format!("user{hash:020}"))
}

fn run(backend: &Simulated, rounds: u64, writers: u64, batch: u64, value_length: usize) {
    let mut model = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..rounds {
        let mut batches = Vec::new();
        for _ in 0..writers {
            let mut mutations = Vec::new();
            for _ in 0..batch {
                let (key, value) = (
                    hashed_key(next),
                    value_of(next, value_length + (next % 5) as usize * 40),
                );
                model.insert(key.clone(), value.clone());
                mutations.push(Mutation::Put {
                    table: TABLE,
                    key,
                    value,
                    conflict: Conflict::Error,
                });
                next += 1;
            }
            batches.push(backend.write(WriteBatch::new(mutations), Durability::Hard));
        }
        for outcome in block_on(join_all(batches)) {
            assert!(outcome
                .expect("write")
                .iter()
                .all(|outcome| !outcome.conflicted));
        }
        if round % 3 == 2 {
            block_on(backend.checkpoint()).expect("checkpoint");
        }
    }
    assert_eq!(backend.count(TABLE).expect("count"), model.len() as u64);
    let scanned = block_on(backend.scan(TABLE, &ScanRange::all())).expect("scan");
    let keys: Vec<&Bytes> = scanned.iter().map(|(key, _)| key).collect();
    let expected: Vec<&Bytes> = model.keys().collect();
    assert_eq!(
        keys.len(),
        expected.len(),
        "the scan returned a different number of rows"
    );
    assert!(
        keys == expected,
        "the scan's keys differ from the rows written"
    );
    for (key, value) in &model {
        assert_eq!(
            block_on(backend.get(TABLE, key)).expect("get").as_ref(),
            Some(value),
            "row {key:?}"
        );
    }
}

#[test]
fn concurrent_batches_of_small_rows_all_read_back() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 8 << 20);
    run(&backend, 12, 8, 40, 30);
}

#[test]
fn concurrent_batches_of_overflow_rows_all_read_back() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 32 << 20);
    run(&backend, 12, 8, 40, 1100);
}

/// Scans and point reads running while checkpoints commit (and, in the
/// first half, while writes land): with a cache of a few pages every read
/// loads pages, so loads and checkpoints interleave at every await.
#[test]
fn reads_during_checkpoints_see_every_row_and_leave_the_tree_whole() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 4 << 20);
    let mut model = BTreeMap::new();
    for number in 0..1500u64 {
        let (key, value) = (
            hashed_key(number),
            value_of(number, 20 + (number % 9) as usize * 25),
        );
        model.insert(key.clone(), value.clone());
        block_on(backend.write(
            WriteBatch::new(vec![Mutation::Put {
                table: TABLE,
                key,
                value,
                conflict: Conflict::Replace,
            }]),
            Durability::Hard,
        ))
        .expect("write");
    }
    block_on(backend.checkpoint()).expect("checkpoint");
    let model = std::cell::RefCell::new(model);
    for round in 0..6u64 {
        let writes = async {
            if round % 2 == 1 {
                return;
            }
            for number in 0..300u64 {
                let target = hashed_key((number * 7 + round) % 1500);
                let value = value_of(round * 10_000 + number, 20 + (number % 9) as usize * 25);
                model.borrow_mut().insert(target.clone(), value.clone());
                let put = Mutation::Put {
                    table: TABLE,
                    key: target,
                    value,
                    conflict: Conflict::Replace,
                };
                backend
                    .write(WriteBatch::new(vec![put]), Durability::Hard)
                    .await
                    .expect("write");
            }
        };
        let checkpoints = async {
            for _ in 0..4 {
                backend.checkpoint().await.expect("checkpoint");
            }
        };
        let scans = async {
            for _ in 0..3 {
                let rows = backend.scan(TABLE, &ScanRange::all()).await.expect("scan");
                let keys: Vec<&Bytes> = rows.iter().map(|(key, _)| key).collect();
                assert!(
                    keys.windows(2).all(|pair| pair[0] < pair[1]),
                    "a scan returned keys out of order or twice"
                );
                assert_eq!(rows.len(), 1500, "a scan lost or repeated rows");
            }
        };
        block_on(futures::future::join3(writes, checkpoints, scans));
        // Quiet now: the tree must hold exactly the model.
        let rows = block_on(backend.scan(TABLE, &ScanRange::all())).expect("scan");
        let expected: Vec<(Bytes, Bytes)> = model
            .borrow()
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        assert!(
            rows == expected,
            "after round {round} the table differs from what was written"
        );
    }
}

/// The server's shape (4 KiB nodes, 2 KiB inline values) and a cache
/// holding everything: after a burst of batches, scans run while the
/// checkpoints that follow commit, and must leave the tree whole.
#[test]
fn scans_during_the_checkpoints_after_a_burst_of_batches() {
    use photondb_storage::{DurableBackend, DurableOptions};
    let fs = SimulatedFileSystem::new();
    let options = DurableOptions {
        ring_bytes: 16 << 20,
        ..DurableOptions::default()
    };
    let backend =
        block_on(DurableBackend::create(fs.clone(), &directory(), 0, options)).expect("create");
    let mut model = BTreeMap::new();
    let mut next = 0u64;
    for burst in 0..4u64 {
        let batches: Vec<_> = new_batches(&mut model, &mut next, 8, 125)
            .into_iter()
            .map(|mutations| backend.write(WriteBatch::new(mutations), Durability::Hard))
            .collect();
        let checkpoints = async {
            for _ in 0..3 {
                backend.checkpoint().await.expect("checkpoint");
            }
        };
        let scans = ordered_scans(&backend, 4);
        let (written, _, _) = block_on(futures::future::join3(
            join_all(batches),
            checkpoints,
            scans,
        ));
        assert!(written.into_iter().all(|outcome| outcome.is_ok()));
        assert_table_is(&backend, &model, &format!("after burst {burst}"));
    }
}

/// A WAL ring so small that writers checkpoint to make room, while other
/// writers and scans wait on I/O in between.
#[test]
fn writers_that_checkpoint_for_room_keep_the_tree_whole() {
    use photondb_storage::{DurableBackend, DurableOptions};
    let fs = SimulatedFileSystem::new();
    let options = DurableOptions {
        ring_bytes: 1 << 20,
        ..DurableOptions::default()
    };
    let backend =
        block_on(DurableBackend::create(fs.clone(), &directory(), 0, options)).expect("create");
    let mut model = BTreeMap::new();
    let mut next = 0u64;
    for round in 0..6u64 {
        let batches: Vec<_> = new_batches(&mut model, &mut next, 16, 40)
            .into_iter()
            .map(|mutations| backend.write(WriteBatch::new(mutations), Durability::Hard))
            .collect();
        let scans = ordered_scans(&backend, 3);
        // The shard's maintenance task: checkpoints once a quarter of the
        // ring is used, alongside writers that checkpoint for room.
        let done = std::cell::Cell::new(false);
        let maintenance = async {
            while !done.get() {
                if backend.wants_checkpoint() {
                    backend.checkpoint().await.expect("checkpoint");
                }
                YieldNow(false).await;
            }
        };
        let writers = async {
            let written = join_all(batches).await;
            done.set(true);
            written
        };
        let (written, _, _) = block_on(futures::future::join3(writers, scans, maintenance));
        assert!(written.into_iter().all(|outcome| outcome.is_ok()));
        assert_table_is(&backend, &model, &format!("after round {round}"));
    }
}

/// Returns to the executor once, so other futures of a `join` run.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// `writers` batches of `rows` new rows of 1,100 bytes each, recorded in
/// `model`.
fn new_batches(
    model: &mut BTreeMap<Bytes, Bytes>,
    next: &mut u64,
    writers: usize,
    rows: usize,
) -> Vec<Vec<Mutation>> {
    (0..writers)
        .map(|_| {
            (0..rows)
                .map(|_| {
                    let (key, value) = (hashed_key(*next), value_of(*next, 1100));
                    model.insert(key.clone(), value.clone());
                    *next += 1;
                    Mutation::Put {
                        table: TABLE,
                        key,
                        value,
                        conflict: Conflict::Error,
                    }
                })
                .collect()
        })
        .collect()
}

/// Scans the table `times`, checking each returns keys in order, once.
async fn ordered_scans(backend: &Simulated, times: usize) {
    for _ in 0..times {
        let rows = backend.scan(TABLE, &ScanRange::all()).await.expect("scan");
        let keys: Vec<&Bytes> = rows.iter().map(|(key, _)| key).collect();
        assert!(
            keys.windows(2).all(|pair| pair[0] < pair[1]),
            "a scan returned keys out of order or twice"
        );
    }
}

fn assert_table_is(backend: &Simulated, model: &BTreeMap<Bytes, Bytes>, when: &str) {
    let rows = block_on(backend.scan(TABLE, &ScanRange::all())).expect("scan");
    let expected: Vec<(Bytes, Bytes)> = model
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    assert_eq!(
        rows.len(),
        expected.len(),
        "{when}: a scan returns a different number of rows"
    );
    assert!(
        rows == expected,
        "{when}: the table differs from what was written"
    );
}
