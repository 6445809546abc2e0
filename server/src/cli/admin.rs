//! `photondb db|table|index|query`: administration in one command each.

use clap::Subcommand;
use photondb_client::{r, Term};
use serde_json::{json, Map, Value};

use super::{json_argument, print_listing, strings, ClientArguments, ListFormat};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create a database.
    Create { name: String },
    /// Drop a database and every table in it.
    Drop { name: String },
    /// List the databases.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Durability {
    Hard,
    Soft,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::Hard => "hard",
            Durability::Soft => "soft",
        }
    }
}

#[derive(Subcommand)]
pub enum TableCommand {
    /// Create a table.
    Create {
        name: String,
        #[arg(long, default_value = "test")]
        db: String,
        /// The field that identifies documents.
        #[arg(long, default_value = "id")]
        primary_key: String,
        /// Hard: a write is acknowledged once on disk; soft: once applied.
        #[arg(long, value_enum, default_value = "hard")]
        durability: Durability,
    },
    /// Drop a table and its documents.
    Drop {
        name: String,
        #[arg(long, default_value = "test")]
        db: String,
    },
    /// List the tables of a database with their primary keys and sizes.
    List {
        #[arg(long, default_value = "test")]
        db: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Create a secondary index and wait until it is built.
    Create {
        name: String,
        #[arg(long, default_value = "test")]
        db: String,
        #[arg(long)]
        table: String,
        /// The field to index (default: the index's name).
        #[arg(long, conflicts_with = "function")]
        field: Option<String>,
        /// The index function as ReQL wire JSON (a FUNC term).
        #[arg(long)]
        function: Option<String>,
        /// Index every element of an array value.
        #[arg(long)]
        multi: bool,
        /// A geospatial index.
        #[arg(long)]
        geo: bool,
    },
    /// Drop a secondary index.
    Drop {
        name: String,
        #[arg(long, default_value = "test")]
        db: String,
        #[arg(long)]
        table: String,
    },
    /// List a table's secondary indexes and whether they are ready.
    List {
        #[arg(long, default_value = "test")]
        db: String,
        #[arg(long)]
        table: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
}

pub fn db(client: &ClientArguments, command: DbCommand) -> anyhow::Result<()> {
    let connection = client.connect()?;
    match command {
        DbCommand::Create { name } => {
            connection.run(&r::db_create(&name))?;
            println!("created database {name}");
        }
        DbCommand::Drop { name } => {
            let result = connection.run(&r::db_drop(&name))?;
            println!(
                "dropped database {name} ({} tables)",
                result["tables_dropped"]
            );
        }
        DbCommand::List { format } => {
            let names = connection.run(&r::db_list())?;
            let rows: Vec<Value> = strings(&names)
                .map(|name| json!({ "name": name }))
                .collect();
            print_listing(&rows, &["name"], format)?;
        }
    }
    Ok(())
}

pub fn table(client: &ClientArguments, command: TableCommand) -> anyhow::Result<()> {
    let connection = client.connect()?;
    match command {
        TableCommand::Create {
            name,
            db,
            primary_key,
            durability,
        } => {
            let create = r::db(&db)
                .table_create(&name)
                .opt("primary_key", primary_key)
                .opt("durability", durability.name());
            connection.run(&create)?;
            println!("created table {db}.{name}");
        }
        TableCommand::Drop { name, db } => {
            connection.run(&r::db(&db).table_drop(&name))?;
            println!("dropped table {db}.{name}");
        }
        TableCommand::List { db, format } => {
            let mut rows = Vec::new();
            for name in strings(&connection.run(&r::db(&db).table_list())?) {
                let table = r::db(&db).table(name);
                let config = connection.run(&table.config())?;
                let documents = connection.run(&table.count())?;
                let indexes = connection.run(&table.index_list())?;
                rows.push(json!({
                    "name": name,
                    "primary_key": config["primary_key"],
                    "durability": config["durability"],
                    "documents": documents,
                    "indexes": strings(&indexes).collect::<Vec<_>>().join(","),
                }));
            }
            print_listing(
                &rows,
                &["name", "primary_key", "durability", "documents", "indexes"],
                format,
            )?;
        }
    }
    Ok(())
}

pub fn index(client: &ClientArguments, command: IndexCommand) -> anyhow::Result<()> {
    let connection = client.connect()?;
    match command {
        IndexCommand::Create {
            name,
            db,
            table,
            field,
            function,
            multi,
            geo,
        } => {
            let table = r::db(&db).table(&table);
            let function = match (field, function) {
                (Some(field), _) => Some(r::func(|row| row.field(&field))),
                (None, Some(wire)) => Some(Term::raw(json_argument(&wire, "--function")?)),
                (None, None) => None,
            };
            connection.run(
                &table
                    .index_create(&name, function)
                    .opt("multi", multi)
                    .opt("geo", geo),
            )?;
            connection.run(&table.index_wait())?;
            println!("created index {name}");
        }
        IndexCommand::Drop { name, db, table } => {
            connection.run(&r::db(&db).table(&table).index_drop(&name))?;
            println!("dropped index {name}");
        }
        IndexCommand::List { db, table, format } => {
            let status = connection.run(&r::db(&db).table(&table).index_status())?;
            let rows: Vec<Value> = status
                .as_array()
                .into_iter()
                .flatten()
                .map(|index| json!({"index": index["index"], "ready": index["ready"], "multi": index["multi"], "geo": index["geo"]}))
                .collect();
            print_listing(&rows, &["index", "ready", "multi", "geo"], format)?;
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct QueryArguments {
    /// The query as ReQL wire JSON, as drivers send it
    /// (e.g. `[15,[[14,["test"]],"users"]]`).
    pub query: String,
    /// Global optargs as a JSON object (e.g. `{"db":[14,["app"]]}`).
    #[arg(long)]
    pub optargs: Option<String>,
}

/// Prints an atom as JSON, a sequence as one JSON row per line (streamed).
pub fn query(client: &ClientArguments, arguments: QueryArguments) -> anyhow::Result<()> {
    use std::io::Write;
    let connection = client.connect()?;
    let term = Term::raw(json_argument(&arguments.query, "the query")?);
    let optargs: Map<String, Value> = match arguments.optargs {
        Some(text) => match json_argument(&text, "--optargs")? {
            Value::Object(optargs) => optargs,
            _ => anyhow::bail!("--optargs must be a JSON object"),
        },
        None => Map::new(),
    };
    let cursor = connection.cursor_with(&term, optargs)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Some(atom) = cursor.atom() {
        writeln!(out, "{}", serde_json::to_string_pretty(atom)?)?;
        return Ok(());
    }
    for row in cursor {
        writeln!(out, "{}", row?)?;
        // A changefeed's rows should show as they come.
        out.flush()?;
    }
    Ok(())
}
