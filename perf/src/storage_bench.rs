//! Storage engine benchmark, PhotonDB beside redb in the same run.
//!
//! ```text
//! cargo run --release -p photondb-perf --bin storage-bench -- \
//!     [--seconds 5] [--records 200000] [--writers 1,16,256] [--dir PATH] [--json FILE]
//! ```
//! Workloads: durable single-document inserts (~200-byte documents) with 1,
//! 16 and 256 concurrent writers; point gets of cached documents inside the
//! shard (the per-core storage API) and through the engine handle from
//! another thread; range scans of 100 rows. redb runs the same workloads
//! with one key per durable commit. Every figure is printed with its
//! PhotonDB/redb ratio, next to the machine's own fdatasync latency and
//! direct-I/O bandwidth measured first.

mod machine;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::task::LocalSpawnExt;
use hdrhistogram::Histogram;
use photondb_datum::{document, key, Datum, Object};
use photondb_runtime::{partition_of, Engine, EngineConfig};
use photondb_storage::{Backend, Conflict, Direction, Durability, Mutation, ScanRange, TableId};
use serde_json::{json, Value};

struct Options {
    seconds: f64,
    records: u64,
    writers: Vec<usize>,
    directory: PathBuf,
    json: Option<PathBuf>,
    partitions: u32,
}

