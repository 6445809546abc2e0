//! `photondb import` and `photondb export`: documents between a table and
//! a file of JSON (one array), NDJSON (one document a line) or CSV (a
//! header row, then one document a row; every value a string, as
//! RethinkDB's own import reads CSV).
//!
//! Import streams: the file is parsed as it is read, documents go out in
//! batches, and several batches are in flight at once on one connection
//! (the protocol multiplexes queries by token).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use photondb_client::{r, Connection, Term};
use serde_json::{Map, Value};

use super::admin::Durability;
use super::{cell, progress, table_name, ClientArguments, Progress};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Json,
    Ndjson,
    Csv,
}

impl FileFormat {
    /// The format a file name implies: `.ndjson`/`.jsonl`, `.csv`, else JSON.
    fn of(path: &Path) -> FileFormat {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some("ndjson" | "jsonl") => FileFormat::Ndjson,
            Some("csv") => FileFormat::Csv,
            _ => FileFormat::Json,
        }
    }
}

/// What to do when an imported document's primary key exists already.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Conflict {
    /// Keep the stored document and count the import's as an error.
    Error,
    /// Replace the stored document.
    Replace,
    /// Merge the imported fields into the stored document.
    Update,
}

impl Conflict {
    fn name(self) -> &'static str {
        match self {
            Conflict::Error => "error",
            Conflict::Replace => "replace",
            Conflict::Update => "update",
        }
    }
}

#[derive(clap::Args)]
pub struct ImportArguments {
    /// The file to read (`-`: standard input).
    pub file: PathBuf,
    /// The table to fill: `db.table`, or `table` in `--db`. Created (and
    /// its database) when missing.
    #[arg(long)]
    pub table: String,
    #[arg(long, default_value = "test")]
    pub db: String,
    /// The file's format (default: from its extension, else JSON).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    #[arg(long, value_enum, default_value = "error")]
    pub conflict: Conflict,
    /// Documents per insert.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// Inserts in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub parallel: u64,
    /// The primary key of a table the import creates.
    #[arg(long, default_value = "id")]
    pub primary_key: String,
    #[arg(long, value_enum, default_value = "hard")]
    pub durability: Durability,
}

