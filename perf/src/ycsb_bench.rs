//! YCSB against PhotonDB and PostgreSQL, side by side, from one command.
//!
//! Both peers get the same machine, data, key distribution, concurrency
//! (one connection per worker thread) and durability: PhotonDB writes with
//! `durability: hard|soft`, PostgreSQL with `synchronous_commit = on|off`.
//! The PostgreSQL cluster is a throwaway one this program creates in a
//! temporary directory, starts on a loopback port, and removes at the end.
//!
//! Workloads (YCSB core): A 50/50 read/update, B 95/5, C read only,
//! D read latest with 5% inserts, E short scans with 5% inserts, F 50/50
//! read/read-modify-write; zipfian keys (constant 0.99, scrambled), 1 KiB
//! documents of 10 fields. Plus bulk load (batched inserts), a filtered
//! full-table count and `group().count()`.
//!
//! Latencies go into HdrHistograms per worker, merged. With `--target-rate`
//! each operation has an intended start time and its latency counts from
//! then, so a stalled server is charged for the requests it held up
//! (coordinated omission).
//!
//! `cargo run --release -p photondb-perf --bin ycsb-bench -- --help`

#[path = "machine.rs"]
#[allow(dead_code)] // The disk bandwidth probe is for other benchmarks.
mod machine;
#[path = "wire.rs"]
mod wire;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use photondb_client::{r, ConnectOptions, Connection, Term};
use serde_json::{json, Map, Value};

#[derive(Parser)]
struct Arguments {
    /// Documents loaded before the workloads run.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Client threads, one connection each, for every peer.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Seconds each workload runs on each peer.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Workloads to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,f,d,e")]
    workloads: Vec<char>,
    /// Durabilities to run the workloads under (hard, soft).
    #[arg(long, value_delimiter = ',', default_value = "hard,soft")]
    durability: Vec<String>,
    /// Operations per second across all threads (0: as fast as possible).
    /// Latencies then count from each operation's intended start.
    #[arg(long, default_value_t = 0)]
    target_rate: u64,
    /// Documents per insert during the bulk load.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// The PhotonDB server binary.
    #[arg(long, default_value = "target/release/photondb")]
    binary: String,
    /// Where both peers keep their data (a temporary directory inside).
    #[arg(long, default_value = "/tmp")]
    directory: PathBuf,
    /// Where PostgreSQL's programs are (default: the newest under
    /// /usr/lib/postgresql).
    #[arg(long)]
    postgres_bin: Option<PathBuf>,
    /// PostgreSQL's shared_buffers, MiB. PostgreSQL also reads through the
    /// kernel's page cache, which takes what memory is free.
    #[arg(long, default_value_t = 1024)]
    cache_mib: u64,
    /// PhotonDB's `--cache-size` (`auto`, its default, or a size such as
    /// `1GiB`). PhotonDB reads with direct I/O: this cache is all it has.
    #[arg(long, default_value = "auto")]
    photondb_cache: String,
    /// Where to write the Markdown report (a JSON twin goes beside it).
    #[arg(long)]
    output: Option<PathBuf>,
}

// ----- keys, documents, distributions --------------------------------------

/// splitmix64: small, fast, and good enough to pick keys and fill fields.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn text(&mut self, length: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..length)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// YCSB's key for record `number`: hashed, so hot records are spread over
/// the key space rather than clustered at its start.
fn key(number: u64) -> String {
    format!("user{:020}", fnv64(number))
}

/// FNV-1a over a number's bytes, as YCSB's `fnvhash64`.
fn fnv64(number: u64) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in number.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    hash
}

const FIELD_LENGTH: usize = 110;

/// A 1 KiB document: nine 110-character fields and a category (100 values)
/// that `group().count()` groups by.
fn document(number: u64, random: &mut Random) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("id".to_owned(), Value::String(key(number)));
    for field in 0..9 {
        fields.insert(
            format!("field{field}"),
            Value::String(random.text(FIELD_LENGTH)),
        );
    }
    fields.insert(
        "field9".to_owned(),
        Value::String(format!("category-{:03}", number % 100)),
    );
    fields
}

