//! Prometheus metrics of the process, in one registry, named by Prometheus
//! conventions with the `photondb_` prefix. Counters are updated where the
//! work happens; gauges read from the engine are refreshed at each scrape.

use std::sync::LazyLock;

use photondb_runtime::Engine;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Queries answered, by protocol (`driver`, `http`) and outcome
    /// (`success` or the error class).
    pub queries: IntCounterVec,
    pub query_seconds: HistogramVec,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    /// Driver connections open now.
    pub driver_connections: IntGauge,
    table_documents: IntGaugeVec,
    feed_subscribers: IntGauge,
}

/// Latency buckets from 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let queries = IntCounterVec::new(
        Opts::new(
            "photondb_queries_total",
            "Queries answered, by protocol and outcome.",
        ),
        &["protocol", "outcome"],
    )?;
    let query_seconds = HistogramVec::new(
        HistogramOpts::new(
            "photondb_query_duration_seconds",
            "Time from a query's arrival to its first answer, by protocol.",
        )
        .buckets(SECONDS_BUCKETS.to_vec()),
        &["protocol"],
    )?;
    let http_requests = IntCounterVec::new(
        Opts::new(
            "photondb_http_requests_total",
            "HTTP requests, by route and status code.",
        ),
        &["route", "status"],
    )?;
    let http_seconds = HistogramVec::new(
        HistogramOpts::new(
            "photondb_http_request_duration_seconds",
            "HTTP request latency, by route.",
        )
        .buckets(SECONDS_BUCKETS.to_vec()),
        &["route"],
    )?;
    let driver_connections = IntGauge::new(
        "photondb_driver_connections",
        "RethinkDB driver connections open.",
    )?;
    let table_documents = IntGaugeVec::new(
        Opts::new("photondb_table_documents", "Documents per table."),
        &["db", "table"],
    )?;
    let feed_subscribers = IntGauge::new(
        "photondb_changefeed_subscribers",
        "Changefeed subscriptions open.",
    )?;
    registry.register(Box::new(queries.clone()))?;
    registry.register(Box::new(query_seconds.clone()))?;
    registry.register(Box::new(http_requests.clone()))?;
    registry.register(Box::new(http_seconds.clone()))?;
    registry.register(Box::new(driver_connections.clone()))?;
    registry.register(Box::new(table_documents.clone()))?;
    registry.register(Box::new(feed_subscribers.clone()))?;
    Ok(Metrics {
        registry,
        queries,
        query_seconds,
        http_requests,
        http_seconds,
        driver_connections,
        table_documents,
        feed_subscribers,
    })
}

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("metric definitions are valid"));

pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Counts one answered query.
    pub fn query_answered(&self, protocol: &str, outcome: &str, seconds: f64) {
        self.queries.with_label_values(&[protocol, outcome]).inc();
        self.query_seconds
            .with_label_values(&[protocol])
            .observe(seconds);
    }

    /// The text exposition, with the engine's gauges read now.
    pub async fn render(&self, engine: &Engine) -> String {
        let catalog = engine.catalog();
        self.table_documents.reset();
        for table in catalog.tables.values() {
            let database = catalog
                .databases
                .values()
                .find(|database| database.id == table.database)
                .map_or("?", |database| database.name.as_str());
            if let Ok(count) = engine.count(table.id).await {
                self.table_documents
                    .with_label_values(&[database, table.name.as_str()])
                    .set(count as i64);
            }
        }
        if let Ok(registrations) = engine.feed_registrations().await {
            // Each subscription is registered with every shard.
            self.feed_subscribers
                .set((registrations / engine.shards().max(1)) as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding writes to memory");
        let mut text = String::from_utf8(out).expect("the text format is UTF-8");
        if let Ok(storage) = engine.storage_stats().await {
            write_storage(&mut text, &storage);
        }
        write_engine(&mut text, engine);
        write_process(&mut text);
        text
    }
}

/// The runtime's gauges: start-up recovery time, inbox and mesh depths.
fn write_engine(out: &mut String, engine: &Engine) {
    write_single(
        out,
        "photondb_recovery_duration_seconds",
        "gauge",
        "How long the last start took to open every partition (WAL replay included) and load the catalog.",
        engine.recovery_duration().as_secs_f64(),
    );
    write_per_shard(
        out,
        "photondb_bus_inbox_depth",
        "Jobs waiting in a shard's inbox (work sent from threads that are not shards, such as the HTTP API's).",
        &engine.inbox_depths(),
    );
    write_per_shard(
        out,
        "photondb_bus_mesh_depth",
        "Jobs other shards sent a shard over the shard-to-shard mesh that it has not started yet.",
        &engine.mesh_depths(),
    );
}

/// One gauge with a value per shard (label `shard`).
fn write_per_shard(out: &mut String, name: &str, help: &str, values: &[usize]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (shard, value) in values.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
    }
}

