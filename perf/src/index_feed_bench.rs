//! Secondary indexes and changefeeds through the wire protocol.
//!
//! ```text
//! cargo build --release -p photondb -p photondb-perf
//! target/release/index-feed-bench [--records 1000000] [--seconds 5] [--binary target/release/photondb] [--dir PATH]
//! ```
//! 1. Loads `--records` documents (`group` = id % 1000, a random `score`),
//!    indexes both fields, and times `get_all(g, index='group')` against
//!    `filter({'group': g})`, and `order_by(index='score').limit(10)`
//!    against `order_by('score').limit(10)` — the same answers with and
//!    without an index.
//! 2. Changefeed delivery: 1, 100 and 1,000 subscribers on one table, one
//!    writer making hard-durability inserts; latency from the insert being
//!    sent to each subscriber receiving the change (HdrHistogram).

#[allow(dead_code)] // Not every benchmark reports every measurement.
mod machine;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use wire::{start_server, table, Connection};

/// Feeds per subscriber connection (each on its own token).
const FEEDS_PER_CONNECTION: usize = 50;

/// Microseconds since 1970: exact in a JSON number (below 2^53).
fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Runs `query` repeatedly (at least 3 times, about `seconds`); returns
/// runs per second, p50 milliseconds and the rows of the last run.
fn time_query(
    connection: &mut Connection,
    query: &Value,
    global: &Value,
    seconds: f64,
) -> (f64, f64, usize) {
    let mut latency = Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    let mut runs = 0u64;
    let mut rows = 0;
    while runs < 3 || started.elapsed() < Duration::from_secs_f64(seconds) {
        let begun = Instant::now();
        rows = connection.collect(query.clone(), global.clone());
        latency
            .record(begun.elapsed().as_micros() as u64)
            .expect("record");
        runs += 1;
    }
    (
        runs as f64 / started.elapsed().as_secs_f64(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        rows,
    )
}

/// Subscribers on `subscribers` feeds of table `feeds`, one writer making
/// `writes` inserts; returns the merged delivery latency (µs) and the
/// changes delivered.
fn feed_latency(port: u16, subscribers: usize, writes: u64) -> (Histogram<u64>, u64) {
    let mut setup = Connection::open(port);
    let name = format!("feeds{subscribers}");
    setup.run(json!([60, [[14, ["test"]], name.clone()]]));
    let connections = subscribers.div_ceil(FEEDS_PER_CONNECTION);
    let ready = Arc::new(Barrier::new(connections + 1));
    let merged = Arc::new(Mutex::new((
        Histogram::<u64>::new(3).expect("histogram"),
        0u64,
    )));
    let threads: Vec<_> = (0..connections)
        .map(|index| {
            let feeds = FEEDS_PER_CONNECTION.min(subscribers - index * FEEDS_PER_CONNECTION);
            let (ready, merged, name) = (ready.clone(), merged.clone(), name.clone());
            std::thread::spawn(move || {
                let mut connection = Connection::open(port);
                for token in 1..=feeds as u64 {
                    connection.send(token, &json!([1, [152, [table(&name)]], {}]));
                }
                for _ in 0..feeds {
                    let (token, response) = connection.receive();
                    assert_eq!(response["t"], 3, "feed {token} did not start: {response}");
                    connection.send(token, &json!([2]));
                }
                ready.wait();
                let mut latency = Histogram::<u64>::new(3).expect("histogram");
                let mut delivered = 0u64;
                let expected = writes * feeds as u64;
                let deadline = Instant::now() + Duration::from_secs(120);
                while delivered < expected && Instant::now() < deadline {
                    let (token, response) = connection.receive();
                    let received = now_micros();
                    for change in response["r"].as_array().expect("a batch") {
                        let sent = change["new_val"]["sent"].as_u64().expect("a send time");
                        latency
                            .record(received.saturating_sub(sent))
                            .expect("record");
                        delivered += 1;
                    }
                    if delivered < expected {
                        connection.send(token, &json!([2]));
                    }
                }
                let mut merged = merged.lock().expect("merge lock");
                merged.0.add(&latency).expect("merge");
                merged.1 += delivered;
            })
        })
        .collect();
    ready.wait();
    let mut writer = Connection::open(port);
    for id in 0..writes {
        writer.run(
            json!([56, [table(&name), {"id": id, "sent": now_micros()}], {"durability": "hard"}]),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for thread in threads {
        thread.join().expect("subscriber");
    }
    let merged = merged.lock().expect("merge lock");
    (merged.0.clone(), merged.1)
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
    let records: u64 = option("--records", "1000000").parse().expect("--records");
    let binary = option("--binary", "target/release/photondb");
    let scratch =
        tempfile::tempdir_in(PathBuf::from(option("--dir", "."))).expect("scratch directory");
    let machine = machine::describe(scratch.path());
    let sync = machine::fdatasync_latency(scratch.path(), 1000);
    let (mut server, port) = start_server(&binary, scratch.path());

    let mut setup = Connection::open(port);
    setup.run(json!([60, [[14, ["test"]], "indexed"]]));
    let mut random = 0x2545_F491_4F6C_DD1Du64;
    let load_started = Instant::now();
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let documents: Vec<Value> = chunk
            .iter()
            .map(|id| {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                json!({"id": id, "group": id % 1000, "score": random % 1_000_000_000, "payload": "x".repeat(100)})
            })
            .collect();
        setup.run(json!([56, [table("indexed"), [2, documents]], {"durability": "soft"}]));
    }
    setup.run(json!([138, [table("indexed")]]));
    let load = load_started.elapsed();
    let build_started = Instant::now();
    setup.run(json!([75, [table("indexed"), "group"]]));
    setup.run(json!([75, [table("indexed"), "score"]]));
    setup.run(json!([140, [table("indexed")]]));
    let build = build_started.elapsed();

    let no_options = json!({});
    let big_arrays = json!({"array_limit": records + 1});
    let group_field = json!([170, [[10, [1]], "group"]]);
    let queries = [
        (
            "get_all(7, index='group')",
            json!([78, [table("indexed"), 7], {"index": "group"}]),
            &no_options,
        ),
        (
            "filter(row['group'] == 7)",
            json!([
                39,
                [table("indexed"), [69, [[2, [1]], [17, [group_field, 7]]]]]
            ]),
            &no_options,
        ),
        (
            "order_by(index='score').limit(10)",
            json!([71, [[41, [table("indexed")], {"index": "score"}], 10]]),
            &no_options,
        ),
        (
            "order_by('score').limit(10)",
            json!([71, [[41, [table("indexed"), "score"]], 10]]),
            &big_arrays,
        ),
    ];
    let mut timed = Vec::new();
    for (name, query, global) in queries {
        let (per_second, p50, rows) = time_query(&mut setup, &query, global, seconds);
        timed.push((name, per_second, p50, rows));
    }

    let mut feeds = Vec::new();
    for subscribers in [1usize, 100, 1000] {
        let writes = 200;
        let (latency, delivered) = feed_latency(port, subscribers, writes);
        feeds.push((subscribers, writes, latency, delivered));
    }

    println!("## Secondary indexes and changefeeds through the driver protocol\n");
    println!(
        "Machine: {} cores, {} GiB, kernel {}, {} on {}; fdatasync p50 {:.0} µs, p99 {:.0} µs.\n",
        machine["cores"],
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["file_system"].as_str().unwrap_or(""),
        machine["device"].as_str().unwrap_or(""),
        sync.value_at_quantile(0.5) as f64 / 1000.0,
        sync.value_at_quantile(0.99) as f64 / 1000.0,
    );
    println!(
        "{records} documents loaded (soft, batches of 1,000) in {:.1} s; two indexes built over them in {:.1} s ({:.0} rows/s per index).\n",
        load.as_secs_f64(),
        build.as_secs_f64(),
        2.0 * records as f64 / build.as_secs_f64()
    );
    println!("| query | rows | queries/s | p50 ms |");
    println!("|---|---:|---:|---:|");
    for (name, per_second, p50, rows) in &timed {
        println!("| {name} | {rows} | {per_second:.2} | {p50:.2} |");
    }
    println!("\nIndexed vs not: get_all {:.0}× the filter's rate; order_by(index).limit(10) {:.0}× the sort's.\n", timed[0].1 / timed[1].1, timed[2].1 / timed[3].1);
    println!("Changefeed delivery (insert sent → change received; hard durability, one insert every 5 ms):\n");
    println!("| subscribers | changes delivered | p50 µs | p99 µs | max µs |");
    println!("|---:|---:|---:|---:|---:|");
    for (subscribers, writes, latency, delivered) in &feeds {
        println!(
            "| {subscribers} | {delivered} of {} | {} | {} | {} |",
            *subscribers as u64 * writes,
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99),
            latency.max()
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}
