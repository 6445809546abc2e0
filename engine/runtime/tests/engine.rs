//! The engine end to end on real files: routing, fan-out scans, the catalog,
//! restarts, and restarts with another shard count.

use std::ops::Bound;

use bytes::Bytes;
use photondb_datum::{document, key, Datum};
use photondb_runtime::{block_on_thread, Engine, EngineConfig, StorageKind};
use photondb_storage::{Conflict, Direction, Durability, ScanRange};

fn config(directory: &std::path::Path, shards: usize) -> EngineConfig {
    let mut config = EngineConfig::new(directory);
    config.shards = shards;
    config.partitions = 4;
    config.wal_ring_bytes = 1 << 20;
    config.pin_to_cores = false;
    config
}

fn key_of(id: i64) -> Bytes {
    Bytes::from(key::encode(&Datum::Number(id as f64)))
}

fn document_of(id: i64) -> Bytes {
    let mut fields = photondb_datum::Object::new();
    fields.insert("id".into(), Datum::Number(id as f64));
    fields.insert(
        "payload".into(),
        Datum::String("x".repeat((id % 50) as usize)),
    );
    Bytes::from(document::encode(&Datum::Object(fields)))
}

#[test]
fn documents_and_catalog_survive_restarts_with_other_shard_counts() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    assert!(
        engine.database("test").is_some(),
        "a new data directory has database `test`"
    );
    let table =
        block_on_thread(engine.create_table("test", "people", "id", Durability::Hard)).unwrap();
    assert!(
        block_on_thread(engine.create_table("test", "people", "id", Durability::Hard)).is_err()
    );
    for id in 0..300 {
        let outcome = block_on_thread(engine.put(
            table.id,
            key_of(id),
            document_of(id),
            Conflict::Error,
            Durability::Hard,
        ))
        .unwrap();
        assert!(outcome.old.is_none() && !outcome.conflicted);
    }
    let again = block_on_thread(engine.put(
        table.id,
        key_of(7),
        document_of(8),
        Conflict::Error,
        Durability::Hard,
    ))
    .unwrap();
    assert!(again.conflicted, "a duplicate primary key conflicts");
    block_on_thread(engine.delete(table.id, key_of(299), Durability::Hard)).unwrap();
    assert_eq!(block_on_thread(engine.count(table.id)).unwrap(), 299);
    engine.shutdown().unwrap();

    for shards in [1, 3] {
        let engine = Engine::start(config(directory.path(), shards)).unwrap();
        assert_eq!(
            engine.partitions(),
            4,
            "the partition count is the directory's, not the config's"
        );
        let table = engine
            .table("test", "people")
            .expect("table recovered from the catalog");
        assert_eq!(block_on_thread(engine.count(table.id)).unwrap(), 299);
        assert_eq!(
            block_on_thread(engine.get(table.id, key_of(42))).unwrap(),
            Some(document_of(42))
        );
        assert_eq!(
            block_on_thread(engine.get(table.id, key_of(299))).unwrap(),
            None
        );
        // A scan merges every partition in key (numeric) order.
        let range = ScanRange {
            start: Bound::Included(key_of(10)),
            end: Bound::Excluded(key_of(20)),
            direction: Direction::Descending,
            limit: Some(4),
        };
        let rows = block_on_thread(engine.scan(table.id, range)).unwrap();
        let keys: Vec<Bytes> = rows.into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, vec![key_of(19), key_of(18), key_of(17), key_of(16)]);
        engine.shutdown().unwrap();
    }
}

#[test]
fn full_scans_stream_in_batches_in_key_order() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    let table =
        block_on_thread(engine.create_table("test", "numbers", "id", Durability::Soft)).unwrap();
    let mutations = (0..1000)
        .map(|id| photondb_storage::Mutation::Put {
            table: table.id,
            key: key_of(id),
            value: document_of(id),
            conflict: Conflict::Replace,
        })
        .collect();
    block_on_thread(engine.write(mutations, Durability::Soft)).unwrap();
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let batch = block_on_thread(engine.scan_batch(table.id, after.clone(), 64)).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 64);
        after = batch.last().map(|(key, _)| key.clone());
        seen.extend(batch.into_iter().map(|(key, _)| key));
    }
    let expected: Vec<Bytes> = (0..1000).map(key_of).collect();
    assert_eq!(seen, expected);
    engine.shutdown().unwrap();
}