/// What the inserts reported, summed.
#[derive(Default, Debug)]
pub struct ImportTotals {
    pub inserted: u64,
    pub replaced: u64,
    pub unchanged: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl ImportTotals {
    fn add(&mut self, result: &Value) {
        let count = |field: &str| result[field].as_u64().unwrap_or(0);
        self.inserted += count("inserted");
        self.replaced += count("replaced");
        self.unchanged += count("unchanged");
        self.errors += count("errors");
        if self.first_error.is_none() {
            // RethinkDB's message quotes documents over many lines; errors
            // here are one line.
            self.first_error = result["first_error"]
                .as_str()
                .map(|message| message.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
}

pub fn import(client: &ClientArguments, arguments: ImportArguments) -> anyhow::Result<()> {
    let (db, table) = table_name(&arguments.table, &arguments.db)?;
    let connection = client.connect()?;
    ensure_table(
        &connection,
        db,
        table,
        &arguments.primary_key,
        arguments.durability,
    )?;
    let format = arguments
        .format
        .unwrap_or_else(|| FileFormat::of(&arguments.file));
    let (input, length): (Box<dyn Read>, Option<u64>) = if arguments.file.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(&arguments.file)
            .with_context(|| format!("cannot open {}", arguments.file.display()))?;
        let length = file.metadata().ok().map(|metadata| metadata.len());
        (Box::new(file), length)
    };
    let bar = match length {
        Some(length) => progress(Progress::Bytes(length), "importing"),
        None => progress(Progress::Documents(None), "importing"),
    };
    let counted = bar.clone();
    let input = CountingReader {
        inner: input,
        on_read: Box::new(move |bytes| {
            if length.is_some() {
                counted.inc(bytes)
            }
        }),
    };
    let insert = |batch: Vec<Value>| {
        r::db(db)
            .table(table)
            .insert(Value::Array(batch))
            .opt("conflict", arguments.conflict.name())
            .opt("durability", arguments.durability.name())
    };
    let totals = insert_batches(
        &connection,
        &insert,
        arguments.batch_size as usize,
        arguments.parallel as usize,
        |emit| {
            read_documents(
                BufReader::with_capacity(1 << 20, input),
                format,
                &mut |document| {
                    if length.is_none() {
                        bar.inc(1);
                    }
                    emit(document)
                },
            )
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "imported into {db}.{table}: {} inserted, {} replaced, {} unchanged, {} errors",
        totals.inserted, totals.replaced, totals.unchanged, totals.errors
    );
    if totals.errors > 0 {
        anyhow::bail!(
            "{} documents were not imported; the first error: {}",
            totals.errors,
            totals.first_error.as_deref().unwrap_or("(none given)")
        );
    }
    Ok(())
}

/// Creates `db` and `db.table` when missing.
pub fn ensure_table(
    connection: &Connection,
    db: &str,
    table: &str,
    primary_key: &str,
    durability: Durability,
) -> anyhow::Result<bool> {
    let databases = connection.run(&r::db_list())?;
    if !databases
        .as_array()
        .into_iter()
        .flatten()
        .any(|name| name == db)
    {
        connection.run(&r::db_create(db))?;
    }
    let tables = connection.run(&r::db(db).table_list())?;
    if tables
        .as_array()
        .into_iter()
        .flatten()
        .any(|name| name == table)
    {
        return Ok(false);
    }
    connection.run(
        &r::db(db)
            .table_create(table)
            .opt("primary_key", primary_key)
            .opt("durability", durability.name()),
    )?;
    Ok(true)
}

/// Runs `produce`, which hands documents to `emit`; sends them to the
/// server in batches of `batch_size` through `insert`, `parallel` batches
/// in flight at once. Stops at the first failed query.
pub fn insert_batches(
    connection: &Connection,
    insert: &(dyn Fn(Vec<Value>) -> Term + Sync),
    batch_size: usize,
    parallel: usize,
    produce: impl FnOnce(&mut dyn FnMut(Value) -> anyhow::Result<()>) -> anyhow::Result<()>,
) -> anyhow::Result<ImportTotals> {
    let totals = Mutex::new(ImportTotals::default());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<Value>>(parallel);
    let receiver = Mutex::new(receiver);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let produced = std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| loop {
                let Ok(batch) = receiver.lock().expect("batch queue").recv() else {
                    return;
                };
                // After a failure, batches still queued are dropped, not
                // left to block the reader on a full queue.
                if failed.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                match connection.run(&insert(batch)) {
                    Ok(result) => totals.lock().expect("totals").add(&result),
                    Err(error) => {
                        failure.lock().expect("failure").get_or_insert(error.into());
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
        let mut batch = Vec::with_capacity(batch_size);
        let result = produce(&mut |document| {
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("the import stopped");
            }
            batch.push(document);
            if batch.len() == batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                sender
                    .send(full)
                    .map_err(|_| anyhow::anyhow!("the import stopped"))?;
            }
            Ok(())
        });
        if !batch.is_empty() && result.is_ok() {
            let _ = sender.send(batch);
        }
        // Closing the queue ends every worker once it is drained.
        drop(sender);
        result
    });
    if let Some(error) = failure.into_inner().expect("failure") {
        return Err(error);
    }
    produced?;
    Ok(totals.into_inner().expect("totals"))
}

/// Parses documents from `input` in `format`, handing each to `emit`.
pub fn read_documents(
    input: impl BufRead,
    format: FileFormat,
    emit: &mut dyn FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match format {
        FileFormat::Ndjson => {
            for (number, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let document = serde_json::from_str(&line)
                    .with_context(|| format!("line {} is not JSON", number + 1))?;
                emit(document)?;
            }
            Ok(())
        }
        FileFormat::Csv => {
            let mut reader = csv::Reader::from_reader(input);
            let header: Vec<String> = reader
                .headers()
                .context("reading the CSV header")?
                .iter()
                .map(str::to_owned)
                .collect();
            for (number, record) in reader.records().enumerate() {
                let record = record.with_context(|| format!("CSV row {}", number + 2))?;
                let document: Map<String, Value> = header
                    .iter()
                    .zip(record.iter())
                    .map(|(field, value)| (field.clone(), Value::String(value.to_owned())))
                    .collect();
                emit(Value::Object(document))?;
            }
            Ok(())
        }
        FileFormat::Json => json_array::read(input, emit),
    }
}

/// A JSON array read element by element, never whole.
mod json_array {
    use std::fmt;
    use std::io::BufRead;

    use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};
    use serde_json::Value;

    struct Elements<'a> {
        emit: &'a mut dyn FnMut(Value) -> anyhow::Result<()>,
        /// Why `emit` refused, kept whole (serde errors are text only).
        refusal: &'a mut Option<anyhow::Error>,
    }

    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("an array of documents")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<(), A::Error> {
            while let Some(document) = elements.next_element::<Value>()? {
                if let Err(error) = (self.emit)(document) {
                    *self.refusal = Some(error);
                    return Err(A::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }

    impl<'de> DeserializeSeed<'de> for Elements<'_> {
        type Value = ();

        fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.deserialize_seq(self)
        }
    }

    pub fn read(
        input: impl BufRead,
        emit: &mut dyn FnMut(Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut refusal = None;
        let mut deserializer = serde_json::Deserializer::from_reader(input);
        let parsed = Elements {
            emit,
            refusal: &mut refusal,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
        match (refusal, parsed) {
            (Some(error), _) => Err(error),
            (None, Err(error)) => Err(anyhow::anyhow!(
                "the file is not a JSON array of documents: {error}"
            )),
            (None, Ok(())) => Ok(()),
        }
    }
}

/// Counts the bytes read through it, for a progress bar.
struct CountingReader {
    inner: Box<dyn Read>,
    on_read: Box<dyn FnMut(u64)>,
}

impl Read for CountingReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        (self.on_read)(count as u64);
        Ok(count)
    }
}

#[derive(clap::Args)]
pub struct ExportArguments {
    /// The table to read: `db.table`, or `table` in `--db`.
    #[arg(long)]
    pub table: String,
    #[arg(long, default_value = "test")]
    pub db: String,
    /// Where to write (`-`: standard output).
    #[arg(long, short, default_value = "-")]
    pub output: PathBuf,
    /// The format (default: from the output's extension, else JSON).
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Only these fields (comma-separated); CSV needs them, as its columns.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
}

pub fn export(client: &ClientArguments, arguments: ExportArguments) -> anyhow::Result<()> {
    let (db, table) = table_name(&arguments.table, &arguments.db)?;
    let format = arguments
        .format
        .unwrap_or_else(|| FileFormat::of(&arguments.output));
    if format == FileFormat::Csv && arguments.fields.is_empty() {
        anyhow::bail!("a CSV export needs --fields, its columns in order");
    }
    let connection = client.connect()?;
    let output: Box<dyn Write> = if arguments.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&arguments.output)
                .with_context(|| format!("cannot create {}", arguments.output.display()))?,
        )
    };
    let total = connection.run(&r::db(db).table(table).count())?.as_u64();
    let bar = progress(Progress::Documents(total), "exporting");
    let fields: Vec<&str> = arguments.fields.iter().map(String::as_str).collect();
    let written = write_table(&connection, db, table, &fields, format, output, &|| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    eprintln!("exported {written} documents from {db}.{table}");
    Ok(())
}