/// Gray et al.'s zipfian generator over `0..items`, as YCSB's.
struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta: f64,
    eta: f64,
}

impl Zipfian {
    const CONSTANT: f64 = 0.99;

    fn new(items: u64) -> Zipfian {
        let theta = Zipfian::CONSTANT;
        let zeta = (1..=items)
            .map(|i| 1.0 / (i as f64).powf(theta))
            .sum::<f64>();
        let zeta2 = 1.0 + 1.0 / 2f64.powf(theta);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zeta),
        }
    }

    fn next(&self, random: &mut Random) -> u64 {
        let u = random.unit();
        let uz = u * self.zeta;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.items as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64 % self.items
    }
}

// ----- the workloads ---------------------------------------------------------

#[derive(Clone, Copy)]
struct Workload {
    description: &'static str,
    read: f64,
    update: f64,
    insert: f64,
    scan: f64,
    read_modify_write: f64,
    /// Keys near the newest insert are hot (workload D), not scattered.
    latest: bool,
}

fn workload(name: char) -> Workload {
    let base = Workload {
        description: "",
        read: 0.0,
        update: 0.0,
        insert: 0.0,
        scan: 0.0,
        read_modify_write: 0.0,
        latest: false,
    };
    match name {
        'a' => Workload {
            description: "50% read, 50% update",
            read: 0.5,
            update: 0.5,
            ..base
        },
        'b' => Workload {
            description: "95% read, 5% update",
            read: 0.95,
            update: 0.05,
            ..base
        },
        'c' => Workload {
            description: "100% read",
            read: 1.0,
            ..base
        },
        'd' => Workload {
            description: "95% read latest, 5% insert",
            read: 0.95,
            insert: 0.05,
            latest: true,
            ..base
        },
        'e' => Workload {
            description: "95% scan (≤100), 5% insert",
            scan: 0.95,
            insert: 0.05,
            ..base
        },
        'f' => Workload {
            description: "50% read, 50% read-modify-write",
            read: 0.5,
            read_modify_write: 0.5,
            ..base
        },
        other => panic!("no YCSB workload `{other}` (a–f)"),
    }
}

enum Operation {
    Read(String),
    Update(String, String, String),
    Insert(String, Map<String, Value>),
    Scan(String, u64),
    ReadModifyWrite(String, String, String),
}

/// What a peer must do; one per worker thread, each with its own connection.
trait Store {
    fn execute(&mut self, operation: &Operation);
    fn bulk_insert(&mut self, documents: Vec<Map<String, Value>>);
    /// Documents whose category (`field9`) sorts before "category-050"
    /// (half of them); returns the count.
    fn filtered_count(&mut self) -> u64;
    /// `group(field9).count()`; returns the number of groups.
    fn group_count(&mut self) -> u64;
}

// ----- PhotonDB ----------------------------------------------------------------

struct PhotonStore {
    connection: Connection,
    table: Term,
    durability: &'static str,
}

impl PhotonStore {
    fn connect(port: u16, durability: &'static str) -> PhotonStore {
        let connection = Connection::connect(&ConnectOptions {
            port,
            ..ConnectOptions::default()
        })
        .expect("connect to PhotonDB");
        PhotonStore {
            connection,
            table: r::db("test").table("usertable"),
            durability,
        }
    }

    fn run(&self, term: &Term) -> Value {
        self.connection
            .run(term)
            .unwrap_or_else(|error| panic!("PhotonDB: {error}"))
    }
}

