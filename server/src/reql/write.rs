//! `insert`, `delete` and point reads, with RethinkDB's result documents.

use std::collections::BTreeMap;

use bytes::Bytes;
use photondb_datum::{document, Datum};
use photondb_runtime::Engine;
use photondb_storage::catalog::{uuid_string, TableConfig};
use photondb_storage::{Conflict, Durability, Mutation};

use super::error::{Frame, ReqlError};
use super::eval::{arity, object, pretty, primary_key_bytes, Context, Value};
use super::term::Term;
use super::term_type as kind;

pub async fn get(engine: &Engine, table: &TableConfig, key: &Datum) -> Result<Option<Datum>, ReqlError> {
    let encoded = primary_key_bytes(key)?;
    let stored = engine.get(table.id, Bytes::from(encoded)).await?;
    stored.map(|bytes| decode(&bytes)).transpose()
}

fn decode(bytes: &[u8]) -> Result<Datum, ReqlError> {
    document::decode(bytes).map_err(|error| ReqlError::new(super::error::ErrorClass::Internal, format!("Stored document is unreadable: {error}")))
}

fn new_uuid() -> String {
    let mut bytes: [u8; 16] = crate::protocol::scram::random_bytes(16).try_into().expect("16 bytes");
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    uuid_string(u128::from_be_bytes(bytes))
}

async fn durability(context: &Context, optargs: &BTreeMap<String, Term>, table: &TableConfig) -> Result<Durability, ReqlError> {
    match context.optional_datum(optargs, "durability").await? {
        Some(Datum::String(text)) if text == "hard" => Ok(Durability::Hard),
        Some(Datum::String(text)) if text == "soft" => Ok(Durability::Soft),
        Some(other) => Err(ReqlError::logic(format!("Durability option `{}` unrecognized (options are \"hard\" and \"soft\").", pretty(&other)))
            .within(Frame::Optional("durability".into()))),
        None => Ok(context.durability.unwrap_or(table.durability)),
    }
}

async fn return_changes(context: &Context, optargs: &BTreeMap<String, Term>) -> Result<bool, ReqlError> {
    Ok(match context.optional_datum(optargs, "return_changes").await? {
        None | Some(Datum::Bool(false)) => false,
        Some(Datum::Bool(true)) => true,
        Some(Datum::String(text)) if text == "always" => true,
        Some(other) => {
            return Err(ReqlError::logic(format!("Expected type BOOL but found {}.", other.type_name()))
                .within(Frame::Optional("return_changes".into())))
        }
    })
}

#[derive(Default)]
struct Tally {
    inserted: u64,
    replaced: u64,
    unchanged: u64,
    deleted: u64,
    skipped: u64,
    errors: u64,
    first_error: Option<String>,
    generated_keys: Vec<Datum>,
    changes: Vec<Datum>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    fn into_datum(self, with_changes: bool) -> Datum {
        let mut fields: photondb_datum::Object = [
            ("deleted", self.deleted),
            ("errors", self.errors),
            ("inserted", self.inserted),
            ("replaced", self.replaced),
            ("skipped", self.skipped),
            ("unchanged", self.unchanged),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), Datum::Number(count as f64)))
        .collect();
        if let Some(message) = self.first_error {
            fields.insert("first_error".into(), Datum::String(message));
        }
        if !self.generated_keys.is_empty() {
            fields.insert("generated_keys".into(), Datum::Array(self.generated_keys));
        }
        if with_changes {
            fields.insert("changes".into(), Datum::Array(self.changes));
        }
        Datum::Object(fields)
    }
}

pub async fn insert(context: &Context, args: &[Term], optargs: &BTreeMap<String, Term>) -> Result<Value, ReqlError> {
    arity(kind::INSERT, args, 2, 2)?;
    let table = context.table_argument(args, 0).await?;
    let documents = match context.datum_argument(args, 1).await? {
        Datum::Array(items) => items,
        single => vec![single],
    };
    let conflict = match context.optional_datum(optargs, "conflict").await? {
        None => Conflict::Error,
        Some(Datum::String(text)) if text == "error" => Conflict::Error,
        Some(Datum::String(text)) if text == "replace" => Conflict::Replace,
        Some(Datum::String(text)) if text == "update" => Conflict::Update,
        Some(other) => {
            return Err(ReqlError::logic(format!("Conflict option `{}` unrecognized (options are \"error\", \"replace\" and \"update\").", pretty(&other)))
                .within(Frame::Optional("conflict".into())))
        }
    };
    let durability = durability(context, optargs, &table).await?;
    let with_changes = return_changes(context, optargs).await?;
    let mut tally = Tally::default();
    let mut mutations = Vec::with_capacity(documents.len());
    let mut written = Vec::with_capacity(documents.len());
    for document in documents {
        let Datum::Object(mut fields) = document else {
            tally.error(format!("Expected type OBJECT but found {}.", document.type_name()));
            continue;
        };
        let key = match fields.get(&table.primary_key) {
            Some(key) => key.clone(),
            None => {
                let generated = Datum::String(new_uuid());
                fields.insert(table.primary_key.clone(), generated.clone());
                tally.generated_keys.push(generated.clone());
                generated
            }
        };
        let encoded = match primary_key_bytes(&key) {
            Ok(encoded) => encoded,
            Err(error) => {
                tally.error(error.message);
                continue;
            }
        };
        let value = Datum::Object(fields);
        mutations.push(Mutation::Put { table: table.id, key: Bytes::from(encoded), value: Bytes::from(document::encode(&value)), conflict });
        written.push(value);
    }
    let outcomes = context.engine.write(mutations, durability).await?;
    for (outcome, new_document) in outcomes.into_iter().zip(written) {
        let old = outcome.old.as_deref().map(decode).transpose()?;
        if outcome.conflicted {
            let old = old.unwrap_or(Datum::Null);
            tally.error(format!("Duplicate primary key `{}`:\n{}\n{}", table.primary_key, pretty(&old), pretty(&new_document)));
            continue;
        }
        let new = outcome.new.as_deref().map(decode).transpose()?;
        match (&old, &new) {
            (None, _) => tally.inserted += 1,
            (Some(old), Some(new)) if old == new => tally.unchanged += 1,
            _ => tally.replaced += 1,
        }
        if with_changes {
            tally.changes.push(object([("new_val", new.unwrap_or(Datum::Null)), ("old_val", old.unwrap_or(Datum::Null))]));
        }
    }
    Ok(Value::Datum(tally.into_datum(with_changes)))
}

pub async fn delete(context: &Context, args: &[Term], optargs: &BTreeMap<String, Term>) -> Result<Value, ReqlError> {
    arity(kind::DELETE, args, 1, 1)?;
    let (table, key) = match context.argument(args, 0).await? {
        Value::SingleSelection { table, key, .. } => (table, key),
        other => {
            return Err(ReqlError::compile(format!(
                "Term `DELETE` on {} is not supported by PhotonDB yet (only on `get`).",
                other.type_name()
            ))
            .within(Frame::Position(0)))
        }
    };
    let durability = durability(context, optargs, &table).await?;
    let with_changes = return_changes(context, optargs).await?;
    let encoded = primary_key_bytes(&key)?;
    let outcome = context.engine.delete(table.id, Bytes::from(encoded), durability).await?;
    let mut tally = Tally::default();
    match outcome.old.as_deref().map(decode).transpose()? {
        Some(old) => {
            tally.deleted = 1;
            if with_changes {
                tally.changes.push(object([("new_val", Datum::Null), ("old_val", old)]));
            }
        }
        None => tally.skipped = 1,
    }
    Ok(Value::Datum(tally.into_datum(with_changes)))
}