fn options() -> Options {
    let mut options = Options {
        seconds: 5.0,
        records: 200_000,
        writers: vec![1, 16, 256],
        directory: PathBuf::from("."),
        json: None,
        partitions: 8,
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < arguments.len() {
        let value = arguments.get(index + 1).cloned().unwrap_or_default();
        match arguments[index].as_str() {
            "--seconds" => options.seconds = value.parse().expect("--seconds takes a number"),
            "--records" => options.records = value.parse().expect("--records takes a number"),
            "--writers" => {
                options.writers = value
                    .split(',')
                    .map(|count| count.parse().expect("--writers takes numbers"))
                    .collect()
            }
            "--dir" => options.directory = PathBuf::from(value),
            "--json" => options.json = Some(PathBuf::from(value)),
            "--partitions" => {
                options.partitions = value.parse().expect("--partitions takes a number")
            }
            other => panic!("unknown argument {other}"),
        }
        index += 2;
    }
    options
}

#[derive(Clone)]
struct Measurement {
    operations: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn to_json(&self) -> Value {
        json!({
            "operations": self.operations,
            "seconds": self.elapsed.as_secs_f64(),
            "per_second": self.per_second(),
            "p50_us": self.micros(0.5), "p99_us": self.micros(0.99), "p999_us": self.micros(0.999),
            "max_us": self.latency.max() as f64 / 1000.0,
        })
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn key_of(id: u64) -> Bytes {
    Bytes::from(key::encode(&Datum::Number(id as f64)))
}

/// A ~200-byte document.
fn document_of(id: u64) -> Bytes {
    let mut fields = Object::new();
    fields.insert("id".into(), Datum::Number(id as f64));
    fields.insert("name".into(), Datum::String(format!("user-{id:010}")));
    fields.insert(
        "email".into(),
        Datum::String(format!("user{id}@example.com")),
    );
    fields.insert("score".into(), Datum::Number((id % 1000) as f64 * 1.5));
    fields.insert("bio".into(), Datum::String("x".repeat(80)));
    Bytes::from(document::encode(&Datum::Object(fields)))
}

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ----- PhotonDB --------------------------------------------------------------

/// Runs `concurrency` tasks on one client thread until the deadline.
fn drive<F, Fut>(concurrency: usize, seconds: f64, operation: F) -> Measurement
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let operation = Rc::new(operation);
    let latency = Rc::new(RefCell::new(histogram()));
    let counter = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut pool = futures::executor::LocalPool::new();
    for _ in 0..concurrency {
        let (operation, latency, counter) = (operation.clone(), latency.clone(), counter.clone());
        pool.spawner()
            .spawn_local(async move {
                while Instant::now() < deadline {
                    let sequence = counter.get();
                    counter.set(sequence + 1);
                    let begun = Instant::now();
                    operation(sequence).await;
                    latency
                        .borrow_mut()
                        .record(begun.elapsed().as_nanos() as u64)
                        .expect("record");
                }
            })
            .expect("spawn");
    }
    pool.run();
    let latency = latency.borrow().clone();
    Measurement {
        operations: latency.len(),
        elapsed: started.elapsed(),
        latency,
    }
}

fn photondb_inserts(
    engine: &Engine,
    table: TableId,
    writers: usize,
    seconds: f64,
    base: u64,
) -> Measurement {
    let engine = engine.clone();
    drive(writers, seconds, move |sequence| {
        let engine = engine.clone();
        async move {
            let id = base + sequence;
            engine
                .put(
                    table,
                    key_of(id),
                    document_of(id),
                    Conflict::Error,
                    Durability::Hard,
                )
                .await
                .expect("insert");
        }
    })
}

/// Durable inserts issued inside the shards, straight on each partition's
/// backend (`writers` spread over the partitions): the storage engine's own
/// cost, without a client thread competing for the cores.
fn photondb_local_inserts(
    engine: &Engine,
    table: TableId,
    writers: usize,
    seconds: f64,
    base: u64,
) -> Measurement {
    let partitions = engine.partitions();
    let started = Instant::now();
    let calls = (0..partitions)
        .filter(|partition| (*partition as usize) < writers)
        .map(|partition| {
            let writers_here = writers / partitions as usize
                + usize::from((partition as usize) < writers % partitions as usize);
            engine.run_on_partition(partition, move |backend| async move {
                let deadline = Instant::now() + Duration::from_secs_f64(seconds);
                let next_id = Cell::new(base + partition as u64 * 100_000_000);
                let loops = (0..writers_here).map(|_| {
                    let (backend, next_id) = (backend.clone(), &next_id);
                    async move {
                        let mut latency = histogram();
                        while Instant::now() < deadline {
                            // Only keys this partition owns, as routing would send.
                            let key = loop {
                                let id = next_id.get();
                                next_id.set(id + 1);
                                let key = key_of(id);
                                if partition_of(&key, partitions) == partition {
                                    break key;
                                }
                            };
                            let mutation = Mutation::Put {
                                table,
                                key,
                                value: document_of(next_id.get()),
                                conflict: Conflict::Error,
                            };
                            let begun = Instant::now();
                            backend
                                .write(
                                    photondb_storage::WriteBatch::new(vec![mutation]),
                                    Durability::Hard,
                                )
                                .await
                                .expect("insert");
                            latency
                                .record(begun.elapsed().as_nanos() as u64)
                                .expect("record");
                        }
                        latency
                    }
                });
                let mut merged = histogram();
                for latency in futures::future::join_all(loops).await {
                    merged.add(&latency).expect("merge");
                }
                merged
            })
        });
    let results = futures::executor::block_on(futures::future::join_all(calls));
    let mut latency = histogram();
    for result in results {
        latency.add(&result.expect("partition job")).expect("merge");
    }
    Measurement {
        operations: latency.len(),
        elapsed: started.elapsed(),
        latency,
    }
}

fn photondb_preload(engine: &Engine, table: TableId, records: u64) {
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let mutations = chunk
            .iter()
            .map(|&id| Mutation::Put {
                table,
                key: key_of(id),
                value: document_of(id),
                conflict: Conflict::Replace,
            })
            .collect();
        futures::executor::block_on(engine.write(mutations, Durability::Soft)).expect("preload");
    }
    futures::executor::block_on(engine.sync()).expect("sync");
}

/// Point gets inside each shard, straight on the partition's backend: one
/// job per partition, each doing `gets_per_partition` gets of its own keys.
/// Jobs on one shard run back to back, shards in parallel.
fn photondb_local_gets(
    engine: &Engine,
    table: TableId,
    records: u64,
    gets_per_partition: u64,
) -> Measurement {
    let partitions = engine.partitions();
    let mut owned: Vec<Vec<Bytes>> = vec![Vec::new(); partitions as usize];
    for id in 0..records {
        let key = key_of(id);
        owned[partition_of(&key, partitions) as usize].push(key);
    }
    let started = Instant::now();
    let calls = owned.into_iter().enumerate().map(|(partition, keys)| {
        engine.run_on_partition(partition as u32, move |backend| async move {
            let mut latency = histogram();
            let mut random = Random(0x9E37_79B9 + partition as u64);
            let mut found = 0u64;
            // Time one get in 16: reading the clock costs about as much as
            // the get itself, and would halve the throughput measured.
            for index in 0..gets_per_partition {
                let key = &keys[(random.next() % keys.len() as u64) as usize];
                if index % 16 == 0 {
                    let begun = Instant::now();
                    found += u64::from(backend.get(table, key).await.expect("get").is_some());
                    latency
                        .record(begun.elapsed().as_nanos() as u64)
                        .expect("record");
                } else {
                    found += u64::from(backend.get(table, key).await.expect("get").is_some());
                }
            }
            assert_eq!(found, gets_per_partition, "every preloaded key is found");
            (latency, gets_per_partition)
        })
    });
    let results = futures::executor::block_on(futures::future::join_all(calls));
    let elapsed = started.elapsed();
    let mut latency = histogram();
    let mut operations = 0;
    for result in results {
        let (partition_latency, partition_operations) = result.expect("partition job");
        latency.add(&partition_latency).expect("merge");
        operations += partition_operations;
    }
    Measurement {
        operations,
        elapsed,
        latency,
    }
}

/// Point gets through the engine handle from a client thread.
fn photondb_engine_gets(
    engine: &Engine,
    table: TableId,
    records: u64,
    in_flight: usize,
    seconds: f64,
) -> Measurement {
    let engine = engine.clone();
    drive(in_flight, seconds, move |sequence| {
        let engine = engine.clone();
        async move {
            let id = Random(sequence.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1).next() % records;
            assert!(engine.get(table, key_of(id)).await.expect("get").is_some());
        }
    })
}

fn photondb_scans(
    engine: &Engine,
    table: TableId,
    records: u64,
    in_flight: usize,
    seconds: f64,
) -> Measurement {
    let engine = engine.clone();
    drive(in_flight, seconds, move |sequence| {
        let engine = engine.clone();
        async move {
            let start = Random(sequence.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1).next()
                % records.saturating_sub(100).max(1);
            let range = ScanRange {
                start: std::ops::Bound::Included(key_of(start)),
                end: std::ops::Bound::Unbounded,
                direction: Direction::Ascending,
                limit: Some(100),
            };
            let rows = engine.scan(table, range).await.expect("scan");
            assert_eq!(rows.len(), 100);
        }
    })
}

// ----- redb ------------------------------------------------------------------

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("documents");

fn redb_inserts(
    database: &Arc<redb::Database>,
    writers: usize,
    seconds: f64,
    base: u64,
) -> Measurement {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(base));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (database, counter) = (database.clone(), counter.clone());
            std::thread::spawn(move || {
                let mut latency = histogram();
                while Instant::now() < deadline {
                    let id = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let begun = Instant::now();
                    let transaction = database.begin_write().expect("begin");
                    {
                        let mut table = transaction.open_table(REDB_TABLE).expect("table");
                        table
                            .insert(key_of(id).as_ref(), document_of(id).as_ref())
                            .expect("insert");
                    }
                    transaction.commit().expect("durable commit");
                    latency
                        .record(begun.elapsed().as_nanos() as u64)
                        .expect("record");
                }
                latency
            })
        })
        .collect();
    let mut latency = histogram();
    for thread in threads {
        latency.add(&thread.join().expect("writer")).expect("merge");
    }
    Measurement {
        operations: latency.len(),
        elapsed: started.elapsed(),
        latency,
    }
}