impl Store for PhotonStore {
    fn execute(&mut self, operation: &Operation) {
        match operation {
            Operation::Read(key) => {
                self.run(&self.table.get(key.as_str()));
            }
            Operation::Update(key, field, value) => {
                let mut change = Map::new();
                change.insert(field.clone(), Value::String(value.clone()));
                self.run(
                    &self
                        .table
                        .get(key.as_str())
                        .update(Value::Object(change))
                        .opt("durability", self.durability),
                );
            }
            Operation::Insert(_, document) => {
                self.run(
                    &self
                        .table
                        .insert(Value::Object(document.clone()))
                        .opt("durability", self.durability),
                );
            }
            Operation::Scan(key, count) => {
                self.run(
                    &self
                        .table
                        .between(key.as_str(), r::maxval())
                        .order_by_index("id")
                        .limit(*count),
                );
            }
            Operation::ReadModifyWrite(key, field, value) => {
                let mut document = self.run(&self.table.get(key.as_str()));
                document[field.as_str()] = Value::String(value.clone());
                self.run(
                    &self
                        .table
                        .get(key.as_str())
                        .replace(document)
                        .opt("durability", self.durability),
                );
            }
        }
    }

    fn bulk_insert(&mut self, documents: Vec<Map<String, Value>>) {
        let documents: Vec<Value> = documents.into_iter().map(Value::Object).collect();
        let result = self.run(
            &self
                .table
                .insert(Value::Array(documents))
                .opt("durability", self.durability),
        );
        assert_eq!(result["errors"], json!(0), "bulk insert failed: {result}");
    }

    fn filtered_count(&mut self) -> u64 {
        self.run(
            &self
                .table
                .filter(r::func(|row| row.field("field9").lt("category-050")))
                .count(),
        )
        .as_u64()
        .expect("a count")
    }

    fn group_count(&mut self) -> u64 {
        let grouped = self.run(&self.table.group("field9").count());
        grouped["data"].as_array().map_or(0, Vec::len) as u64
    }
}

// ----- PostgreSQL ----------------------------------------------------------------

/// A throwaway PostgreSQL cluster, stopped and removed on drop.
struct PostgresCluster {
    directory: tempfile::TempDir,
    programs: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: then its programs run as this user.
    run_as: Option<String>,
}

