//! Databases and tables: `db_create`, `db_drop`, `db_list`, `table_create`,
//! `table_drop`, `table_list`, with RethinkDB's result documents.

use std::collections::BTreeMap;

use photondb_datum::Datum;
use photondb_storage::catalog::{uuid_string, DatabaseConfig, TableConfig};
use photondb_storage::Durability;

use super::error::{Frame, ReqlError};
use super::eval::TypeMismatch;
use super::eval::{arity, object, Context, Value};
use super::permission::{Permission, Scope};
use super::term::Term;
use super::term_type as kind;

/// The name this server reports for itself in configs.
pub const SERVER_NAME: &str = "photondb";

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '-'
        })
}

pub fn check_name(kind: &str, name: &str) -> Result<(), ReqlError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ReqlError::logic(format!(
            "{kind} name `{name}` invalid (Use A-Z, a-z, 0-9, _ and - only)."
        )))
    }
}

pub fn database_document(database: &DatabaseConfig) -> Datum {
    object([
        ("id", Datum::String(uuid_string(database.id))),
        ("name", Datum::String(database.name.clone())),
    ])
}

pub fn table_document(
    table: &TableConfig,
    database_name: &str,
    engine: &photondb_runtime::Engine,
) -> Datum {
    let indexes = engine
        .indexes_of(table.id)
        .into_iter()
        .map(|index| Datum::String(index.name))
        .collect();
    let durability = match table.durability {
        Durability::Hard => "hard",
        Durability::Soft => "soft",
    };
    let shard = object([
        ("primary_replica", Datum::String(SERVER_NAME.into())),
        (
            "replicas",
            Datum::Array(vec![Datum::String(SERVER_NAME.into())]),
        ),
        ("nonvoting_replicas", Datum::Array(Vec::new())),
    ]);
    object([
        ("db", Datum::String(database_name.to_owned())),
        ("durability", Datum::String(durability.into())),
        ("id", Datum::String(uuid_string(table.id.0))),
        ("indexes", Datum::Array(indexes)),
        ("name", Datum::String(table.name.clone())),
        ("primary_key", Datum::String(table.primary_key.clone())),
        (
            "shards",
            Datum::Array(vec![shard; table.shards.max(1) as usize]),
        ),
        ("write_acks", Datum::String("majority".into())),
    ])
}

fn change(old: Datum, new: Datum) -> Datum {
    Datum::Array(vec![object([("new_val", new), ("old_val", old)])])
}

pub async fn evaluate(
    context: &Context,
    term_type: u64,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    let engine = &context.engine;
    match term_type {
        kind::DB_LIST => {
            arity(args, 0, 0)?;
            let mut names: Vec<String> = engine.catalog().databases.into_keys().collect();
            names.push(super::system::DATABASE.to_owned());
            names.sort();
            Ok(Value::Datum(Datum::Array(
                names.into_iter().map(Datum::String).collect(),
            )))
        }
        kind::DB_CREATE => {
            arity(args, 1, 1)?;
            context.require(Permission::Config, Scope::Global)?;
            let name = context.string_argument(args, 0).await?;
            check_name("Database", &name).map_err(|error| error.within(Frame::Position(0)))?;
            if name == super::system::DATABASE {
                return Err(ReqlError::op_failed(format!(
                    "Database `{name}` already exists."
                )));
            }
            let database = engine.create_database(&name).await?;
            Ok(Value::Datum(object([
                (
                    "config_changes",
                    change(Datum::Null, database_document(&database)),
                ),
                ("dbs_created", Datum::Number(1.0)),
            ])))
        }
        kind::DB_DROP => {
            arity(args, 1, 1)?;
            context.require(Permission::Config, Scope::Global)?;
            let name = context.string_argument(args, 0).await?;
            if name == super::system::DATABASE {
                return Err(ReqlError::op_failed(
                    "Database `rethinkdb` is special; you can't delete it.",
                ));
            }
            let (database, tables) = engine.drop_database(&name).await?;
            Ok(Value::Datum(object([
                (
                    "config_changes",
                    change(database_document(&database), Datum::Null),
                ),
                ("dbs_dropped", Datum::Number(1.0)),
                ("tables_dropped", Datum::Number(tables.len() as f64)),
            ])))
        }
        kind::TABLE_LIST => {
            arity(args, 0, 1)?;
            let database = database_for(context, args, 1).await?;
            if database.id == super::system::DATABASE_ID {
                return Ok(Value::Datum(Datum::Array(
                    super::system::TABLES
                        .iter()
                        .map(|name| Datum::String((*name).into()))
                        .collect(),
                )));
            }
            let names = engine
                .catalog()
                .tables
                .into_values()
                .filter(|table| table.database == database.id)
                .map(|table| Datum::String(table.name))
                .collect();
            Ok(Value::Datum(Datum::Array(names)))
        }
        kind::TABLE_CREATE => {
            arity(args, 1, 2)?;
            let database = database_for(context, args, 2).await?;
            context.require(Permission::Config, Scope::Database(database.id))?;
            let name = context.string_argument(args, args.len() - 1).await?;
            check_name("Table", &name)
                .map_err(|error| error.within(Frame::Position(args.len() - 1)))?;
            if database.id == super::system::DATABASE_ID {
                return Err(ReqlError::op_failed(
                    "Database `rethinkdb` is special; you can't create new tables in it.",
                ));
            }
            let primary_key = match context.optional_datum(optargs, "primary_key").await? {
                None => "id".to_owned(),
                Some(Datum::String(key)) => key,
                Some(other) => {
                    return Err(other
                        .wrong_type("STRING")
                        .within(Frame::Optional("primary_key".into())))
                }
            };
            let durability = match context.optional_datum(optargs, "durability").await? {
                None => Durability::Hard,
                Some(Datum::String(text)) if text == "hard" => Durability::Hard,
                Some(Datum::String(text)) if text == "soft" => Durability::Soft,
                Some(other) => {
                    return Err(ReqlError::logic(format!(
                        "Durability option `{}` unrecognized (options are \"hard\" and \"soft\").",
                        super::write::option_text(&other)
                    ))
                    .within(Frame::Optional("durability".into())))
                }
            };
            // `shards` and `replicas` are accepted; one server holds every shard.
            let table = engine
                .create_table(&database.name, &name, &primary_key, durability)
                .await?;
            Ok(Value::Datum(object([
                (
                    "config_changes",
                    change(Datum::Null, table_document(&table, &database.name, engine)),
                ),
                ("tables_created", Datum::Number(1.0)),
            ])))
        }
        kind::TABLE_DROP => {
            arity(args, 1, 2)?;
            let database = database_for(context, args, 2).await?;
            context.require(Permission::Config, Scope::Database(database.id))?;
            let name = context.string_argument(args, args.len() - 1).await?;
            let table = engine.drop_table(&database.name, &name).await?;
            Ok(Value::Datum(object([
                (
                    "config_changes",
                    change(table_document(&table, &database.name, engine), Datum::Null),
                ),
                ("tables_dropped", Datum::Number(1.0)),
            ])))
        }
        _ => unreachable!("admin::evaluate is called for admin terms only"),
    }
}

/// The database argument when `args` has `full` arguments, else the default.
async fn database_for(
    context: &Context,
    args: &[Term],
    full: usize,
) -> Result<DatabaseConfig, ReqlError> {
    if args.len() == full {
        context.database_argument(args, 0).await
    } else {
        context.database_named(&context.default_database)
    }
}
