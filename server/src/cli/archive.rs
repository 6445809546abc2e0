//! `photondb dump` and `photondb restore`: whole databases to one
//! `.tar.gz` archive and back.
//!
//! The archive, in this order (restore reads it as one stream):
//! - `photondb_dump/manifest.json`: format, version, and every table with
//!   its document count, which restore checks against what it inserted;
//! - per table, `photondb_dump/<db>/<table>.info` (primary key, durability,
//!   and each secondary index as `index_status` gives it, the function as
//!   the binary `index_create` takes back), then `<table>.ndjson`, one
//!   document a line with ReQL pseudo-types (times, binary) as they are.
//!
//! Restore creates each table, inserts its documents, then builds its
//! indexes (one build over the whole table beats updating them per insert).

use std::io::{BufReader, Seek, Write};
use std::path::PathBuf;

use anyhow::Context;
use photondb_client::{r, Connection, Term};
use serde_json::{json, Value};

use super::admin::Durability;
use super::transfer::{ensure_table, insert_batches, read_documents, write_table, FileFormat};
use super::{progress, strings, ClientArguments, Progress};

const FORMAT: &str = "photondb-dump";
const VERSION: u64 = 1;
const ROOT: &str = "photondb_dump";

#[derive(clap::Args)]
pub struct DumpArguments {
    /// Only these databases (repeat the flag); default: all but `rethinkdb`.
    #[arg(long = "db")]
    pub databases: Vec<String>,
    /// The archive to write (default: photondb_dump_<date>.tar.gz).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RestoreArguments {
    /// The archive `photondb dump` wrote.
    pub archive: PathBuf,
    /// Restore into tables that exist already, replacing documents with
    /// the same primary key (without it, an existing table is an error).
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallel: u64,
}