impl PostgresCluster {
    fn start(parent: &Path, programs: PathBuf, cache_mib: u64) -> PostgresCluster {
        let directory = tempfile::tempdir_in(parent).expect("PostgreSQL directory");
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| "postgres".to_owned());
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(directory.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the PostgreSQL directory failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("probe")
            .local_addr()
            .expect("address")
            .port();
        let cluster = PostgresCluster {
            directory,
            programs,
            port,
            run_as,
        };
        let data = cluster.directory.path().join("data");
        cluster.program(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c shared_buffers={cache_mib}MB \
             -c max_connections=200 -c fsync=on -c full_page_writes=on -c wal_sync_method=fdatasync",
            cluster.directory.path().display()
        );
        let log = cluster.directory.path().join("postgres.log");
        cluster.program(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "120",
                "-o",
                &options,
                "start",
            ],
        );
        cluster
    }

    fn program(&self, name: &str, arguments: &[&str]) {
        let path = self.programs.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        let output = command
            .args(arguments)
            .output()
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(
            output.status.success(),
            "{name} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn connect(&self) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            postgres::NoTls,
        )
        .expect("connect to PostgreSQL")
    }

    /// The postmaster's process id, the first line of its pid file.
    fn postmaster_pid(&self) -> u32 {
        let pid_file = self.directory.path().join("data").join("postmaster.pid");
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no process id in {}", pid_file.display()))
    }

    fn version(&self) -> String {
        let mut client = self.connect();
        client
            .query_one("SHOW server_version", &[])
            .expect("version")
            .get(0)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.directory.path().join("data");
        self.program(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

fn postgres_programs(given: Option<PathBuf>) -> PathBuf {
    if let Some(path) = given {
        return path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (apt-get install postgresql), or pass --postgres-bin")
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL under /usr/lib/postgresql")
}

struct PostgresStore {
    client: postgres::Client,
    read: postgres::Statement,
    update: postgres::Statement,
    insert: postgres::Statement,
    scan: postgres::Statement,
    replace: postgres::Statement,
}

impl PostgresStore {
    fn connect(cluster: &PostgresCluster, synchronous_commit: &str) -> PostgresStore {
        let mut client = cluster.connect();
        client
            .batch_execute(&format!("SET synchronous_commit = {synchronous_commit}"))
            .expect("synchronous_commit");
        let read = client
            .prepare("SELECT doc::text FROM usertable WHERE id = $1")
            .expect("prepare");
        let update = client.prepare("UPDATE usertable SET doc = jsonb_set(doc, ARRAY[$2::text], to_jsonb($3::text)) WHERE id = $1").expect("prepare");
        let insert = client
            .prepare("INSERT INTO usertable (id, doc) VALUES ($1, $2::text::jsonb)")
            .expect("prepare");
        let scan = client
            .prepare("SELECT doc::text FROM usertable WHERE id >= $1 ORDER BY id LIMIT $2")
            .expect("prepare");
        let replace = client
            .prepare("UPDATE usertable SET doc = $2::text::jsonb WHERE id = $1")
            .expect("prepare");
        PostgresStore {
            client,
            read,
            update,
            insert,
            scan,
            replace,
        }
    }

    /// The row as the application sees it: parsed, as PhotonDB's client
    /// parses its responses.
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("PostgreSQL returns JSON")
    }
}

impl Store for PostgresStore {
    fn execute(&mut self, operation: &Operation) {
        match operation {
            Operation::Read(key) => {
                if let Some(row) = self.client.query_opt(&self.read, &[key]).expect("read") {
                    PostgresStore::parse(row.get(0));
                }
            }
            Operation::Update(key, field, value) => {
                self.client
                    .execute(&self.update, &[key, field, value])
                    .expect("update");
            }
            Operation::Insert(key, document) => {
                self.client
                    .execute(
                        &self.insert,
                        &[key, &Value::Object(document.clone()).to_string()],
                    )
                    .expect("insert");
            }
            Operation::Scan(key, count) => {
                for row in self
                    .client
                    .query(&self.scan, &[key, &(*count as i64)])
                    .expect("scan")
                {
                    PostgresStore::parse(row.get(0));
                }
            }
            Operation::ReadModifyWrite(key, field, value) => {
                // Read, change in the client, write back whole, each statement
                // on its own as YCSB's JDBC client does (and PhotonDB, which
                // has no multi-statement transactions).
                let row = self.client.query_one(&self.read, &[key]).expect("read");
                let mut document = PostgresStore::parse(row.get(0));
                document[field.as_str()] = Value::String(value.clone());
                self.client
                    .execute(&self.replace, &[key, &document.to_string()])
                    .expect("write");
            }
        }
    }

    fn bulk_insert(&mut self, documents: Vec<Map<String, Value>>) {
        let keys: Vec<String> = documents
            .iter()
            .map(|document| document["id"].as_str().expect("a key").to_owned())
            .collect();
        let bodies: Vec<String> = documents
            .into_iter()
            .map(|document| Value::Object(document).to_string())
            .collect();
        self.client
            .execute("INSERT INTO usertable (id, doc) SELECT key, body::jsonb FROM unnest($1::text[], $2::text[]) AS batch(key, body)", &[&keys, &bodies])
            .expect("bulk insert");
    }

    fn filtered_count(&mut self) -> u64 {
        let count: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM usertable WHERE doc->>'field9' < 'category-050'",
                &[],
            )
            .expect("count")
            .get(0);
        count as u64
    }

    fn group_count(&mut self) -> u64 {
        self.client
            .query(
                "SELECT doc->>'field9', count(*) FROM usertable GROUP BY 1",
                &[],
            )
            .expect("group")
            .len() as u64
    }
}

// ----- running -------------------------------------------------------------------

/// Latencies in microseconds, and how many operations.
struct Measured {
    operations: u64,
    seconds: f64,
    latency: Histogram<u64>,
    /// CPU seconds the peer's server processes used during the run.
    server_cpu_seconds: f64,
    /// CPU seconds this benchmark's client threads used during the run.
    client_cpu_seconds: f64,
}

/// CPU seconds (user and system) that process `pid` has used, from
/// `/proc/<pid>/stat`; 0 for a process that is gone.
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: fields count from after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / per_second
}