/// The process's own figures, under the names every Prometheus client
/// library uses (`process_*`), read from `/proc/self`. Missing files (not
/// Linux) leave them out.
fn write_process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which may itself hold spaces.
    let Some(fields) = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>())
    else {
        return;
    };
    // `man 5 proc`: field n (counting from 1) is fields[n - 3] here.
    let field = |number: usize| -> f64 {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page_bytes) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let boot_seconds = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|value| value.parse::<f64>().ok())
        });
    write_single(
        out,
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent, in seconds.",
        (field(14) + field(15)) / ticks,
    );
    write_single(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        field(24) * page_bytes,
    );
    write_single(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        field(23),
    );
    write_single(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
        boot_seconds + field(22) / ticks,
    );
    write_single(
        out,
        "process_threads",
        "gauge",
        "Threads of the process.",
        field(20),
    );
    write_single(
        out,
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        open_fds as f64,
    );
    if let Some(max_fds) = max_fds {
        write_single(
            out,
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors.",
            max_fds,
        );
    }
}

/// One unlabelled metric in the text format.
fn write_single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The storage engine's counters, summed over partitions, in the text
/// format (written here: its histograms come as bucket counts, which the
/// registry's types cannot take).
fn write_storage(out: &mut String, stats: &photondb_storage::PartitionStats) {
    write_single(
        out,
        "photondb_wal_bytes_written_total",
        "counter",
        "Bytes written to the WAL rings.",
        stats.wal_bytes_written as f64,
    );
    write_single(
        out,
        "photondb_wal_flushes_total",
        "counter",
        "WAL flushes (a write and an fdatasync each).",
        stats.wal_flushes as f64,
    );
    write_single(
        out,
        "photondb_page_cache_hits_total",
        "counter",
        "B+Tree page lookups the page cache answered.",
        stats.cache_hits as f64,
    );
    write_single(
        out,
        "photondb_page_cache_misses_total",
        "counter",
        "B+Tree page lookups that read the data file.",
        stats.cache_misses as f64,
    );
    write_single(
        out,
        "photondb_page_cache_bytes",
        "gauge",
        "Bytes of clean pages cached.",
        stats.cached_bytes as f64,
    );
    write_single(
        out,
        "photondb_poisoned_partitions",
        "gauge",
        "Partitions stopped by a failed write or sync until a restart.",
        stats.poisoned_partitions as f64,
    );
    write_histogram(
        out,
        "photondb_wal_fdatasync_duration_seconds",
        "Time each WAL fdatasync took.",
        &stats.sync_seconds.bounds,
        &stats.sync_seconds.counts,
        stats.sync_seconds.sum,
    );
    write_histogram(
        out,
        "photondb_wal_group_commit_records",
        "WAL records each flush made durable (group commit).",
        &stats.group_commit_records.bounds,
        &stats.group_commit_records.counts,
        stats.group_commit_records.sum,
    );
}

fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let total: u64 = counts.iter().sum();
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
    );
}
