//! The server through the RethinkDB wire protocol: point `get` over one
//! connection with 64 queries in flight, and single-document hard-durability
//! inserts from 64 connections, with HdrHistogram p50/p99/p99.9.
//!
//! ```text
//! cargo build --release -p photondb -p photondb-perf
//! target/release/driver-bench [--seconds 5] [--records 100000] [--binary target/release/photondb] [--dir PATH]
//! ```
//! It starts `photondb serve` on a free port with a fresh data directory and
//! speaks the protocol itself (`wire.rs`), so no driver's overhead is
//! measured. The PostgreSQL peer for whole-server
//! figures arrives with the benchmark suite (`photondb bench`).

mod machine;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use wire::{start_server, table, Connection};

fn report(name: &str, operations: u64, elapsed: Duration, latency: &Histogram<u64>) {
    println!(
        "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
        operations as f64 / elapsed.as_secs_f64(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.value_at_quantile(0.999) as f64 / 1000.0,
        latency.max() as f64 / 1000.0,
    );
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str, default: &str| -> String {
        arguments
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| arguments.get(index + 1).cloned())
            .unwrap_or_else(|| default.to_owned())
    };
    let seconds: f64 = option("--seconds", "5").parse().expect("--seconds");
    let records: u64 = option("--records", "100000").parse().expect("--records");
    let binary = option("--binary", "target/release/photondb");
    let scratch =
        tempfile::tempdir_in(PathBuf::from(option("--dir", "."))).expect("scratch directory");
    let machine = machine::describe(scratch.path());
    let sync = machine::fdatasync_latency(scratch.path(), 1000);
    let (write_bandwidth, _) = machine::direct_io_bandwidth(scratch.path(), 64);
    let (mut server, port) = start_server(&binary, scratch.path());

    let mut setup = Connection::open(port);
    setup.run(json!([60, [[14, ["test"]], "bench"]]));
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let documents: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"id": id, "name": format!("user-{id}"), "payload": "x".repeat(150)}))
            .collect();
        setup.run(json!([56, [table("bench"), [2, documents]], {"durability": "soft"}]));
    }
    setup.run(json!([138, [table("bench")]]));

    // Point gets, one connection, 64 in flight.
    let mut connection = Connection::open(port);
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let mut sent_at: HashMap<u64, Instant> = HashMap::new();
    let mut next_token = 1u64;
    let mut random = 0x2545_F491_4F6C_DD1Du64;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut completed = 0u64;
    loop {
        while sent_at.len() < 64 && Instant::now() < deadline {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            connection.send(
                next_token,
                &json!([1, [16, [table("bench"), random % records]], {}]),
            );
            sent_at.insert(next_token, Instant::now());
            next_token += 1;
        }
        if sent_at.is_empty() {
            break;
        }
        let (token, response) = connection.receive();
        assert_eq!(response["t"], 1, "get failed: {response}");
        let begun = sent_at.remove(&token).expect("a token we sent");
        latency
            .record(begun.elapsed().as_nanos() as u64)
            .expect("record");
        completed += 1;
    }
    let gets = (completed, started.elapsed(), latency);

    // Scans (before the inserts below add rows with other ids): the whole
    // table counted, counted through a filter, and grouped and counted; documents scanned per second, and per core.
    let id_of_row = json!([170, [[10, [1]], "id"]]);
    let scans = [
        // Answered from each partition's row count: nothing is scanned.
        (
            "count() (row counts kept per partition)",
            json!([43, [table("bench")]]),
        ),
        (
            "filter(id % 2 == 0).count()",
            json!([
                43,
                [[
                    39,
                    [
                        table("bench"),
                        [69, [[2, [1]], [17, [[28, [id_of_row, 2]], 0]]]]
                    ]
                ]]
            ]),
        ),
        (
            "group(id % 10).count()",
            json!([
                43,
                [[
                    144,
                    [table("bench"), [69, [[2, [1]], [28, [id_of_row, 10]]]]]
                ]]
            ]),
        ),
    ];
    let documents = setup
        .run(json!([43, [table("bench")]]))
        .as_u64()
        .expect("a count");
    let mut scan_rows = Vec::new();
    for (name, query) in scans {
        let mut latency = Histogram::<u64>::new(3).expect("histogram");
        let started = Instant::now();
        let mut runs = 0u64;
        while runs < 3 || started.elapsed() < Duration::from_secs_f64(seconds.min(10.0)) {
            let begun = Instant::now();
            setup.run(query.clone());
            latency
                .record(begun.elapsed().as_nanos() as u64)
                .expect("record");
            runs += 1;
        }
        scan_rows.push((name, runs, started.elapsed(), latency));
    }

    // Hard-durability inserts, 64 connections, one insert at a time each.
    let stop = Arc::new(AtomicBool::new(false));
    let merged = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let started = Instant::now();
    let threads: Vec<_> = (0..64u64)
        .map(|writer| {
            let (stop, merged) = (stop.clone(), merged.clone());
            std::thread::spawn(move || {
                let mut connection = Connection::open(port);
                let mut latency = Histogram::<u64>::new(3).expect("histogram");
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let document =
                        json!({"id": format!("w{writer}-{sequence}"), "payload": "y".repeat(150)});
                    let begun = Instant::now();
                    let result = connection
                        .run(json!([56, [table("bench"), document], {"durability": "hard"}]));
                    assert_eq!(result["inserted"], 1, "insert failed: {result}");
                    latency
                        .record(begun.elapsed().as_nanos() as u64)
                        .expect("record");
                    sequence += 1;
                }
                merged
                    .lock()
                    .expect("merge lock")
                    .add(&latency)
                    .expect("merge");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("writer");
    }
    let elapsed = started.elapsed();
    let inserts = merged.lock().expect("merge lock").clone();

    println!("## Server through the driver protocol\n");
    println!(
        "Machine: {} cores, {} GiB, kernel {}, {} on {}; fdatasync p50 {:.0} µs, p99 {:.0} µs; direct-I/O writes {write_bandwidth:.0} MB/s. {} documents preloaded.\n",
        machine["cores"], machine["memory_gib"], machine["kernel"].as_str().unwrap_or(""), machine["file_system"].as_str().unwrap_or(""),
        machine["device"].as_str().unwrap_or(""), sync.value_at_quantile(0.5) as f64 / 1000.0, sync.value_at_quantile(0.99) as f64 / 1000.0, records,
    );
    println!("| workload | ops/s | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    report("get, 1 connection, 64 in flight", gets.0, gets.1, &gets.2);
    report(
        "insert, hard, 64 connections",
        inserts.len(),
        elapsed,
        &inserts,
    );
    let cores = machine["cores"].as_u64().unwrap_or(1).max(1) as f64;
    println!("\nScans of the {documents}-document table (one query at a time):\n");
    println!("| query | queries/s | p50 ms | documents/s | per core |");
    println!("|---|---:|---:|---:|---:|");
    for (name, runs, elapsed, latency) in scan_rows {
        let per_second = runs as f64 * documents as f64 / elapsed.as_secs_f64();
        println!(
            "| {name} | {:.2} | {:.1} | {per_second:.0} | {:.0} |",
            runs as f64 / elapsed.as_secs_f64(),
            latency.value_at_quantile(0.5) as f64 / 1e6,
            per_second / cores
        );
    }

    let _ = server.kill();
    let _ = server.wait();
}