#[test]
fn dropped_tables_and_databases_stay_dropped() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    block_on_thread(engine.create_database("shop")).unwrap();
    let orders =
        block_on_thread(engine.create_table("shop", "orders", "id", Durability::Hard)).unwrap();
    block_on_thread(engine.put(
        orders.id,
        key_of(1),
        document_of(1),
        Conflict::Error,
        Durability::Hard,
    ))
    .unwrap();
    block_on_thread(engine.drop_database("shop")).unwrap();
    assert_eq!(block_on_thread(engine.count(orders.id)).unwrap(), 0);
    engine.shutdown().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    assert!(engine.database("shop").is_none());
    assert!(engine.table("shop", "orders").is_none());
    assert_eq!(block_on_thread(engine.count(orders.id)).unwrap(), 0);
    engine.shutdown().unwrap();
}

#[test]
fn memory_storage_works_and_keeps_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut memory = config(directory.path(), 2);
    memory.storage = StorageKind::Memory;
    let engine = Engine::start(memory.clone()).unwrap();
    let table =
        block_on_thread(engine.create_table("test", "scratch", "id", Durability::Hard)).unwrap();
    block_on_thread(engine.put(
        table.id,
        key_of(1),
        document_of(1),
        Conflict::Error,
        Durability::Hard,
    ))
    .unwrap();
    assert_eq!(
        block_on_thread(engine.get(table.id, key_of(1))).unwrap(),
        Some(document_of(1))
    );
    engine.shutdown().unwrap();
    assert!(
        std::fs::read_dir(directory.path())
            .unwrap()
            .next()
            .is_none(),
        "memory storage writes no files"
    );
    let engine = Engine::start(memory).unwrap();
    assert!(engine.table("test", "scratch").is_none());
    engine.shutdown().unwrap();
}

#[test]
fn a_damaged_partition_stops_the_start_with_its_file_named() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 1)).unwrap();
    engine.shutdown().unwrap();
    let superblock = directory.path().join("partition-0002").join("superblock");
    let mut bytes = std::fs::read(&superblock).unwrap();
    bytes[9] ^= 1;
    bytes[4096 + 9] ^= 1;
    std::fs::write(&superblock, bytes).unwrap();
    let error = Engine::start(config(directory.path(), 1))
        .err()
        .expect("start must fail");
    assert!(
        error.to_string().contains("partition-0002/superblock"),
        "{error}"
    );
}

#[test]
fn rows_of_a_table_missing_from_the_catalog_are_removed_at_startup() {
    // A write that raced a drop (or a crash between the drop's catalog
    // delete and its row removal) leaves rows no table name reaches.
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    let orphan = photondb_storage::TableId(0xDEAD_BEEF);
    let mutations = (0..50)
        .map(|id| photondb_storage::Mutation::Put {
            table: orphan,
            key: key_of(id),
            value: document_of(id),
            conflict: Conflict::Replace,
        })
        .collect();
    block_on_thread(engine.write(mutations, Durability::Hard)).unwrap();
    assert_eq!(block_on_thread(engine.count(orphan)).unwrap(), 50);
    engine.shutdown().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    assert_eq!(block_on_thread(engine.count(orphan)).unwrap(), 0);
    engine.shutdown().unwrap();
}

#[test]
fn shards_call_each_other_and_themselves() {
    // A job on each partition's shard reads and writes keys of every other
    // partition: calls to the other shard go over the shard mesh, calls to
    // its own shard run in place. Every answer must be the right one.
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    let table =
        block_on_thread(engine.create_table("test", "mesh", "id", Durability::Hard)).unwrap();
    for id in 0..200 {
        block_on_thread(engine.put(
            table.id,
            key_of(id),
            document_of(id),
            Conflict::Error,
            Durability::Hard,
        ))
        .unwrap();
    }
    let mut checks = Vec::new();
    for partition in 0..engine.partitions() {
        let inner = engine.clone();
        let table = table.id;
        checks.push(
            block_on_thread(
                engine.run_on_partition(partition, move |_backend| async move {
                    let mut found = 0;
                    for id in 0..200 {
                        if inner.get(table, key_of(id)).await.unwrap() == Some(document_of(id)) {
                            found += 1;
                        }
                    }
                    let id = 1000 + i64::from(partition);
                    inner
                        .put(
                            table,
                            key_of(id),
                            document_of(id),
                            Conflict::Error,
                            Durability::Hard,
                        )
                        .await
                        .unwrap();
                    found
                }),
            )
            .unwrap(),
        );
    }
    assert_eq!(checks, vec![200; engine.partitions() as usize]);
    assert_eq!(
        block_on_thread(engine.count(table.id)).unwrap(),
        200 + u64::from(engine.partitions())
    );
    engine.shutdown().unwrap();
}

