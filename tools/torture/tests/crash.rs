//! kill -9 torture: a child process makes hard-durability writes from many
//! threads; the harness SIGKILLs it at random moments, restarts it on the
//! same data directory, and checks that every acknowledged write is there
//! with its last acknowledged value (or a later attempted one), and that
//! every document is whole. From the second cycle on, a secondary index is
//! created and built while the writers write; after every restart its
//! entries must be exactly those the documents call for.
//!
//! `PHOTONDB_CRASH_CYCLES` sets the number of kill/restart cycles (20 by
//! default, as CI runs it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use bytes::Bytes;
use photondb_runtime::{block_on_thread, Engine, EngineConfig};
use photondb_storage::ScanRange;
use photondb_torture::{expected_entries, key_for, verify, FieldIndexes, DATABASE, INDEX, TABLE};

const WRITERS: u32 = 32;
const SLOTS: u32 = 8;

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[derive(Default, Clone, Copy)]
struct Slot {
    acknowledged: u64,
    attempted: u64,
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let cycles: u32 = std::env::var("PHOTONDB_CRASH_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash torture: {cycles} cycles, seed {seed}");
    let mut random = Random(seed);
    let directory = tempfile::tempdir().unwrap();
    let mut slots: HashMap<(u32, u32), Slot> = HashMap::new();
    let mut total_acknowledged = 0u64;
    let mut indexes_checked = 0;
    for cycle in 0..cycles {
        let first_sequence = (cycle as u64 + 1) * 1_000_000_000;
        let mut child = Command::new(env!("CARGO_BIN_EXE_photondb-torture-writer"))
            .args([
                directory.path().to_str().unwrap(),
                &WRITERS.to_string(),
                &SLOTS.to_string(),
                &first_sequence.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = received
            .recv_timeout(Duration::from_secs(60))
            .expect("writer starts");
        assert_eq!(ready, "ready");
        let run_for = Duration::from_millis(50 + random.below(400));
        let started = Instant::now();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
        let mut acknowledged_this_cycle = 0;
        for line in received.try_iter() {
            let parts: Vec<&str> = line.split(' ').collect();
            // A line cut by the kill is not an acknowledgement.
            let [kind, writer, slot, sequence] = parts[..] else {
                continue;
            };
            let (Ok(writer), Ok(slot), Ok(sequence)) =
                (writer.parse(), slot.parse(), sequence.parse::<u64>())
            else {
                continue;
            };
            let entry = slots.entry((writer, slot)).or_default();
            match kind {
                "ack" => {
                    entry.acknowledged = entry.acknowledged.max(sequence);
                    acknowledged_this_cycle += 1;
                }
                "try" => entry.attempted = entry.attempted.max(sequence),
                _ => {}
            }
        }
        total_acknowledged += acknowledged_this_cycle;

        // Recover in this process and check every slot.
        let mut config = EngineConfig::new(directory.path());
        config.pin_to_cores = false;
        config.index_compiler = Some(std::sync::Arc::new(FieldIndexes));
        let engine = Engine::start(config)
            .unwrap_or_else(|error| panic!("cycle {cycle}: recovery failed: {error}"));
        let table = engine.table(DATABASE, TABLE).expect("table survives");
        if let Some(index) = engine.index(table.id, INDEX) {
            // A build the kill interrupted resumes at start: wait for it.
            let waited = Instant::now();
            while !engine
                .index(table.id, INDEX)
                .is_some_and(|index| index.ready)
            {
                assert!(
                    waited.elapsed() < Duration::from_secs(60),
                    "cycle {cycle}: the index build did not finish"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            let rows = block_on_thread(engine.scan(table.id, ScanRange::all())).unwrap();
            let entries: BTreeSet<Bytes> = block_on_thread(engine.scan(index.id, ScanRange::all()))
                .unwrap()
                .into_iter()
                .map(|(entry, _)| entry)
                .collect();
            let expected = expected_entries(&rows);
            assert!(entries == expected, "cycle {cycle}: index entries disagree with documents: {} entries, {} expected, {} missing, {} extra",
                entries.len(), expected.len(), expected.difference(&entries).count(), entries.difference(&expected).count());
            indexes_checked += 1;
        }
        for (&(writer, slot), expected) in &slots {
            let stored = block_on_thread(engine.get(table.id, key_for(writer, slot))).unwrap();
            if expected.acknowledged == 0 {
                continue;
            }
            let stored = stored.unwrap_or_else(|| {
                panic!(
                    "cycle {cycle}: w{writer} k{slot} acknowledged at {} is missing",
                    expected.acknowledged
                )
            });
            let sequence = verify(&stored).unwrap_or_else(|error| {
                panic!("cycle {cycle}: w{writer} k{slot} is damaged: {error}")
            });
            assert!(
                sequence >= expected.acknowledged && sequence <= expected.attempted.max(expected.acknowledged),
                "cycle {cycle}: w{writer} k{slot} holds sequence {sequence}, acknowledged {}, attempted {}",
                expected.acknowledged,
                expected.attempted
            );
        }
        engine.shutdown().unwrap();
        eprintln!("cycle {cycle}: killed after {run_for:?}, {acknowledged_this_cycle} acknowledged writes checked");
    }
    assert!(
        total_acknowledged > cycles as u64,
        "the writer made too little progress to test anything"
    );
    assert!(
        cycles < 3 || indexes_checked > 0,
        "the index was never checked"
    );
}
