//! `reconfigure` and `rebalance` on a single server.
//!
//! The arguments are checked exactly as RethinkDB checks them, against the
//! one server this process is (tag `default`). A valid request records the
//! shard count in the table's configuration, where `table_config` and
//! `config()` report it; row placement does not follow it, because every
//! table is spread over all partitions by key hash already. Replicas beyond
//! one are refused, as RethinkDB refuses them with one server.

use std::collections::BTreeMap;

use photondb_datum::Datum;
use photondb_storage::catalog::TableConfig;

use super::admin::table_document;
use super::error::ReqlError;
use super::eval::{arity, object, Context, TypeMismatch, Value};
use super::system::table_status_document;
use super::term::Term;
use super::term_type as kind;

/// RethinkDB's limit on shards per table.
const MAXIMUM_SHARDS: f64 = 64.0;

/// Servers carrying each server tag: this one server has only `default`.
fn servers_with_tag(tag: &str) -> u64 {
    u64::from(tag == "default")
}

pub async fn evaluate(
    context: &Context,
    term_type: u64,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 1, 1)?;
    let (tables, whole_database) = match context.argument(args, 0).await? {
        Value::Table(table) => (vec![table], false),
        Value::Database(database) => {
            let tables = context
                .engine
                .catalog()
                .tables
                .into_values()
                .filter(|table| table.database == database.id)
                .collect();
            (tables, true)
        }
        other => return Err(other.wrong_type("TABLE")),
    };
    for table in &tables {
        context.require_on_table(super::permission::Permission::Config, table)?;
    }
    if term_type == kind::REBALANCE {
        return Ok(Value::Datum(rebalance(context, &tables)));
    }
    let mut options = BTreeMap::new();
    for name in optargs.keys() {
        if let Some(value) = context.optional_datum(optargs, name).await? {
            options.insert(name.clone(), value);
        }
    }
    let dry_run = match options.get("dry_run") {
        None => false,
        Some(Datum::Bool(flag)) => *flag,
        Some(other) => return Err(other.wrong_type("BOOL")),
    };
    if let Some(mode) = options
        .get("emergency_repair")
        .filter(|mode| **mode != Datum::Null)
    {
        return emergency_repair(mode, &options, whole_database);
    }
    let shards = requested_shards(&options)?;
    check_replicas(&options)?;
    let mut config_changes = Vec::with_capacity(tables.len());
    let mut status_changes = Vec::with_capacity(tables.len());
    for table in &tables {
        let database = context.database_name_of(table);
        let updated = TableConfig {
            shards,
            ..table.clone()
        };
        if !dry_run {
            context.engine.update_table(updated.clone()).await?;
        }
        config_changes.push(object([
            (
                "new_val",
                table_document(&updated, &database, &context.engine),
            ),
            ("old_val", table_document(table, &database, &context.engine)),
        ]));
        let status = table_status_document(table, &database);
        status_changes.push(object([("new_val", status.clone()), ("old_val", status)]));
    }
    let reconfigured = if dry_run { 0 } else { tables.len() };
    Ok(Value::Datum(object([
        ("config_changes", Datum::Array(config_changes)),
        ("reconfigured", Datum::Number(reconfigured as f64)),
        ("status_changes", Datum::Array(status_changes)),
    ])))
}

fn rebalance(context: &Context, tables: &[TableConfig]) -> Datum {
    let status_changes = tables
        .iter()
        .map(|table| {
            let status = table_status_document(table, &context.database_name_of(table));
            object([("new_val", status.clone()), ("old_val", status)])
        })
        .collect();
    object([
        ("rebalanced", Datum::Number(tables.len() as f64)),
        ("status_changes", Datum::Array(status_changes)),
    ])
}

/// A healthy single server never needs repair; RethinkDB says so.
fn emergency_repair(
    mode: &Datum,
    options: &BTreeMap<String, Datum>,
    whole_database: bool,
) -> Result<Value, ReqlError> {
    if !matches!(mode, Datum::String(text) if text == "unsafe_rollback" || text == "unsafe_rollback_or_erase")
    {
        return Err(ReqlError::logic(
            "`emergency_repair` should be \"unsafe_rollback\" or \"unsafe_rollback_or_erase\"",
        ));
    }
    if whole_database {
        return Err(ReqlError::logic(
            "Can't emergency repair an entire database at once; instead you should run `reconfigure()` on each table individually.",
        ));
    }
    let placement = [
        "shards",
        "replicas",
        "primary_replica_tag",
        "nonvoting_replica_tags",
    ];
    if placement.iter().any(|name| options.contains_key(*name)) {
        return Err(ReqlError::logic(
            "In emergency repair mode, you can't specify shards, replicas, etc.",
        ));
    }
    Err(ReqlError::op_failed(
        "This table doesn't need to be repaired.",
    ))
}

