//! Fault injection: power loss, torn writes, flipped bits in every file, and
//! failed syncs and writes. Each case either recovers every acknowledged
//! write, or refuses to start and names the damaged file and offset.

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::*;
use futures::task::LocalSpawnExt;
use photondb_storage::io::simulated::{CrashMode, SimulatedFileSystem};
use photondb_storage::{
    Backend, Conflict, Durability, Mutation, StorageError, TableId, WriteBatch,
};

const TABLE: TableId = TableId(42);
const RING: u64 = 1 << 20;

fn expected(rows: &[(u8, Bytes)]) -> Model {
    rows.iter()
        .map(|(key, value)| ((TABLE, Bytes::from(vec![*key])), value.clone()))
        .collect()
}

fn write_rows(backend: &Simulated, rows: &[(u8, Bytes)]) {
    for (key, value) in rows {
        put(backend, TABLE, &[*key], value).expect("put");
    }
}

fn rows(range: std::ops::Range<u8>, length: usize) -> Vec<(u8, Bytes)> {
    range
        .map(|key| (key, value_of(key as u64, length)))
        .collect()
}

/// Starts a hard write whose sync never returns, so it is never acknowledged.
fn start_unacknowledged_write(
    fs: &SimulatedFileSystem,
    backend: Simulated,
    key: u8,
    length: usize,
) {
    let backend = Rc::new(backend);
    let mut pool = futures::executor::LocalPool::new();
    fs.stall_syncs(true);
    let writer = backend.clone();
    pool.spawner()
        .spawn_local(async move {
            let mutation = Mutation::Put {
                table: TABLE,
                key: Bytes::from(vec![key]),
                value: value_of(99, length),
                conflict: Conflict::Replace,
            };
            let _ = writer
                .write(WriteBatch::new(vec![mutation]), Durability::Hard)
                .await;
        })
        .expect("spawn");
    pool.run_until_stalled();
}

#[test]
fn power_loss_keeps_acknowledged_writes_and_drops_the_unacknowledged() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let acknowledged = rows(0..50, 300);
    write_rows(&backend, &acknowledged);
    start_unacknowledged_write(&fs, backend, 200, 300);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers");
    assert_eq!(contents(&recovered, &[TABLE]), expected(&acknowledged));
}

#[test]
fn torn_last_write_is_a_tail_not_corruption() {
    for sectors_kept in 0..10 {
        let fs = SimulatedFileSystem::new();
        let backend = create(&fs, RING);
        let acknowledged = rows(0..20, 100);
        write_rows(&backend, &acknowledged);
        start_unacknowledged_write(&fs, backend, 200, 4000);
        let recovered = open(&fs.crash(CrashMode::TearLastWrite { sectors_kept }))
            .expect("recovers from a torn tail");
        let mut found = contents(&recovered, &[TABLE]);
        // The unacknowledged record survives only if the kept sectors hold all of it.
        let whole = found.remove(&(TABLE, Bytes::from(vec![200u8])));
        assert_eq!(
            found,
            expected(&acknowledged),
            "sectors kept: {sectors_kept}"
        );
        assert_eq!(
            whole.is_some(),
            sectors_kept * 512 >= 4000 + 40,
            "sectors kept: {sectors_kept}"
        );
    }
}

#[test]
fn torn_tail_is_not_resurrected_after_a_second_crash() {
    // A torn flush leaves valid-looking records beyond the tail. Writes after
    // recovery start a new epoch; after another crash those old records must
    // not be replayed, and must not be mistaken for corruption.
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    write_rows(&backend, &rows(0..3, 100));
    start_unacknowledged_write(&fs, backend, 200, 9000);
    let fs = fs.crash(CrashMode::TearLastWrite { sectors_kept: 1 });
    let backend = open(&fs).expect("first recovery");
    write_rows(&backend, &rows(3..4, 100));
    let fs = fs.crash(CrashMode::DropUnsynced);
    let backend = open(&fs).expect("second recovery");
    assert_eq!(contents(&backend, &[TABLE]), expected(&rows(0..4, 100)));
}

