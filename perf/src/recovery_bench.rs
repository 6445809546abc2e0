//! Recovery after kill -9, PhotonDB beside redb in the same run.
//!
//! ```text
//! cargo run --release -p photondb-perf --bin recovery-bench -- [--gib 1] [--dir PATH] [--json FILE]
//! ```
//! For each engine a child process loads about `--gib` GiB of 1 KiB
//! documents (batches of 1,000, the last one made durable), reports how
//! many it stored, and is killed with SIGKILL while the engine is open.
//! The parent then opens the same files and times how long it takes until
//! every row can be served, and checks the row count. PhotonDB verifies
//! every page in use and replays its WAL at open; redb repairs its file
//! after an unclean shutdown.

#[allow(dead_code)] // Shared with storage-bench, which uses the rest.
mod machine;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use photondb_datum::{document, key, Datum, Object};
use photondb_runtime::{Engine, EngineConfig};
use photondb_storage::{Conflict, Durability, Mutation};
use serde_json::json;

const DOCUMENT_BYTES: usize = 1024;
const BATCH: u64 = 1000;
const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");

fn document_of(id: u64) -> Bytes {
    let mut fields = Object::new();
    fields.insert("id".into(), Datum::Number(id as f64));
    fields.insert(
        "body".into(),
        Datum::String(format!("{id:020}").repeat(DOCUMENT_BYTES / 20 - 1)),
    );
    Bytes::from(document::encode(&Datum::Object(fields)))
}

fn rows_for(gib: f64) -> u64 {
    ((gib * (1u64 << 30) as f64) / DOCUMENT_BYTES as f64) as u64 / BATCH * BATCH
}

