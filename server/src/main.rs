//! `photondb`: the server and its command-line tool.
//!
//! `photondb serve` opens the data directory (recovering every partition),
//! starts one shard per core, and runs until SIGINT or SIGTERM, when it
//! stops accepting, lets running queries finish (refusing new ones),
//! checkpoints every partition and exits 0. The RethinkDB driver port and the
//! HTTP API attach to the engine started here.

mod cli;
mod config;
mod connection;
mod http;
mod metrics;
mod protocol;
mod reql;
mod transport;

/// Documents are mostly around a kilobyte, past glibc's per-thread caches,
/// where its malloc takes locks and consolidates; mimalloc keeps such sizes
/// in per-thread pages (YCSB C and A ~8–10% faster, measured with both).
/// Built `no_thp`: mimalloc does not ask for transparent huge pages
/// (`madvise`), so where the kernel gives them only on request (its
/// `madvise` setting, the common default) memory comes in 4 KiB pages. A
/// write-heavy server keeps touching fresh memory, and each first touch of
/// a huge page makes the kernel clear 2 MiB. A 200,000-document bulk load
/// ran 53–56k docs/s with them and 72–75k without; full-table scans lost
/// about 5% to the extra TLB misses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    Serve(config::Flags),
    /// Show the server's effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration `serve` would run with (defaults, then the
    /// file, the environment and these flags), as TOML.
    Print(config::Flags),
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
        Command::Serve(flags) => config::Settings::load(&flags).and_then(serve),
        Command::Config {
            command: ConfigCommand::Print(flags),
        } => config::Settings::load(&flags).map(|settings| print!("{}", settings.to_toml())),
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

fn serve(arguments: config::Settings) -> anyhow::Result<()> {
    use config::Storage;
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Register before the shards start so no signal is missed.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let mut config = EngineConfig::new(&arguments.data_dir);
    if let Some(cores) = arguments.cores {
        config.shards = cores;
    }
    config.partitions = arguments.partitions;
    config.wal_ring_bytes = arguments.wal_ring_size.0.max(1 << 20);
    config.cache_bytes = arguments
        .cache_size
        .bytes(config::available_memory)
        .max(1 << 20);
    config.storage = match arguments.storage {
        Storage::Durable => StorageKind::Durable,
        Storage::Memory => StorageKind::Memory,
    };
    config.index_compiler = Some(Arc::new(reql::index::Compiler));
    let cache_bytes = config.cache_bytes;
    let started = std::time::Instant::now();
    let engine = Engine::start(config)
        .with_context(|| format!("starting on {}", arguments.data_dir.display()))?;
    tracing::info!(
        data_dir = %arguments.data_dir.display(),
        shards = engine.shards(),
        partitions = engine.partitions(),
        cache_mib = cache_bytes >> 20,
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
        timeout: arguments
            .http_timeout
            .0
            .max(std::time::Duration::from_millis(1)),
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
    let deadline = std::time::Instant::now() + arguments.shutdown_grace.0;
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