pub fn dump(client: &ClientArguments, arguments: DumpArguments) -> anyhow::Result<()> {
    let connection = client.connect()?;
    let output = arguments
        .output
        .unwrap_or_else(|| PathBuf::from(format!("photondb_dump_{}.tar.gz", utc_stamp())));
    let mut databases = arguments.databases;
    if databases.is_empty() {
        databases = strings(&connection.run(&r::db_list())?)
            .filter(|name| *name != "rethinkdb")
            .map(str::to_owned)
            .collect();
    }
    let mut tables = Vec::new();
    for db in &databases {
        for table in strings(&connection.run(&r::db(db).table_list())?) {
            tables.push((db.clone(), table.to_owned()));
        }
    }
    let file = std::fs::File::create(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let total: u64 = tables
        .iter()
        .map(|(db, table)| connection.run(&r::db(db).table(table).count()))
        .map(|count| Ok::<_, anyhow::Error>(count?.as_u64().unwrap_or(0)))
        .sum::<anyhow::Result<u64>>()?;
    let bar = progress(Progress::Documents(Some(total)), "dumping");
    let mut manifest_tables = Vec::new();
    // Documents first, to a scratch file per table: a tar entry needs its
    // size before its bytes, and the manifest needs every count.
    let mut scratch_files = Vec::new();
    for (db, table) in &tables {
        let term = r::db(db).table(table);
        let config = connection.run(&term.config())?;
        let indexes = connection.run(&term.index_status())?;
        let info = json!({
            "db": db,
            "table": table,
            "primary_key": config["primary_key"],
            "durability": config["durability"],
            "indexes": indexes.as_array().into_iter().flatten().map(|index| json!({
                "index": index["index"], "function": index["function"], "multi": index["multi"], "geo": index["geo"],
            })).collect::<Vec<_>>(),
        });
        let mut documents = tempfile::tempfile().context("creating a scratch file")?;
        let count = write_table(
            &connection,
            db,
            table,
            &[],
            FileFormat::Ndjson,
            &mut documents,
            &|| bar.inc(1),
        )?;
        documents.rewind()?;
        manifest_tables.push(json!({"db": db, "table": table, "documents": count}));
        scratch_files.push((db, table, info, documents));
    }
    let manifest = json!({"format": FORMAT, "version": VERSION, "created": utc_stamp(), "tables": manifest_tables});
    append_bytes(
        &mut archive,
        &format!("{ROOT}/manifest.json"),
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    for (db, table, info, mut documents) in scratch_files {
        append_bytes(
            &mut archive,
            &format!("{ROOT}/{db}/{table}.info"),
            &serde_json::to_vec_pretty(&info)?,
        )?;
        let mut header = tar::Header::new_gnu();
        header.set_size(documents.metadata()?.len());
        header.set_mode(0o644);
        header.set_mtime(now_seconds());
        archive.append_data(
            &mut header,
            format!("{ROOT}/{db}/{table}.ndjson"),
            &mut documents,
        )?;
    }
    archive.into_inner()?.finish()?.sync_all()?;
    bar.finish_and_clear();
    eprintln!(
        "dumped {} tables, {total} documents, to {}",
        tables.len(),
        output.display()
    );
    Ok(())
}

pub fn restore(client: &ClientArguments, arguments: RestoreArguments) -> anyhow::Result<()> {
    let connection = client.connect()?;
    let file = std::fs::File::open(&arguments.archive)
        .with_context(|| format!("cannot open {}", arguments.archive.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut expected: Option<Value> = None;
    let mut info: Option<Value> = None;
    let (mut tables, mut documents) = (0u64, 0u64);
    let bar = progress(Progress::Documents(None), "restoring");
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let not_ours = || {
            anyhow::anyhow!(
                "{} is not an archive of `photondb dump` (unexpected entry {path})",
                arguments.archive.display()
            )
        };
        let relative = path
            .strip_prefix(&format!("{ROOT}/"))
            .ok_or_else(not_ours)?;
        if relative == "manifest.json" {
            let manifest: Value =
                serde_json::from_reader(&mut entry).context("manifest.json is not JSON")?;
            anyhow::ensure!(manifest["format"] == FORMAT, not_ours());
            anyhow::ensure!(
                manifest["version"] == VERSION,
                "archive format version {} is not one this build reads ({VERSION})",
                manifest["version"]
            );
            expected = Some(manifest);
        } else if relative.ends_with(".info") {
            anyhow::ensure!(expected.is_some(), not_ours());
            info = Some(
                serde_json::from_reader(&mut entry)
                    .with_context(|| format!("{path} is not JSON"))?,
            );
        } else if relative.ends_with(".ndjson") {
            let table_info = info.take().ok_or_else(not_ours)?;
            let (db, table) = (text(&table_info["db"])?, text(&table_info["table"])?);
            let primary_key = table_info["primary_key"].as_str().unwrap_or("id");
            let durability = if table_info["durability"] == "soft" {
                Durability::Soft
            } else {
                Durability::Hard
            };
            let created = ensure_table(&connection, db, table, primary_key, durability)?;
            anyhow::ensure!(
                created || arguments.force,
                "table {db}.{table} exists already (restore into it with --force)"
            );
            let insert = |batch: Vec<Value>| {
                r::db(db)
                    .table(table)
                    .insert(Value::Array(batch))
                    .opt("conflict", "replace")
            };
            let totals = insert_batches(
                &connection,
                &insert,
                arguments.batch_size as usize,
                arguments.parallel as usize,
                |emit| {
                    read_documents(
                        BufReader::new(&mut entry),
                        FileFormat::Ndjson,
                        &mut |document| {
                            bar.inc(1);
                            emit(document)
                        },
                    )
                },
            )?;
            anyhow::ensure!(
                totals.errors == 0,
                "restoring {db}.{table}: {}",
                totals.first_error.unwrap_or_default()
            );
            let restored = totals.inserted + totals.replaced + totals.unchanged;
            let manifest = expected.as_ref().ok_or_else(not_ours)?;
            let dumped = manifest["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|entry| entry["db"] == db && entry["table"] == table);
            let dumped = dumped
                .and_then(|entry| entry["documents"].as_u64())
                .ok_or_else(not_ours)?;
            anyhow::ensure!(restored == dumped, "{db}.{table}: the archive holds {restored} documents but its manifest says {dumped}");
            create_indexes(&connection, &table_info)?;
            tables += 1;
            documents += restored;
        } else {
            return Err(not_ours());
        }
    }
    bar.finish_and_clear();
    let listed = expected
        .as_ref()
        .and_then(|manifest| manifest["tables"].as_array())
        .map_or(0, Vec::len) as u64;
    anyhow::ensure!(
        expected.is_some() && tables == listed,
        "the archive ends early: {tables} of {listed} tables restored"
    );
    eprintln!("restored {tables} tables, {documents} documents");
    Ok(())
}

/// Builds the indexes a table's `.info` lists that it lacks, and waits.
fn create_indexes(connection: &Connection, info: &Value) -> anyhow::Result<()> {
    let table = r::db(text(&info["db"])?).table(text(&info["table"])?);
    let existing = connection.run(&table.index_list())?;
    for index in info["indexes"].as_array().into_iter().flatten() {
        let name = text(&index["index"])?;
        if existing
            .as_array()
            .into_iter()
            .flatten()
            .any(|present| present == name)
        {
            continue;
        }
        // The function is the binary `index_status` gave: a datum, so the
        // raw wire form is itself.
        let create = table
            .index_create(name, Some(Term::raw(index["function"].clone())))
            .opt("multi", index["multi"].as_bool().unwrap_or(false))
            .opt("geo", index["geo"].as_bool().unwrap_or(false));
        connection.run(&create)?;
    }
    connection.run(&table.index_wait())?;
    Ok(())
}

fn append_bytes(
    archive: &mut tar::Builder<impl Write>,
    path: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(now_seconds());
    archive.append_data(&mut header, path, bytes)?;
    Ok(())
}

fn text(value: &Value) -> anyhow::Result<&str> {
    value
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("expected a name in the archive, found {value}"))
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Now in UTC as `YYYY-MM-DDTHH-MM-SS` (no colons: it names files).
fn utc_stamp() -> String {
    let iso = crate::reql::time::to_iso8601(now_seconds() as f64, "+00:00").unwrap_or_default();
    iso.get(..19).unwrap_or(&iso).replace(':', "-")
}