#[test]
fn flipped_bit_before_acknowledged_records_refuses_to_start() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    // Each hard write is its own flush, one block apart.
    write_rows(&backend, &rows(0..10, 100));
    drop(backend);
    // Damage the third flush's record; seven acknowledged flushes follow it.
    fs.flip_bit(&wal_path(), 2 * 4096 + 60, 3);
    let message = assert_corruption_in(open(&fs.crash(CrashMode::DropUnsynced)), &wal_path());
    assert!(message.contains("offset 8192"), "{message}");
}

#[test]
fn flipped_bit_in_the_last_flush_loses_only_that_flush() {
    // Indistinguishable from a torn final write, so it is treated as one; the
    // records before it are intact.
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let all = rows(0..10, 100);
    write_rows(&backend, &all);
    drop(backend);
    fs.flip_bit(&wal_path(), 9 * 4096 + 60, 0);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers");
    assert_eq!(contents(&recovered, &[TABLE]), expected(&all[..9]));
}

#[test]
fn flipped_bit_in_a_checkpoint_page_refuses_to_start() {
    // Rows of 1,000 bytes live in overflow runs; small ones in leaves. A
    // flipped bit in a leaf, in an overflow page and in a branch page is
    // each found when the partition opens.
    let mut rows = rows(0..30, 1000);
    rows.extend((100..160).map(|key| (key, value_of(key as u64, 20))));
    for page in [1u64, 2, 8, 20] {
        let fs = SimulatedFileSystem::new();
        let backend = create(&fs, RING);
        write_rows(&backend, &rows);
        block_on(backend.checkpoint()).expect("checkpoint");
        drop(backend);
        fs.flip_bit(&data_path(), page * 4096 + 100, 5);
        let message = assert_corruption_in(open(&fs.crash(CrashMode::DropUnsynced)), &data_path());
        assert!(
            message.contains(&format!("offset {}", page * 4096)),
            "{message}"
        );
    }
}

#[test]
fn flipped_bit_in_the_newest_superblock_falls_back_to_the_older_one() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let first = rows(0..10, 500);
    write_rows(&backend, &first);
    block_on(backend.checkpoint()).expect("first checkpoint");
    let second = rows(10..20, 500);
    write_rows(&backend, &second);
    block_on(backend.checkpoint()).expect("second checkpoint");
    let third = rows(20..25, 500);
    write_rows(&backend, &third);
    drop(backend);
    // Sequence 3 (the newest) lives in slot 1.
    fs.flip_bit(&superblock_path(), 4096 + 17, 2);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers from the older slot");
    let all: Vec<_> = first.into_iter().chain(second).chain(third).collect();
    assert_eq!(contents(&recovered, &[TABLE]), expected(&all));
}

#[test]
fn both_superblock_slots_damaged_refuses_to_start() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    write_rows(&backend, &rows(0..5, 10));
    block_on(backend.checkpoint()).expect("checkpoint");
    drop(backend);
    fs.flip_bit(&superblock_path(), 9, 0);
    fs.flip_bit(&superblock_path(), 4096 + 9, 0);
    assert_corruption_in(open(&fs.crash(CrashMode::DropUnsynced)), &superblock_path());
}

#[test]
fn failed_sync_poisons_the_partition() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let acknowledged = rows(0..5, 100);
    write_rows(&backend, &acknowledged);
    fs.fail_next_sync();
    let failed = put(&backend, TABLE, &[100], b"lost");
    assert!(
        matches!(
            failed,
            Err(StorageError::Io { .. }) | Err(StorageError::Poisoned { .. })
        ),
        "{failed:?}"
    );
    // Never retried: every later write is refused, even though the disk
    // would accept it now.
    match put(&backend, TABLE, &[101], b"refused") {
        Err(StorageError::Poisoned { reason, .. }) => {
            assert!(reason.contains("fdatasync"), "{reason}")
        }
        other => panic!("expected a poisoned partition, got {other:?}"),
    }
    assert!(matches!(
        block_on(backend.checkpoint()),
        Err(StorageError::Poisoned { .. })
    ));
    drop(backend);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers");
    assert_eq!(contents(&recovered, &[TABLE]), expected(&acknowledged));
}