/// Many hard-durability batches in flight at once on real files, with a
/// WAL ring small enough that checkpoints run all along: afterwards every
/// row reads back and a full scan returns each exactly once.
#[test]
fn concurrent_batches_through_checkpoints_all_read_back() {
    let directory = tempfile::tempdir().unwrap();
    let mut settings = config(directory.path(), 1);
    settings.partitions = 1;
    let engine = Engine::start(settings).unwrap();
    let table =
        block_on_thread(engine.create_table("test", "rows", "id", Durability::Hard)).unwrap();
    let hashed = |number: i64| -> Bytes {
        let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
        for byte in number.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01B3);
        }
        Bytes::from(key::encode(&Datum::String(format!("user{hash:020}"))))
    };
    let value = |number: i64| -> Bytes {
        let mut fields = photondb_datum::Object::new();
        fields.insert("n".into(), Datum::Number(number as f64));
        fields.insert("payload".into(), Datum::String(format!("{number:>1100}")));
        Bytes::from(document::encode(&Datum::Object(fields)))
    };
    const THREADS: i64 = 16;
    const BATCHES: i64 = 40;
    const ROWS: i64 = 40;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let engine = &engine;
            scope.spawn(move || {
                for batch in 0..BATCHES {
                    let first = (thread * BATCHES + batch) * ROWS;
                    let mutations = (first..first + ROWS)
                        .map(|number| photondb_storage::Mutation::Put {
                            table: table.id,
                            key: hashed(number),
                            value: value(number),
                            conflict: Conflict::Error,
                        })
                        .collect();
                    let outcomes =
                        block_on_thread(engine.write(mutations, Durability::Hard)).unwrap();
                    assert!(outcomes.iter().all(|outcome| !outcome.conflicted));
                }
            });
        }
    });
    let total = THREADS * BATCHES * ROWS;
    for pass in 0..3 {
        let mut after = None;
        let mut seen = Vec::new();
        loop {
            let batch = block_on_thread(engine.scan_batch(table.id, after.clone(), 500)).unwrap();
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|(key, _)| key.clone());
            seen.extend(batch.into_iter().map(|(key, _)| key));
        }
        let mut expected: Vec<Bytes> = (0..total).map(hashed).collect();
        expected.sort();
        assert_eq!(
            seen.len(),
            expected.len(),
            "pass {pass}: the scan returned a different number of rows"
        );
        assert!(
            seen == expected,
            "pass {pass}: the scan's keys differ from the rows written"
        );
    }
    for number in 0..total {
        let stored = block_on_thread(engine.get(table.id, hashed(number))).unwrap();
        assert_eq!(stored, Some(value(number)), "row {number}");
    }
    engine.shutdown().unwrap();
}

/// Jobs one shard sends another over the mesh count as waiting there until
/// the receiving shard takes them: `mesh_depths` rises while that shard is
/// busy and falls back to zero once it has run them.
#[test]
fn jobs_waiting_on_the_mesh_are_counted() {
    let directory = tempfile::tempdir().unwrap();
    let engine = Engine::start(config(directory.path(), 2)).unwrap();
    assert_eq!(engine.mesh_depths(), vec![0, 0]);
    // Partition 1 is shard 1's: block its thread until told.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (blocking, blocked) = std::sync::mpsc::channel::<()>();
    let busy = engine.run_on_partition_from_outside(1, move |_| async move {
        blocking.send(()).unwrap();
        released.recv().unwrap();
    });
    let busy = std::thread::spawn(move || block_on_thread(busy));
    blocked.recv().unwrap();
    // From shard 0 (partition 0), ten calls to shard 1: over the mesh.
    let inner = engine.clone();
    let sending = engine.run_on_partition_from_outside(0, move |_| async move {
        let calls = (0..10).map(|_| inner.run_on_partition(1, |_| async { 1 }));
        photondb_runtime::join_all(calls).await
    });
    let sending = std::thread::spawn(move || block_on_thread(sending));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while engine.mesh_depths()[1] < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "depths {:?}",
            engine.mesh_depths()
        );
        std::thread::yield_now();
    }
    assert_eq!(engine.mesh_depths(), vec![0, 10]);
    release.send(()).unwrap();
    busy.join().unwrap().unwrap();
    let answers = sending.join().unwrap().unwrap();
    assert_eq!(answers.into_iter().map(Result::unwrap).sum::<i32>(), 10);
    assert_eq!(engine.mesh_depths(), vec![0, 0]);
    engine.shutdown().unwrap();
}