/// Streams every document of `db.table` to `output`; returns how many.
pub fn write_table(
    connection: &Connection,
    db: &str,
    table: &str,
    fields: &[&str],
    format: FileFormat,
    output: impl Write,
    on_document: &dyn Fn(),
) -> anyhow::Result<u64> {
    let mut query = r::db(db).table(table);
    if !fields.is_empty() {
        query = query.pluck(fields);
    }
    let mut output = std::io::BufWriter::with_capacity(1 << 20, output);
    let mut count = 0u64;
    let documents = connection.cursor(&query)?;
    match format {
        FileFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut output);
            writer.write_record(fields)?;
            for document in documents {
                let document = document?;
                writer.write_record(fields.iter().map(|field| cell(&document[*field])))?;
                count += 1;
                on_document();
            }
            writer.flush()?;
        }
        FileFormat::Ndjson => {
            for document in documents {
                serde_json::to_writer(&mut output, &document?)?;
                output.write_all(b"\n")?;
                count += 1;
                on_document();
            }
        }
        FileFormat::Json => {
            output.write_all(b"[")?;
            for document in documents {
                output.write_all(if count == 0 { b"\n" } else { b",\n" })?;
                serde_json::to_writer(&mut output, &document?)?;
                count += 1;
                on_document();
            }
            output.write_all(b"\n]\n")?;
        }
    }
    output.flush()?;
    Ok(count)
}