/// The processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.operations as f64 / self.seconds
    }

    fn percentile(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Microseconds of CPU per operation: the server's, the client's.
    fn cpu_per_operation(&self) -> (f64, f64) {
        let per = |seconds: f64| seconds * 1e6 / self.operations.max(1) as f64;
        (per(self.server_cpu_seconds), per(self.client_cpu_seconds))
    }

    fn json(&self) -> Value {
        json!({
            "operations": self.operations,
            "seconds": self.seconds,
            "ops_per_second": self.throughput(),
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "p999_ms": self.percentile(0.999),
            "max_ms": self.latency.max() as f64 / 1000.0,
            "server_cpu_seconds": self.server_cpu_seconds,
            "client_cpu_seconds": self.client_cpu_seconds,
        })
    }
}

/// Loads `records` documents in batches from every thread; returns the
/// seconds it took.
fn bulk_load(stores: &mut [Box<dyn Store + Send>], records: u64, batch: u64) -> f64 {
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for store in stores.iter_mut() {
            let next = &next;
            scope.spawn(move || {
                let mut random = Random(next.load(Ordering::Relaxed) ^ 0x5EED);
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= records {
                        return;
                    }
                    let documents = (first..(first + batch).min(records))
                        .map(|number| document(number, &mut random))
                        .collect();
                    store.bulk_insert(documents);
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// Runs `workload` on every store (one thread each) for `seconds`.
/// Runs `workload` for `seconds` on every store at once. `server_cpu`
/// reads the CPU seconds the peer's server has used so far; it is read
/// with the connections open, so none of the server's processes has left.
fn run_workload(
    stores: &mut [Box<dyn Store + Send>],
    workload: Workload,
    records: &AtomicU64,
    seconds: u64,
    target_rate: u64,
    server_cpu: &dyn Fn() -> f64,
) -> Measured {
    let zipfian = Zipfian::new(records.load(Ordering::Relaxed));
    let stop = Arc::new(AtomicBool::new(false));
    let (server_before, client_before) = (server_cpu(), process_cpu_seconds(std::process::id()));
    let started = Instant::now();
    let interval = (target_rate > 0)
        .then(|| Duration::from_secs_f64(stores.len() as f64 / target_rate as f64));
    let results: Vec<(u64, Histogram<u64>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = stores
            .iter_mut()
            .enumerate()
            .map(|(worker, store)| {
                let (stop, zipfian) = (stop.clone(), &zipfian);
                scope.spawn(move || {
                    let mut random = Random(0xC0FFEE + worker as u64 * 7919);
                    let mut histogram =
                        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                    let mut operations = 0u64;
                    let mut intended = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(interval) = interval {
                            intended += interval;
                            let now = Instant::now();
                            if intended > now {
                                std::thread::sleep(intended - now);
                            }
                        } else {
                            intended = Instant::now();
                        }
                        let operation = next_operation(workload, zipfian, records, &mut random);
                        store.execute(&operation);
                        let micros = intended.elapsed().as_micros() as u64;
                        histogram.saturating_record(micros.max(1));
                        operations += 1;
                    }
                    (operations, histogram)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu_seconds = server_cpu() - server_before;
    let client_cpu_seconds = process_cpu_seconds(std::process::id()) - client_before;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut operations = 0;
    for (count, histogram) in results {
        operations += count;
        latency.add(histogram).expect("merge");
    }
    Measured {
        operations,
        seconds,
        latency,
        server_cpu_seconds,
        client_cpu_seconds,
    }
}

fn next_operation(
    workload: Workload,
    zipfian: &Zipfian,
    records: &AtomicU64,
    random: &mut Random,
) -> Operation {
    let existing = records.load(Ordering::Relaxed);
    let pick = |random: &mut Random| {
        let rank = zipfian.next(random);
        if workload.latest {
            // Rank 0 is the newest record.
            existing.saturating_sub(1 + rank % existing)
        } else {
            // Scrambled: the popular ranks land anywhere in the key space.
            fnv64(rank) % existing
        }
    };
    let field = |random: &mut Random| format!("field{}", random.below(9));
    let roll = random.unit();
    let mut threshold = workload.read;
    if roll < threshold {
        return Operation::Read(key(pick(random)));
    }
    threshold += workload.update;
    if roll < threshold {
        let (target, field) = (key(pick(random)), field(random));
        return Operation::Update(target, field, random.text(FIELD_LENGTH));
    }
    threshold += workload.insert;
    if roll < threshold {
        let number = records.fetch_add(1, Ordering::Relaxed);
        return Operation::Insert(key(number), document(number, random));
    }
    threshold += workload.scan;
    if roll < threshold {
        return Operation::Scan(key(pick(random)), 1 + random.below(100));
    }
    threshold += workload.read_modify_write;
    if roll < threshold {
        let (target, field) = (key(pick(random)), field(random));
        return Operation::ReadModifyWrite(target, field, random.text(FIELD_LENGTH));
    }
    // Rounding left a sliver above the last threshold.
    Operation::Read(key(pick(random)))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ----- the report ------------------------------------------------------------------

struct Row {
    name: String,
    durability: String,
    photon: Measured,
    postgres: Measured,
}

fn main() {
    let arguments = Arguments::parse();
    let scratch = tempfile::tempdir_in(&arguments.directory).expect("scratch directory");
    eprintln!("measuring the machine…");
    let machine = machine::describe(scratch.path());
    let sync = machine::fdatasync_latency(scratch.path(), 500);
    let programs = postgres_programs(arguments.postgres_bin.clone());

    eprintln!("starting PhotonDB and PostgreSQL…");
    let (server, port) = wire::start_server_with(
        &arguments.binary,
        scratch.path(),
        &["--cache-size", &arguments.photondb_cache],
    );
    let photon_cache_mib = wire::ready_field(scratch.path(), "cache_mib").map_or_else(
        || arguments.photondb_cache.clone(),
        |mib| format!("{mib} MiB"),
    );
    // Stopped however this run ends, a failed check included.
    let server = KillOnDrop(server);
    let cluster = PostgresCluster::start(scratch.path(), programs, arguments.cache_mib);
    let postgres_version = cluster.version();
    let setup = Connection::connect(&ConnectOptions {
        port,
        ..ConnectOptions::default()
    })
    .expect("connect");
    setup
        .run(&r::db("test").table_create("usertable"))
        .expect("create the table");
    cluster
        .connect()
        .batch_execute("CREATE TABLE usertable (id text PRIMARY KEY, doc jsonb NOT NULL)")
        .expect("create the table");

    let photon_pid = server.0.id();
    let photon_cpu = move || process_cpu_seconds(photon_pid);
    let postmaster = cluster.postmaster_pid();
    // The postmaster and its children: a backend per connection, the WAL
    // writer, the checkpointer and the rest.
    let postgres_cpu = move || {
        process_cpu_seconds(postmaster)
            + children_of(postmaster)
                .into_iter()
                .map(process_cpu_seconds)
                .sum::<f64>()
    };
    let threads = arguments.threads.max(1);
    let photon_stores = |durability: &'static str| -> Vec<Box<dyn Store + Send>> {
        (0..threads)
            .map(|_| Box::new(PhotonStore::connect(port, durability)) as Box<dyn Store + Send>)
            .collect()
    };
    let postgres_stores = |commit: &str| -> Vec<Box<dyn Store + Send>> {
        (0..threads)
            .map(|_| Box::new(PostgresStore::connect(&cluster, commit)) as Box<dyn Store + Send>)
            .collect()
    };

    // Bulk load, hard durability on both sides.
    eprintln!("bulk load of {} documents…", arguments.records);
    let photon_load = bulk_load(
        &mut photon_stores("hard"),
        arguments.records,
        arguments.batch,
    );
    let postgres_load = bulk_load(
        &mut postgres_stores("on"),
        arguments.records,
        arguments.batch,
    );
    cluster
        .connect()
        .batch_execute("VACUUM ANALYZE usertable")
        .expect("vacuum");
    eprintln!("  PhotonDB {photon_load:.1} s, PostgreSQL {postgres_load:.1} s");

    // Full-table analytics right after the load, while both peers hold the
    // same documents; each timed three times, the best run counts.
    eprintln!("filtered count and group count…");
    let time_best = |store: &mut dyn Store, query: fn(&mut dyn Store) -> u64| -> (f64, u64) {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let result = query(store);
                (started.elapsed().as_secs_f64(), result)
            })
            .fold(
                (f64::MAX, 0),
                |best, run| if run.0 < best.0 { run } else { best },
            )
    };
    let mut photon = PhotonStore::connect(port, "hard");
    let mut postgres = PostgresStore::connect(&cluster, "on");
    let table_size = photon.run(&photon.table.count()).as_u64().expect("a count");
    let photon_filter = time_best(&mut photon, |store| store.filtered_count());
    let postgres_filter = time_best(&mut postgres, |store| store.filtered_count());
    assert_eq!(
        photon_filter.1, postgres_filter.1,
        "the peers count different documents"
    );
    let photon_group = time_best(&mut photon, |store| store.group_count());
    let postgres_group = time_best(&mut postgres, |store| store.group_count());

    let mut rows = Vec::new();
    // Inserts (D, E) add records; both peers see the same count.
    let photon_records = AtomicU64::new(arguments.records);
    let postgres_records = AtomicU64::new(arguments.records);
    for durability in &arguments.durability {
        let (photon_durability, commit) = match durability.as_str() {
            "hard" => ("hard", "on"),
            "soft" => ("soft", "off"),
            other => panic!("durability is hard or soft, not {other}"),
        };
        for &name in &arguments.workloads {
            let workload = workload(name.to_ascii_lowercase());
            eprintln!("workload {} ({durability})…", name.to_ascii_uppercase());
            let photon = run_workload(
                &mut photon_stores(photon_durability),
                workload,
                &photon_records,
                arguments.seconds,
                arguments.target_rate,
                &photon_cpu,
            );
            let postgres = run_workload(
                &mut postgres_stores(commit),
                workload,
                &postgres_records,
                arguments.seconds,
                arguments.target_rate,
                &postgres_cpu,
            );
            eprintln!(
                "  PhotonDB {:.0} ops/s, PostgreSQL {:.0} ops/s",
                photon.throughput(),
                postgres.throughput()
            );
            rows.push(Row {
                name: format!("{} ({})", name.to_ascii_uppercase(), workload.description),
                durability: durability.clone(),
                photon,
                postgres,
            });
        }
    }

    drop(server);
    drop(cluster);

    // ----- the report
    let cores = machine["cores"].as_u64().unwrap_or(1) as f64;
    let sync_ms = |quantile: f64| sync.value_at_quantile(quantile) as f64 / 1e6;
    let mut report = String::new();
    report.push_str(&format!(
        "# YCSB: PhotonDB vs PostgreSQL {postgres_version}\n\n\
         Machine: {} cores ({}), {} GiB, {} on {}, kernel {}; fdatasync p50 {:.2} ms, p99 {:.2} ms.\n\n\
         {} records of 1 KiB (10 fields), zipfian keys (0.99), {} client threads with a connection each per peer, \
         {} s per workload{}. PhotonDB `durability` hard/soft ≙ PostgreSQL `synchronous_commit` on/off; \
         PostgreSQL shared_buffers = {} MiB (and the kernel's page cache); PhotonDB cache (direct I/O) = {}. Ratio = PhotonDB / PostgreSQL (throughput: higher is better; p99: lower is better).\n\n",
        machine["cores"], machine["cpu"].as_str().unwrap_or(""), machine["memory_gib"], machine["file_system"].as_str().unwrap_or(""),
        machine["device"].as_str().unwrap_or(""), machine["kernel"].as_str().unwrap_or(""), sync_ms(0.5), sync_ms(0.99),
        arguments.records, threads, arguments.seconds,
        if arguments.target_rate > 0 { format!(", target {} ops/s (latency from intended start)", arguments.target_rate) } else { String::new() },
        arguments.cache_mib,
        photon_cache_mib,
    ));
    report.push_str("| workload | durability | PhotonDB ops/s | PostgreSQL ops/s | ratio | PhotonDB p50 / p99 / p99.9 / max ms | PostgreSQL p50 / p99 / p99.9 / max ms | p99 ratio |\n");
    report.push_str("|---|---|---:|---:|---:|---|---|---:|\n");
    let latencies = |measured: &Measured| {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.1}",
            measured.percentile(0.5),
            measured.percentile(0.99),
            measured.percentile(0.999),
            measured.latency.max() as f64 / 1000.0
        )
    };
    for row in &rows {
        report.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {} | {} | {:.2}× |\n",
            row.name,
            row.durability,
            row.photon.throughput(),
            row.postgres.throughput(),
            row.photon.throughput() / row.postgres.throughput(),
            latencies(&row.photon),
            latencies(&row.postgres),
            row.photon.percentile(0.99) / row.postgres.percentile(0.99),
        ));
    }
    report.push_str(
        "\nCPU per operation, µs (user and system; the server's processes, and this benchmark's client threads, which share the machine):\n\n\
         | workload | durability | PhotonDB server | PhotonDB client | PostgreSQL server | PostgreSQL client |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for row in &rows {
        let (photon_server, photon_client) = row.photon.cpu_per_operation();
        let (postgres_server, postgres_client) = row.postgres.cpu_per_operation();
        report.push_str(&format!(
            "| {} | {} | {photon_server:.1} | {photon_client:.1} | {postgres_server:.1} | {postgres_client:.1} |\n",
            row.name, row.durability,
        ));
    }
    let per_second = |records: u64, seconds: f64| records as f64 / seconds;
    report.push_str(&format!(
        "\n| bulk and analytics | PhotonDB | PostgreSQL | ratio |\n|---|---:|---:|---:|\n\
         | bulk load, {} docs in batches of {} (docs/s) | {:.0} | {:.0} | {:.2}× |\n\
         | filtered count over {} docs (docs scanned/s) | {:.0} ({:.0}/core) | {:.0} | {:.2}× |\n\
         | group(field9).count(), {} groups (docs/s) | {:.0} | {:.0} | {:.2}× |\n",
        arguments.records,
        arguments.batch,
        per_second(arguments.records, photon_load),
        per_second(arguments.records, postgres_load),
        postgres_load / photon_load,
        table_size,
        per_second(table_size, photon_filter.0),
        per_second(table_size, photon_filter.0) / cores,
        per_second(table_size, postgres_filter.0),
        postgres_filter.0 / photon_filter.0,
        photon_group.1,
        per_second(table_size, photon_group.0),
        per_second(table_size, postgres_group.0),
        postgres_group.0 / photon_group.0,
    ));
    println!("{report}");
    let results = json!({
        "machine": machine,
        "fdatasync_ms": {"p50": sync_ms(0.5), "p99": sync_ms(0.99)},
        "postgres_version": postgres_version,
        "records": arguments.records,
        "threads": threads,
        "seconds": arguments.seconds,
        "target_rate": arguments.target_rate,
        "workloads": rows.iter().map(|row| json!({
            "workload": row.name, "durability": row.durability,
            "photondb": row.photon.json(), "postgres": row.postgres.json(),
        })).collect::<Vec<_>>(),
        "bulk_load_seconds": {"photondb": photon_load, "postgres": postgres_load},
        "filtered_count_seconds": {"photondb": photon_filter.0, "postgres": postgres_filter.0, "documents": table_size},
        "group_count_seconds": {"photondb": photon_group.0, "postgres": postgres_group.0, "groups": photon_group.1},
    });
    if let Some(output) = &arguments.output {
        std::fs::write(output, &report).expect("write the report");
        std::fs::write(
            output.with_extension("json"),
            serde_json::to_string_pretty(&results).expect("JSON"),
        )
        .expect("write the JSON");
        eprintln!("wrote {} and its .json", output.display());
    }
}