fn redb_preload(database: &redb::Database, records: u64) {
    let transaction = database.begin_write().expect("begin");
    {
        let mut table = transaction.open_table(REDB_TABLE).expect("table");
        for id in 0..records {
            table
                .insert(key_of(id).as_ref(), document_of(id).as_ref())
                .expect("insert");
        }
    }
    transaction.commit().expect("commit");
}

/// Point gets or scans from one thread per core, each holding a read
/// transaction (redb's cheapest path, like PhotonDB's in-shard gets).
fn redb_reads(
    database: &Arc<redb::Database>,
    records: u64,
    operations_per_thread: u64,
    scan_rows: usize,
) -> Measurement {
    let threads = std::thread::available_parallelism().map_or(1, |count| count.get());
    // Keys are made before timing starts, as for PhotonDB.
    let keys: Arc<Vec<Bytes>> = Arc::new((0..records).map(key_of).collect());
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (database, keys) = (database.clone(), keys.clone());
            std::thread::spawn(move || {
                let transaction = database.begin_read().expect("read");
                let table = transaction.open_table(REDB_TABLE).expect("table");
                let mut random = Random(0x51_7CC1_B727_220A + thread as u64);
                let mut latency = histogram();
                // Sampled timing, as for PhotonDB's in-shard gets.
                for index in 0..operations_per_thread {
                    let id = random.next() % records.saturating_sub(scan_rows as u64).max(1);
                    let key = &keys[id as usize];
                    let begun = (index % 16 == 0).then(Instant::now);
                    if scan_rows == 0 {
                        assert!(table.get(key.as_ref()).expect("get").is_some());
                    } else {
                        let rows = table
                            .range(key.as_ref()..)
                            .expect("range")
                            .take(scan_rows)
                            .count();
                        assert_eq!(rows, scan_rows);
                    }
                    if let Some(begun) = begun {
                        latency
                            .record(begun.elapsed().as_nanos() as u64)
                            .expect("record");
                    }
                }
                (latency, operations_per_thread)
            })
        })
        .collect();
    let mut latency = histogram();
    let mut operations = 0;
    for handle in handles {
        let (thread_latency, thread_operations) = handle.join().expect("reader");
        latency.add(&thread_latency).expect("merge");
        operations += thread_operations;
    }
    Measurement {
        operations,
        elapsed: started.elapsed(),
        latency,
    }
}

