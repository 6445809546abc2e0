//! The data file over time: a table many times the page cache stays
//! correct, the cache stays within its budget, and pages the tree stops
//! using are reused rather than the file growing without end.

mod common;

use bytes::Bytes;
use common::*;
use photondb_storage::io::simulated::{CrashMode, SimulatedFileSystem};
use photondb_storage::{Backend, Direction, ScanRange, TableId};

const TABLE: TableId = TableId(3);
const RING: u64 = 1 << 20;

fn key(number: u32) -> Vec<u8> {
    format!("row-{number:06}").into_bytes()
}

#[test]
fn a_table_many_times_the_cache_reads_back_whole_across_restarts() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let value = |number: u32| value_of(number as u64, 40 + (number % 7) as usize * 30);
    for number in 0..3000 {
        put(&backend, TABLE, &key(number), &value(number)).expect("put");
    }
    block_on(backend.checkpoint()).expect("checkpoint");
    let (_, _, cached) = backend.page_stats();
    assert!(
        cached <= (8 << 10) + 4096,
        "the cache holds {cached} bytes, over its 8 KiB budget"
    );
    for number in (0..3000).step_by(7) {
        assert_eq!(
            block_on(backend.get(TABLE, &key(number))).expect("get"),
            Some(value(number))
        );
    }
    drop(backend);
    let backend = open(&fs.crash(CrashMode::DropUnsynced)).expect("reopen");
    assert_eq!(backend.count(TABLE).expect("count"), 3000);
    let rows = contents(&backend, &[TABLE]);
    assert_eq!(rows.len(), 3000);
    for number in 0..3000 {
        assert_eq!(
            rows.get(&(TABLE, Bytes::from(key(number)))),
            Some(&value(number))
        );
    }
    // A visit of every row, both ways, loads each page as it reaches it.
    for direction in [Direction::Ascending, Direction::Descending] {
        let range = ScanRange {
            direction,
            ..ScanRange::all()
        };
        let mut visited: Vec<u32> = Vec::new();
        block_on(
            backend.visit(TABLE, &range, &mut |row: &[u8], document: &[u8]| {
                let number: u32 = std::str::from_utf8(&row[4..]).unwrap().parse().unwrap();
                assert_eq!(document, value(number), "row {number}");
                visited.push(number);
                std::ops::ControlFlow::Continue(())
            }),
        )
        .expect("visit");
        let mut expected: Vec<u32> = (0..3000).collect();
        if direction == Direction::Descending {
            expected.reverse();
        }
        assert_eq!(visited, expected);
    }
}

#[test]
fn pages_the_tree_stops_using_are_reused() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let mut sizes = Vec::new();
    for round in 0..24u32 {
        // Rewrite every row (small ones in leaves, big ones in overflow
        // runs), then checkpoint.
        for number in 0..400 {
            let length = if number % 10 == 0 { 3000 } else { 60 };
            put(
                &backend,
                TABLE,
                &key(number),
                &value_of((round * 1000 + number) as u64, length),
            )
            .expect("put");
        }
        block_on(backend.checkpoint()).expect("checkpoint");
        sizes.push(backend.page_stats().0);
    }
    // Two checkpoints' worth of pages are kept back, so the file levels
    // off after a few rounds instead of growing by a round's pages each time.
    let settled = sizes[8];
    let last = *sizes.last().unwrap();
    assert!(
        last <= settled + settled / 4,
        "the data file kept growing: {sizes:?}"
    );
    drop(backend);
    let backend = open(&fs.crash(CrashMode::DropUnsynced)).expect("reopen");
    for number in 0..400 {
        let length = if number % 10 == 0 { 3000 } else { 60 };
        assert_eq!(
            block_on(backend.get(TABLE, &key(number))).expect("get"),
            Some(value_of((23 * 1000 + number) as u64, length))
        );
    }
}

/// A checkpoint is wanted once a quarter of the ring has been logged since
/// the newest checkpoint: not before, and not at once after a checkpoint
/// because the ring still holds the stretch before it (which the older
/// superblock slot needs). Each checkpoint rewrites every node changed
/// since the last one, so checkpointing twice as often doubles what a bulk
/// load writes.
#[test]
fn a_checkpoint_is_wanted_after_a_quarter_of_the_ring_since_the_newest() {
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, RING);
    let logged = || backend.stats().wal_bytes_written;
    let mut number = 0;
    let mut write_until_wanted = || {
        let start = logged();
        while !backend.wants_checkpoint() {
            put(&backend, TABLE, &key(number), &value_of(number as u64, 200)).expect("put");
            number += 1;
            assert!(
                logged() - start <= RING,
                "no checkpoint wanted after a whole ring"
            );
        }
        logged() - start
    };
    for round in 0..4 {
        let since_checkpoint = write_until_wanted();
        // Each hard write logs one padded 4 KiB block.
        assert!(
            (RING / 4..=RING / 4 + 8192).contains(&since_checkpoint),
            "round {round}: wanted after {since_checkpoint} bytes"
        );
        block_on(backend.checkpoint()).expect("checkpoint");
        assert!(
            !backend.wants_checkpoint(),
            "round {round}: wanted again right after a checkpoint"
        );
    }
}

/// A checkpoint places its changed nodes a slice at a time and lets the
/// thread's other tasks run in between: on a shard, placing thousands of
/// pages in one stretch held up every query for tens of milliseconds.
#[test]
fn a_checkpoint_lets_other_tasks_run_while_it_places_pages() {
    use std::cell::Cell;
    let fs = SimulatedFileSystem::new();
    let backend = create(&fs, 16 << 20);
    // Rows of 60 bytes in nodes of 512: thousands of nodes to place, all
    // written in batches of 1,000 (a record each, far from filling the
    // ring), so that no checkpoint the ring forces has placed them.
    for batch in 0..15 {
        let puts = (batch * 1000..(batch + 1) * 1000)
            .map(|number| photondb_storage::Mutation::Put {
                table: TABLE,
                key: Bytes::from(key(number)),
                value: value_of(number as u64, 60),
                conflict: photondb_storage::Conflict::Replace,
            })
            .collect();
        let batch = photondb_storage::WriteBatch::new(puts);
        block_on(backend.write(batch, photondb_storage::Durability::Hard)).expect("write");
    }
    let (done, turns) = (Cell::new(false), Cell::new(0u32));
    let checkpoint = async {
        let result = backend.checkpoint().await;
        done.set(true);
        result
    };
    // Another task of the thread: it gets a turn each time the checkpoint
    // lets go of the thread.
    let other = async {
        while !done.get() {
            turns.set(turns.get() + 1);
            photondb_storage::yield_now().await;
        }
    };
    let (result, ()) = block_on(futures::future::join(checkpoint, other));
    result.expect("checkpoint");
    // Pages in use now: the nodes this checkpoint placed and its metadata.
    // The other task must get a turn for every 256 of them, as the pager
    // yields every 256 nodes (19 turns for 3,217 pages; without those
    // yields 7, at the checkpoint's few awaits).
    let (_, used, _) = backend.page_stats();
    assert!(used > 2048, "only {used} pages: too few to tell");
    assert!(
        u64::from(turns.get()) >= used / 256,
        "the other task ran {} times while {used} pages were placed",
        turns.get()
    );
    // And the checkpoint is whole: every row reads back after a crash.
    drop(backend);
    let backend = open(&fs.crash(CrashMode::DropUnsynced)).expect("reopen");
    assert_eq!(backend.count(TABLE).expect("count"), 15_000);
}