fn requested_shards(options: &BTreeMap<String, Datum>) -> Result<u32, ReqlError> {
    match options.get("shards") {
        None => Err(ReqlError::logic("Missing required argument `shards`.")),
        Some(Datum::Number(count)) if count.fract() != 0.0 => {
            Err(ReqlError::logic(format!("Number not an integer: {count}")))
        }
        Some(Datum::Number(count)) if *count < 1.0 => Err(ReqlError::logic(
            "Every table must have at least one shard.",
        )),
        Some(Datum::Number(count)) if *count > MAXIMUM_SHARDS => {
            Err(ReqlError::logic("Maximum number of shards is 64."))
        }
        Some(Datum::Number(count)) => Ok(*count as u32),
        Some(other) => Err(other.wrong_type("NUMBER")),
    }
}

/// `replicas` is a count (all on tag `default`) or an object of counts per
/// server tag with a `primary_replica_tag`; every tag must have enough
/// servers.
fn check_replicas(options: &BTreeMap<String, Datum>) -> Result<(), ReqlError> {
    let nonvoting: Vec<String> = match options.get("nonvoting_replica_tags") {
        None => Vec::new(),
        Some(Datum::Array(tags)) => tags
            .iter()
            .map(|tag| match tag {
                Datum::String(tag) => Ok(tag.clone()),
                other => Err(other.wrong_type("STRING")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(other.wrong_type("ARRAY")),
    };
    let primary_tag = match options.get("primary_replica_tag") {
        None => None,
        Some(Datum::String(tag)) => Some(tag.clone()),
        Some(other) => return Err(other.wrong_type("STRING")),
    };
    let count = |value: &Datum| match value {
        Datum::Number(count) if *count < 0.0 => {
            Err(ReqlError::logic("Can't have a negative number of replicas"))
        }
        Datum::Number(count) if count.fract() != 0.0 => {
            Err(ReqlError::logic(format!("Number not an integer: {count}")))
        }
        Datum::Number(count) => Ok(*count as u64),
        other => Err(other.wrong_type("NUMBER")),
    };
    let (replicas, primary_tag): (BTreeMap<String, u64>, String) = match options.get("replicas") {
        None => return Err(ReqlError::logic("Missing required argument `replicas`.")),
        Some(Datum::Object(per_tag)) => {
            let Some(primary_tag) = primary_tag else {
                return Err(ReqlError::logic(
                    "`primary_replica_tag` must be specified when `replicas` is an OBJECT.",
                ));
            };
            let replicas = per_tag
                .iter()
                .map(|(tag, value)| Ok((tag.clone(), count(value)?)))
                .collect::<Result<_, ReqlError>>()?;
            (replicas, primary_tag)
        }
        Some(total) => {
            if primary_tag.is_some() {
                return Err(ReqlError::logic(
                    "`replicas` must be an OBJECT if `primary_replica_tag` is specified.",
                ));
            }
            if options.contains_key("nonvoting_replica_tags") {
                return Err(ReqlError::logic(
                    "`replicas` must be an OBJECT if `nonvoting_replica_tags` is specified.",
                ));
            }
            (
                BTreeMap::from([("default".to_owned(), count(total)?)]),
                "default".to_owned(),
            )
        }
    };
    if replicas.values().sum::<u64>() == 0 {
        return Err(ReqlError::op_failed(
            "You must set `replicas` to at least one. `replicas` includes the primary replica; if there are zero replicas, there is nowhere to put the data.",
        ));
    }
    if replicas.get(&primary_tag).copied().unwrap_or(0) == 0 {
        return Err(ReqlError::op_failed(format!(
            "Can't use server tag `{primary_tag}` for primary replicas because you specified no replicas in server tag `{primary_tag}`."
        )));
    }
    if let Some(tag) = nonvoting.iter().find(|tag| !replicas.contains_key(*tag)) {
        return Err(ReqlError::op_failed(format!(
            "You specified that the replicas in server tag `{tag}` should be non-voting, but you didn't specify a number of replicas in server tag `{tag}`."
        )));
    }
    for (tag, wanted) in &replicas {
        let available = servers_with_tag(tag);
        if *wanted > available {
            return Err(ReqlError::op_failed(format!(
                "Can't put {wanted} replicas on servers with the tag `{tag}` because there are only {available} servers with the tag `{tag}`. It's impossible to have more replicas of the data than there are servers."
            )));
        }
    }
    Ok(())
}
