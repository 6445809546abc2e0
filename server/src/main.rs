//! `photondb`: the server and its command-line tool.
//!
//! `photondb serve` opens the data directory (recovering every partition),
//! starts one shard per core, and runs until SIGINT or SIGTERM, when it
//! stops accepting, lets running queries finish (refusing new ones),
//! checkpoints every partition and exits 0. The RethinkDB driver port and the
//! HTTP API attach to the engine started here.

mod cli;
mod connection;
mod http;
mod metrics;
mod protocol;
mod reql;
mod transport;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use photondb_runtime::{Engine, EngineConfig, StorageKind};

#[derive(Parser)]
#[command(
    name = "photondb",
    version,
    about = "PhotonDB: a document database in RethinkDB's lineage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve(ServeArguments),
    /// Create, drop and list databases.
    Db {
        #[command(subcommand)]
        command: cli::admin::DbCommand,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Create, drop and list tables.
    Table {
        #[command(subcommand)]
        command: cli::admin::TableCommand,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Create, drop and list secondary indexes.
    Index {
        #[command(subcommand)]
        command: cli::admin::IndexCommand,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Run one query given as ReQL wire JSON and print its result.
    Query {
        #[command(flatten)]
        arguments: cli::admin::QueryArguments,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Load documents from a JSON, NDJSON or CSV file into a table.
    Import {
        #[command(flatten)]
        arguments: cli::transfer::ImportArguments,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Write a table's documents to a JSON, NDJSON or CSV file.
    Export {
        #[command(flatten)]
        arguments: cli::transfer::ExportArguments,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Write databases (tables, indexes, documents) to one archive.
    Dump {
        #[command(flatten)]
        arguments: cli::archive::DumpArguments,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
    /// Recreate what `dump` wrote.
    Restore {
        #[command(flatten)]
        arguments: cli::archive::RestoreArguments,
        #[command(flatten)]
        client: cli::ClientArguments,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Storage {
    /// WAL + checkpoints on disk (direct I/O); survives crashes.
    Durable,
    /// Memory only; everything is gone at exit.
    Memory,
}

#[derive(clap::Args)]
struct ServeArguments {
    /// Where the data lives; created on first start.
    #[arg(long, env = "PHOTONDB_DATA_DIR", default_value = "./photondb_data")]
    data_dir: PathBuf,
    /// Number of shards, one thread pinned per core (default: every core).
    #[arg(long, env = "PHOTONDB_CORES")]
    cores: Option<usize>,
    #[arg(long, env = "PHOTONDB_STORAGE", value_enum, default_value = "durable")]
    storage: Storage,
    /// Partitions of a new data directory (fixed for its lifetime; more
    /// partitions let a later restart spread over more cores).
    #[arg(long, env = "PHOTONDB_PARTITIONS", default_value_t = 8)]
    partitions: u32,
    /// Address to listen on.
    #[arg(long, env = "PHOTONDB_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port for RethinkDB drivers (0: any free port; the log names it).
    #[arg(long, env = "PHOTONDB_DRIVER_PORT", default_value_t = 28015)]
    driver_port: u16,
    /// Port for the HTTP API, health probes and metrics (0: any free port).
    #[arg(long, env = "PHOTONDB_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Password of the `admin` user, set when a data directory is first
    /// started (empty by default, as in RethinkDB); later starts keep the
    /// stored one.
    #[arg(
        long,
        env = "PHOTONDB_INITIAL_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    initial_password: String,
    /// On SIGINT/SIGTERM, how long queries already running may take to
    /// finish before the server stops anyway, in seconds.
    #[arg(long, env = "PHOTONDB_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    shutdown_grace_seconds: u64,
    /// Memory for cached data pages, in MiB, shared by all partitions
    /// (pages changed since the last checkpoint are held on top of it).
    #[arg(long, env = "PHOTONDB_CACHE_SIZE_MB", default_value_t = 1024)]
    cache_size_mb: u64,
    /// WAL ring size per partition of a new data directory, in MiB.
    #[arg(long, env = "PHOTONDB_WAL_RING_MIB", default_value_t = 32)]
    wal_ring_mib: u64,
    /// An origin browsers may call the HTTP API from (`https://app.example`,
    /// or `*` for any); repeat for several. None: cross-origin calls are
    /// refused, the default.
    #[arg(
        long = "cors-origin",
        env = "PHOTONDB_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Longest an HTTP request may take, in seconds, before it is answered
    /// 408 (WebSockets, once open, are not limited).
    #[arg(long, env = "PHOTONDB_HTTP_TIMEOUT_SECONDS", default_value_t = 60)]
    http_timeout_seconds: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PHOTONDB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Serve(arguments) => serve(arguments),
        Command::Db { command, client } => cli::admin::db(&client, command),
        Command::Table { command, client } => cli::admin::table(&client, command),
        Command::Index { command, client } => cli::admin::index(&client, command),
        Command::Query { arguments, client } => cli::admin::query(&client, arguments),
        Command::Import { arguments, client } => cli::transfer::import(&client, arguments),
        Command::Export { arguments, client } => cli::transfer::export(&client, arguments),
        Command::Dump { arguments, client } => cli::archive::dump(&client, arguments),
        Command::Restore { arguments, client } => cli::archive::restore(&client, arguments),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: every cause, outermost first.
            eprintln!("photondb: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(arguments: ServeArguments) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before the shards start so no signal is missed.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let mut config = EngineConfig::new(&arguments.data_dir);
    if let Some(cores) = arguments.cores {
        anyhow::ensure!(cores > 0, "--cores must be at least 1");
        config.shards = cores;
    }
    anyhow::ensure!(
        (1..=4096).contains(&arguments.partitions),
        "--partitions must be between 1 and 4096"
    );
    config.partitions = arguments.partitions;
    config.wal_ring_bytes = arguments.wal_ring_mib.max(1) << 20;
    config.cache_bytes = arguments.cache_size_mb.max(1) << 20;
    config.storage = match arguments.storage {
        Storage::Durable => StorageKind::Durable,
        Storage::Memory => StorageKind::Memory,
    };
    config.index_compiler = Some(Arc::new(reql::index::Compiler));
    let started = std::time::Instant::now();
    let engine = Engine::start(config)
        .with_context(|| format!("starting on {}", arguments.data_dir.display()))?;
    tracing::info!(
        data_dir = %arguments.data_dir.display(),
        shards = engine.shards(),
        partitions = engine.partitions(),
        startup_ms = started.elapsed().as_millis() as u64,
        "PhotonDB is ready"
    );
    if engine.user("admin").is_none() {
        let admin = protocol::handshake::user_with_password("admin", &arguments.initial_password);
        if let Err(error) = photondb_runtime::block_on_thread(engine.put_user(admin)) {
            let _ = engine.shutdown();
            return Err(anyhow::anyhow!(error)).context("storing the admin user");
        }
    } else if !arguments.initial_password.is_empty() {
        tracing::warn!("the admin user exists already; --initial-password is ignored (change it through rethinkdb.users)");
    }
    let driver_address = SocketAddr::new(arguments.bind, arguments.driver_port);
    let drain = Arc::new(connection::Drain::default());
    let connection_drain = drain.clone();
    let handler: photondb_runtime::network::ConnectionHandler =
        Arc::new(move |connection, engine| {
            Box::pin(connection::serve(
                connection,
                engine,
                connection_drain.clone(),
            ))
        });
    let driver_address =
        match photondb_runtime::block_on_thread(engine.listen(driver_address, handler)) {
            Ok(bound) => bound,
            Err(error) => {
                let _ = engine.shutdown();
                return Err(anyhow::anyhow!(error)).context("starting the driver port");
            }
        };
    // Bearer tokens survive restarts with the data they guard.
    let token_key = match arguments.storage {
        Storage::Durable => {
            http::ServerKey::load_or_create(&arguments.data_dir.join("http-token.key"))
                .context("reading the HTTP token key")
        }
        Storage::Memory => Ok(http::ServerKey::ephemeral()),
    };
    let token_key = match token_key {
        Ok(key) => key,
        Err(error) => {
            let _ = photondb_runtime::block_on_thread(engine.stop_listening());
            let _ = engine.shutdown();
            return Err(error);
        }
    };
    let http_options = http::Options {
        token_key,
        cors_origins: arguments.cors_origins.clone(),
        timeout: std::time::Duration::from_secs(arguments.http_timeout_seconds.max(1)),
    };
    let http = match http::start(
        engine.clone(),
        drain.clone(),
        SocketAddr::new(arguments.bind, arguments.http_port),
        http_options,
    ) {
        Ok(http) => http,
        Err(error) => {
            let _ = photondb_runtime::block_on_thread(engine.stop_listening());
            let _ = engine.shutdown();
            return Err(error).context("starting the HTTP API");
        }
    };
    tracing::info!(http_address = %http.address, "listening for HTTP");
    tracing::info!(%driver_address, "listening for RethinkDB drivers");
    let signal = signals.forever().next();
    // Stop accepting, refuse new queries, let running ones finish (up to
    // the grace period), then checkpoint every partition.
    if let Err(error) = photondb_runtime::block_on_thread(engine.stop_listening()) {
        tracing::warn!(%error, "closing the listening sockets failed");
    }
    drain.begin();
    tracing::info!(
        ?signal,
        running = drain.running(),
        "shutting down: no new connections or queries"
    );
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(arguments.shutdown_grace_seconds);
    while drain.running() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    match drain.running() {
        0 => tracing::info!("every running query finished; checkpointing every partition"),
        left => tracing::warn!(left, "grace period over; stopping with queries still running (their clients see the connection close)"),
    }
    http.stop();
    engine.shutdown().context("clean shutdown")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