/// Child: loads PhotonDB, says how many rows, then waits to be killed.
fn load_photondb(directory: &Path, rows: u64) -> ! {
    let mut config = EngineConfig::new(directory);
    config.partitions = 8;
    let engine = Engine::start(config).expect("engine");
    let table =
        futures::executor::block_on(engine.create_table("test", "bench", "id", Durability::Hard))
            .expect("table")
            .id;
    for first in (0..rows).step_by(BATCH as usize) {
        let durability = if first + BATCH >= rows {
            Durability::Hard
        } else {
            Durability::Soft
        };
        let mutations = (first..first + BATCH)
            .map(|id| Mutation::Put {
                table,
                key: Bytes::from(key::encode(&Datum::Number(id as f64))),
                value: document_of(id),
                conflict: Conflict::Replace,
            })
            .collect();
        futures::executor::block_on(engine.write(mutations, durability)).expect("load");
    }
    futures::executor::block_on(engine.sync()).expect("sync");
    println!("loaded {rows}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn load_redb(path: &Path, rows: u64) -> ! {
    let database = redb::Database::create(path).expect("redb");
    for first in (0..rows).step_by(BATCH as usize) {
        let transaction = database.begin_write().expect("begin");
        {
            let mut table = transaction.open_table(REDB_TABLE).expect("table");
            for id in first..first + BATCH {
                table.insert(id, document_of(id).as_ref()).expect("insert");
            }
        }
        transaction.commit().expect("commit");
    }
    println!("loaded {rows}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs a loading child to the point it reports, then kills it -9.
fn load_and_kill(mode: &str, target: &Path, rows: u64) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([mode, &target.display().to_string(), &rows.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("loader");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("report");
    assert_eq!(line.trim(), format!("loaded {rows}"), "the loader finished");
    let loaded = started.elapsed();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    loaded
}

fn directory_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map_or(0, |metadata| metadata.len());
    }
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| directory_bytes(&entry.path()))
            .sum()
    })
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.first().map(String::as_str) {
        Some("--load-photondb") => load_photondb(
            Path::new(&arguments[1]),
            arguments[2].parse().expect("rows"),
        ),
        Some("--load-redb") => load_redb(
            Path::new(&arguments[1]),
            arguments[2].parse().expect("rows"),
        ),
        _ => {}
    }
    let mut gib = 1.0f64;
    let mut directory = PathBuf::from(".");
    let mut json_path = None;
    let mut index = 0;
    while index < arguments.len() {
        let value = arguments.get(index + 1).cloned().unwrap_or_default();
        match arguments[index].as_str() {
            "--gib" => gib = value.parse().expect("--gib takes a number"),
            "--dir" => directory = PathBuf::from(value),
            "--json" => json_path = Some(PathBuf::from(value)),
            other => panic!("unknown argument {other}"),
        }
        index += 2;
    }
    let scratch = tempfile::tempdir_in(&directory).expect("scratch directory");
    let machine = machine::describe(scratch.path());
    let (_, read_bandwidth) = machine::direct_io_bandwidth(scratch.path(), 256);
    let rows = rows_for(gib);

    eprintln!("PhotonDB: loading {rows} documents of {DOCUMENT_BYTES} bytes, then kill -9…");
    let photondb_directory = scratch.path().join("photondb");
    let photondb_load = load_and_kill("--load-photondb", &photondb_directory, rows);
    let photondb_bytes = directory_bytes(&photondb_directory);
    let started = Instant::now();
    let mut config = EngineConfig::new(&photondb_directory);
    config.partitions = 8;
    let engine = Engine::start(config).expect("recovery");
    let photondb_recovery = started.elapsed();
    let table = engine.table("test", "bench").expect("table survived").id;
    let count = futures::executor::block_on(engine.count(table)).expect("count");
    assert_eq!(count, rows, "every acknowledged row is back");
    engine.shutdown().expect("shutdown");

    eprintln!("redb: loading {rows} documents, then kill -9…");
    let redb_path = scratch.path().join("redb.db");
    let redb_load = load_and_kill("--load-redb", &redb_path, rows);
    let redb_bytes = directory_bytes(&redb_path);
    let started = Instant::now();
    let database = redb::Database::create(&redb_path).expect("redb recovery");
    let redb_recovery = started.elapsed();
    {
        use redb::ReadableTableMetadata;
        let transaction = database.begin_read().expect("read");
        let table = transaction.open_table(REDB_TABLE).expect("table");
        assert_eq!(
            table.len().expect("len"),
            rows,
            "every committed row is back"
        );
    }

    println!("## Recovery after kill -9: PhotonDB beside redb\n");
    println!(
        "Machine: {} cores, {} GiB, kernel {}, {} on {}; direct-I/O reads at {read_bandwidth:.0} MB/s.\n",
        machine["cores"], machine["memory_gib"], machine["kernel"].as_str().unwrap_or(""),
        machine["file_system"].as_str().unwrap_or(""), machine["device"].as_str().unwrap_or(""),
    );
    println!("{rows} documents of {DOCUMENT_BYTES} bytes, loaded in batches of {BATCH}, the last one durable; the loader is killed with SIGKILL, then the files are opened again.\n");
    println!("| engine | files after the load | load time | open after kill -9 | rows back |");
    println!("|---|---:|---:|---:|---:|");
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    println!(
        "| PhotonDB | {:.0} MiB | {:.1} s | {:.2} s | {count} |",
        mib(photondb_bytes),
        photondb_load.as_secs_f64(),
        photondb_recovery.as_secs_f64()
    );
    println!(
        "| redb | {:.0} MiB | {:.1} s | {:.2} s | {rows} |",
        mib(redb_bytes),
        redb_load.as_secs_f64(),
        redb_recovery.as_secs_f64()
    );
    println!(
        "\nRecovery time ratio PhotonDB/redb: {:.2}×",
        photondb_recovery.as_secs_f64() / redb_recovery.as_secs_f64().max(1e-9)
    );
    if let Some(path) = json_path {
        let report = json!({
            "benchmark": "recovery",
            "machine": machine,
            "documents": rows,
            "document_bytes": DOCUMENT_BYTES,
            "photondb": { "bytes": photondb_bytes, "load_seconds": photondb_load.as_secs_f64(), "recovery_seconds": photondb_recovery.as_secs_f64() },
            "redb": { "bytes": redb_bytes, "load_seconds": redb_load.as_secs_f64(), "recovery_seconds": redb_recovery.as_secs_f64() },
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("json"))
            .expect("write report");
    }
}