#[test]
fn failed_write_poisons_the_partition() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    write_rows(&backend, &rows(0..3, 100));
    fs.fail_writes(true);
    assert!(put(&backend, TABLE, &[100], b"x").is_err());
    fs.fail_writes(false);
    assert!(matches!(
        put(&backend, TABLE, &[101], b"y"),
        Err(StorageError::Poisoned { .. })
    ));
}

#[test]
fn failed_checkpoint_write_poisons_the_partition() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    write_rows(&backend, &rows(0..3, 100));
    fs.fail_writes(true);
    assert!(block_on(backend.checkpoint()).is_err());
    fs.fail_writes(false);
    assert!(matches!(
        put(&backend, TABLE, &[101], b"y"),
        Err(StorageError::Poisoned { .. })
    ));
}

#[test]
fn group_commit_shares_one_sync_among_concurrent_writers() {
    let fs = SimulatedFileSystem::new();
    let backend = Rc::new(create(&fs, RING));
    let syncs_before = fs.sync_count();
    let mut pool = futures::executor::LocalPool::new();
    for key in 0..64u8 {
        let writer = backend.clone();
        pool.spawner()
            .spawn_local(async move {
                let mutation = Mutation::Put {
                    table: TABLE,
                    key: Bytes::from(vec![key]),
                    value: value_of(key as u64, 50),
                    conflict: Conflict::Replace,
                };
                writer
                    .write(WriteBatch::new(vec![mutation]), Durability::Hard)
                    .await
                    .expect("write");
            })
            .expect("spawn");
    }
    pool.run();
    let syncs = fs.sync_count() - syncs_before;
    // The first writer flushes alone; the other 63 ride one or two flushes.
    assert!(syncs <= 3, "64 concurrent writers took {syncs} syncs");
    assert_eq!(backend.count(TABLE).unwrap(), 64);
    drop(pool);
    let backend = Rc::try_unwrap(backend).ok().expect("sole owner");
    drop(backend);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers");
    assert_eq!(recovered.count(TABLE).unwrap(), 64);
}

#[test]
fn soft_writes_may_be_lost_but_only_as_a_suffix() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let hard = rows(0..5, 100);
    write_rows(&backend, &hard);
    for key in 10..20u8 {
        let mutation = Mutation::Put {
            table: TABLE,
            key: Bytes::from(vec![key]),
            value: value_of(key as u64, 100),
            conflict: Conflict::Replace,
        };
        block_on(backend.write(WriteBatch::new(vec![mutation]), Durability::Soft))
            .expect("soft write");
    }
    // Soft writes are visible at once, durable only after a flush.
    assert_eq!(backend.count(TABLE).unwrap(), 15);
    drop(backend);
    let recovered = open(&fs.crash(CrashMode::DropUnsynced)).expect("recovers");
    assert_eq!(contents(&recovered, &[TABLE]), expected(&hard));
}

#[test]
fn a_batch_larger_than_the_ring_allows_is_refused_cleanly() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 256 * 1024);
    let huge = vec![7u8; 200 * 1024];
    assert!(matches!(
        put(&backend, TABLE, b"k", &huge),
        Err(StorageError::WriteTooLarge { .. })
    ));
    // Nothing was applied and the partition still works.
    assert_eq!(backend.count(TABLE).unwrap(), 0);
    put(&backend, TABLE, b"k", b"small").expect("a normal write still works");
}
