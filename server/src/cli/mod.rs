//! The `photondb` commands that talk to a running server through
//! `photondb-client`: administration (`db`, `table`, `index`, `query`),
//! moving documents (`import`, `export`) and whole databases (`dump`,
//! `restore`).
//!
//! Every failure is one line on stderr and a non-zero exit (see `main`).

pub mod admin;
pub mod archive;
pub mod transfer;

use std::io::IsTerminal;

use anyhow::Context;
use clap::ValueEnum;
use photondb_client::{ConnectOptions, Connection};
use serde_json::Value;

/// Where the server is and who we are to it.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArguments {
    /// Host of the server's driver port.
    #[arg(
        long,
        env = "PHOTONDB_HOST",
        default_value = "127.0.0.1",
        global = true
    )]
    pub host: String,
    /// The server's driver port.
    #[arg(long, env = "PHOTONDB_PORT", default_value_t = 28015, global = true)]
    pub port: u16,
    #[arg(long, env = "PHOTONDB_USER", default_value = "admin", global = true)]
    pub user: String,
    #[arg(
        long,
        env = "PHOTONDB_PASSWORD",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub password: String,
}

impl ClientArguments {
    pub fn connect(&self) -> anyhow::Result<Connection> {
        let options = ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            ..ConnectOptions::default()
        };
        Ok(Connection::connect(&options)?)
    }
}

/// How listings are printed.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON array, for scripts.
    Json,
}

/// Prints `rows` (objects) as aligned columns of `columns`, or as JSON.
pub fn print_listing(rows: &[Value], columns: &[&str], format: ListFormat) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(rows)?),
        ListFormat::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|row| columns.iter().map(|column| cell(&row[*column])).collect())
                .collect();
            let widths: Vec<usize> = (0..columns.len())
                .map(|i| {
                    cells
                        .iter()
                        .map(|row| row[i].chars().count())
                        .chain([columns[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |values: Vec<String>| {
                let padded: Vec<String> = values
                    .iter()
                    .zip(&widths)
                    .map(|(value, width)| format!("{value:<width$}"))
                    .collect();
                println!("{}", padded.join("  ").trim_end());
            };
            line(columns.iter().map(|column| column.to_uppercase()).collect());
            for row in cells {
                line(row);
            }
        }
    }
    Ok(())
}

/// A value as one table cell or CSV field: strings bare, nothing for null,
/// everything else as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The strings of a JSON array (names from `db_list`, `table_list`, …).
pub fn strings(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `db.table` or `table` (in `default_db`) as its two names.
pub fn table_name<'a>(name: &'a str, default_db: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let (db, table) = name.split_once('.').unwrap_or((default_db, name));
    anyhow::ensure!(
        !db.is_empty() && !table.is_empty(),
        "`{name}` is not a table name (db.table or table)"
    );
    Ok((db, table))
}

/// What a progress bar counts.
pub enum Progress {
    /// Bytes of a file of this size.
    Bytes(u64),
    /// Documents, of this many when known.
    Documents(Option<u64>),
}

/// A progress bar on stderr when a person watches; nothing otherwise.
pub fn progress(counting: Progress, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match counting {
        Progress::Bytes(length) => (
            indicatif::ProgressBar::new(length),
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})",
        ),
        Progress::Documents(Some(length)) => (
            indicatif::ProgressBar::new(length),
            "{msg} [{bar:40}] {pos}/{len} documents ({eta})",
        ),
        Progress::Documents(None) => (
            indicatif::ProgressBar::new_spinner(),
            "{msg} {spinner} {pos} documents",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Reads a JSON argument, saying which one is wrong.
pub fn json_argument(text: &str, what: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))
}
