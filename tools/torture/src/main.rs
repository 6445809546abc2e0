//! The process the crash torture kills.
//!
//! `photondb-torture-writer <data-dir> <writers> <slots> <first-sequence>`
//! opens the engine, then runs `writers` threads, each writing hard-durability
//! puts to its own `slots` keys in turn with increasing sequence numbers. After
//! each acknowledgement it prints `ack <writer> <slot> <sequence>`; before
//! each attempt, `try <writer> <slot> <sequence>`. It never stops by itself.
//! From the second run on it also keeps a secondary index on the documents
//! (created, and built, during that run).

use std::io::Write;
use std::sync::{Arc, Mutex};

use photondb_runtime::{block_on_thread, Engine, EngineConfig};
use photondb_storage::{Conflict, Durability};
use photondb_torture::{document_for, key_for, FieldIndexes, DATABASE, INDEX, TABLE};

fn main() {
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.len() != 5 {
        eprintln!("usage: photondb-torture-writer <data-dir> <writers> <slots> <first-sequence>");
        std::process::exit(2);
    }
    let parse = |index: usize| {
        arguments[index]
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("argument {index} is not a number"))
    };
    let (writers, slots, first_sequence) = (parse(2) as u32, parse(3) as u32, parse(4));
    let mut config = EngineConfig::new(&arguments[1]);
    config.partitions = 4;
    // A small ring so checkpoints happen during the run too.
    config.wal_ring_bytes = 2 << 20;
    config.index_compiler = Some(Arc::new(FieldIndexes));
    let engine = Engine::start(config).expect("engine starts");
    let table = match engine.table(DATABASE, TABLE) {
        Some(table) => table,
        None => block_on_thread(engine.create_table(DATABASE, TABLE, "id", Durability::Hard))
            .expect("create table"),
    };
    // From the second run on (rows exist then), the index is built while
    // the writers write, and the build may be killed half way.
    if first_sequence > 1_000_000_000 && engine.index(table.id, INDEX).is_none() {
        block_on_thread(engine.create_index(&table, INDEX, "bucket".into(), false, false))
            .expect("create index");
    }
    let output = Arc::new(Mutex::new(std::io::stdout()));
    output.lock().unwrap().write_all(b"ready\n").unwrap();
    output.lock().unwrap().flush().unwrap();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let (engine, output) = (engine.clone(), output.clone());
            std::thread::spawn(move || {
                let mut sequence = first_sequence;
                loop {
                    for slot in 0..slots {
                        sequence += 1;
                        let line = format!("try {writer} {slot} {sequence}\n");
                        output.lock().unwrap().write_all(line.as_bytes()).unwrap();
                        let put = engine.put(
                            table.id,
                            key_for(writer, slot),
                            document_for(writer, slot, sequence),
                            Conflict::Replace,
                            Durability::Hard,
                        );
                        block_on_thread(put).expect("hard write");
                        let line = format!("ack {writer} {slot} {sequence}\n");
                        let mut output = output.lock().unwrap();
                        output.write_all(line.as_bytes()).unwrap();
                        output.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