// ----- report ----------------------------------------------------------------

struct Row {
    workload: String,
    photondb: Measurement,
    redb: Measurement,
}

fn cell(measurement: &Measurement) -> String {
    format!(
        "{:>10.0} | {:>8.1} | {:>8.1} | {:>8.1} | {:>9.1}",
        measurement.per_second(),
        measurement.micros(0.5),
        measurement.micros(0.99),
        measurement.micros(0.999),
        measurement.latency.max() as f64 / 1000.0
    )
}

fn main() {
    let options = options();
    let scratch = tempfile::tempdir_in(&options.directory).expect("scratch directory");
    let machine = machine::describe(scratch.path());
    eprintln!("measuring the machine's fdatasync latency and direct-I/O bandwidth…");
    let sync = machine::fdatasync_latency(scratch.path(), 2000);
    let (write_bandwidth, read_bandwidth) = machine::direct_io_bandwidth(scratch.path(), 256);
    let sync_p50_us = sync.value_at_quantile(0.5) as f64 / 1000.0;
    let sync_p99_us = sync.value_at_quantile(0.99) as f64 / 1000.0;

    let mut config = EngineConfig::new(scratch.path().join("photondb"));
    config.wal_ring_bytes = 64 << 20;
    config.partitions = options.partitions;
    let engine = Engine::start(config).expect("engine");
    let table =
        futures::executor::block_on(engine.create_table("test", "bench", "id", Durability::Hard))
            .expect("table")
            .id;
    let database = Arc::new(redb::Database::create(scratch.path().join("redb.db")).expect("redb"));

    let mut rows = Vec::new();
    let mut base = 10_000_000_000u64;
    for &writers in &options.writers {
        eprintln!("durable inserts, {writers} writers…");
        let photondb = photondb_inserts(&engine, table, writers, options.seconds, base);
        let redb = redb_inserts(&database, writers, options.seconds, base);
        base += 1_000_000_000;
        rows.push(Row {
            workload: format!("insert, hard, {writers} writers"),
            photondb,
            redb,
        });
    }

    for &writers in &options.writers {
        eprintln!("durable inserts inside the shards, {writers} writers…");
        let photondb = photondb_local_inserts(&engine, table, writers, options.seconds, base);
        let redb = rows
            .iter()
            .find(|row| row.workload == format!("insert, hard, {writers} writers"))
            .expect("measured above")
            .redb
            .clone();
        base += 1_000_000_000;
        rows.push(Row {
            workload: format!("insert, hard, {writers} writers, in-shard"),
            photondb,
            redb,
        });
    }

    eprintln!("preloading {} documents…", options.records);
    let read_table =
        futures::executor::block_on(engine.create_table("test", "reads", "id", Durability::Soft))
            .expect("table")
            .id;
    photondb_preload(&engine, read_table, options.records);
    redb_preload(&database, options.records);

    eprintln!("point gets…");
    let gets_per_partition = 2_000_000 / engine.partitions() as u64;
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get()) as u64;
    let photondb = photondb_local_gets(&engine, read_table, options.records, gets_per_partition);
    let redb = redb_reads(&database, options.records, 2_000_000 / cores, 0);
    rows.push(Row {
        workload: "get, in-shard / per-core reader".into(),
        photondb,
        redb: redb.clone(),
    });
    let photondb = photondb_engine_gets(&engine, read_table, options.records, 1, options.seconds);
    rows.push(Row {
        workload: "get, engine handle, 1 in flight".into(),
        photondb,
        redb: redb.clone(),
    });
    let photondb = photondb_engine_gets(&engine, read_table, options.records, 64, options.seconds);
    rows.push(Row {
        workload: "get, engine handle, 64 in flight".into(),
        photondb,
        redb,
    });

    eprintln!("range scans…");
    let photondb = photondb_scans(&engine, read_table, options.records, 16, options.seconds);
    let redb = redb_reads(&database, options.records, 20_000, 100);
    rows.push(Row {
        workload: "scan 100 rows, 16 in flight".into(),
        photondb,
        redb,
    });
    engine.shutdown().expect("shutdown");

    println!("## Storage engine: PhotonDB beside redb\n");
    println!(
        "Machine: {} cores ({}), {} GiB, kernel {}, {} on {}. fdatasync after a 4 KiB write: p50 {sync_p50_us:.0} µs, p99 {sync_p99_us:.0} µs \
         (≈ {:.0} syncs/s back to back). Direct I/O, 1 MiB blocks: write {write_bandwidth:.0} MB/s, read {read_bandwidth:.0} MB/s.\n",
        machine["cores"], machine["cpu"].as_str().unwrap_or(""), machine["memory_gib"], machine["kernel"].as_str().unwrap_or(""),
        machine["file_system"].as_str().unwrap_or(""), machine["device"].as_str().unwrap_or(""),
        1e6 / sync_p50_us.max(1.0),
    );
    println!("Latencies in µs. Ratio = PhotonDB/redb throughput.\n");
    println!("| workload | PhotonDB ops/s | p50 | p99 | p99.9 | max | redb ops/s | p50 | p99 | p99.9 | max | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.2}× |",
            row.workload,
            cell(&row.photondb),
            cell(&row.redb),
            row.photondb.per_second() / row.redb.per_second()
        );
    }
    if let Some(path) = options.json {
        let report = json!({
            "benchmark": "storage",
            "machine": machine,
            "fdatasync_us": { "p50": sync_p50_us, "p99": sync_p99_us },
            "direct_io_mb_per_second": { "write": write_bandwidth, "read": read_bandwidth },
            "seconds_per_workload": options.seconds,
            "records": options.records,
            "results": rows.iter().map(|row| json!({
                "workload": row.workload,
                "photondb": row.photondb.to_json(),
                "redb": row.redb.to_json(),
                "throughput_ratio": row.photondb.per_second() / row.redb.per_second(),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write report");
        eprintln!("report written to {}", path.display());
    }
}
