//! `insert`, `delete` and point reads, with RethinkDB's result documents.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use photondb_datum::{document, Datum};
use photondb_runtime::Engine;
use photondb_storage::catalog::{uuid_string, TableConfig};
use photondb_storage::{Backend, Conflict, Durability, Mutation, WriteBatch};

use std::ops::Bound;

use super::error::{ErrorClass, Frame, ReqlError};
use super::eval::TypeMismatch;
use super::eval::{arity, object, pretty, primary_key_bytes, Context, Value};
use super::function::Callable;
use super::permission::Permission;
use super::stream::Stream;
use super::term::Term;
use super::term_type as kind;

/// An option value as RethinkDB quotes it in messages: strings bare.
pub fn option_text(value: &Datum) -> String {
    match value {
        Datum::String(text) => text.clone(),
        other => pretty(other),
    }
}

/// RethinkDB refuses to store arrays longer than this, whatever
/// `array_limit` a query sets.
const DISK_ARRAY_LIMIT: usize = 100_000;

fn check_storable(datum: &Datum) -> Result<(), ReqlError> {
    match datum {
        Datum::Array(items) => {
            if items.len() > DISK_ARRAY_LIMIT {
                return Err(ReqlError::new(
                    ErrorClass::ResourceLimit,
                    "Array too large for disk writes (limit 100,000 elements).",
                ));
            }
            items.iter().try_for_each(check_storable)
        }
        Datum::Object(fields) => fields.values().try_for_each(check_storable),
        _ => Ok(()),
    }
}

pub async fn get(
    engine: &Engine,
    table: &TableConfig,
    key: &Datum,
) -> Result<Option<Datum>, ReqlError> {
    let encoded = primary_key_bytes(key)?;
    let stored = engine.get(table.id, Bytes::from(encoded)).await?;
    stored.map(|bytes| decode(&bytes)).transpose()
}

fn decode(bytes: &[u8]) -> Result<Datum, ReqlError> {
    document::decode(bytes).map_err(ReqlError::unreadable)
}

fn new_uuid() -> String {
    let mut bytes: [u8; 16] = crate::protocol::scram::random_bytes(16)
        .try_into()
        .expect("16 bytes");
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    uuid_string(u128::from_be_bytes(bytes))
}

async fn durability(
    context: &Context,
    optargs: &BTreeMap<String, Term>,
    table: &TableConfig,
) -> Result<Durability, ReqlError> {
    match context.optional_datum(optargs, "durability").await? {
        Some(Datum::String(text)) if text == "hard" => Ok(Durability::Hard),
        Some(Datum::String(text)) if text == "soft" => Ok(Durability::Soft),
        Some(other) => Err(ReqlError::logic(format!(
            "Durability option `{}` unrecognized (options are \"hard\" and \"soft\").",
            option_text(&other)
        ))
        .within(Frame::Optional("durability".into()))),
        None => Ok(context.durability.unwrap_or(table.durability)),
    }
}

/// What a write's `changes` array lists.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum ReturnChanges {
    #[default]
    Never,
    /// `return_changes=True`: the documents that changed.
    Changed,
    /// `return_changes='always'`: every document the write tried, with an
    /// `error` field where it failed.
    Always,
}

async fn return_changes(
    context: &Context,
    optargs: &BTreeMap<String, Term>,
) -> Result<ReturnChanges, ReqlError> {
    Ok(
        match context.optional_datum(optargs, "return_changes").await? {
            None | Some(Datum::Bool(false)) => ReturnChanges::Never,
            Some(Datum::Bool(true)) => ReturnChanges::Changed,
            Some(Datum::String(text)) if text == "always" => ReturnChanges::Always,
            Some(other) => {
                return Err(other
                    .wrong_type("BOOL")
                    .within(Frame::Optional("return_changes".into())))
            }
        },
    )
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
    return_changes: ReturnChanges,
    changes: Vec<Datum>,
}

impl Tally {
    fn new(return_changes: ReturnChanges) -> Tally {
        Tally {
            return_changes,
            ..Tally::default()
        }
    }

    /// Counts a failed document; with `'always'`, lists it with its error.
    fn error(&mut self, message: String, old: Option<Datum>, new: Option<Datum>) {
        if self.return_changes == ReturnChanges::Always {
            self.changes.push(object([
                ("error", Datum::String(message.clone())),
                ("new_val", new.unwrap_or(Datum::Null)),
                ("old_val", old.unwrap_or(Datum::Null)),
            ]));
        }
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }

    /// Lists a document the write went through (the caller counts it).
    fn change(&mut self, old: Option<Datum>, new: Option<Datum>) {
        let changed = old != new;
        if self.return_changes == ReturnChanges::Always
            || (self.return_changes == ReturnChanges::Changed && changed)
        {
            self.changes.push(object([
                ("new_val", new.unwrap_or(Datum::Null)),
                ("old_val", old.unwrap_or(Datum::Null)),
            ]));
        }
    }

    /// Adds one document's result to the whole write's.
    fn absorb(&mut self, other: Tally) {
        self.inserted += other.inserted;
        self.replaced += other.replaced;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
        self.skipped += other.skipped;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.changes.extend(other.changes);
    }

    fn into_datum(self) -> Datum {
        let with_changes = self.return_changes != ReturnChanges::Never;
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

pub async fn insert(
    context: &Context,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 2, 2)?;
    let table = match context.argument(args, 0).await? {
        Value::Table(table) => table,
        Value::SystemTable(name) => {
            return insert_system(context, &name, context.datum_argument(args, 1).await?).await
        }
        other => return Err(other.wrong_type("TABLE").within(Frame::Position(0))),
    };
    context.require_on_table(Permission::Write, &table)?;
    // Documents written out in the query are read where they are; copying
    // a bulk insert's megabytes first would only be thrown away.
    let documents: Vec<Cow<'_, Datum>> = match literal_documents(context, &args[1]) {
        Some(documents) => documents.into_iter().map(Cow::Borrowed).collect(),
        None => match context.datum_argument(args, 1).await? {
            Datum::Array(items) => items.into_iter().map(Cow::Owned).collect(),
            single => vec![Cow::Owned(single)],
        },
    };
    // `conflict` is a policy name or a function (id, old, new) -> document.
    let mut resolver = None;
    let conflict = match optargs.get("conflict") {
        None => Conflict::Error,
        Some(term) => match context.eval(term).await.map_err(|error| error.within(Frame::Optional("conflict".into())))? {
            Value::Datum(Datum::String(text)) if text == "error" => Conflict::Error,
            Value::Datum(Datum::String(text)) if text == "replace" => Conflict::Replace,
            Value::Datum(Datum::String(text)) if text == "update" => Conflict::Update,
            Value::Function(function) => {
                if !term.is_deterministic() {
                    return Err(ReqlError::logic("The conflict function passed to `insert` must be deterministic."));
                }
                if function.parameters.len() != 3 {
                    return Err(ReqlError::logic("The conflict function passed to `insert` should expect 3 arguments."));
                }
                resolver = Some(function);
                Conflict::Error
            }
            Value::Datum(other) => {
                return Err(ReqlError::logic(format!("Conflict option `{}` unrecognized (options are \"error\", \"replace\" and \"update\").", option_text(&other)))
                    .within(Frame::Optional("conflict".into())))
            }
            other => return Err(other.wrong_type("STRING")),
        },
    };
    let durability = durability(context, optargs, &table).await?;
    let return_changes = return_changes(context, optargs).await?;
    // Each document's result, in document order (changes are listed in the
    // order the documents came, whether they failed before or after the
    // write).
    let mut results: Vec<Option<Tally>> = Vec::with_capacity(documents.len());
    let mut mutations = Vec::with_capacity(documents.len());
    let mut written = Vec::with_capacity(documents.len());
    let mut generated_keys = Vec::new();
    for document in documents {
        let mut result = Tally::new(return_changes);
        let Datum::Object(fields) = &*document else {
            result.error(
                format!("Expected type OBJECT but found {}.", document.type_name()),
                None,
                None,
            );
            results.push(Some(result));
            continue;
        };
        let (key, value) = match fields.get(&table.primary_key) {
            Some(key) => (key.clone(), document),
            None => {
                let generated = Datum::String(new_uuid());
                let mut fields = fields.clone();
                fields.insert(table.primary_key.clone(), generated.clone());
                generated_keys.push(generated.clone());
                (generated, Cow::Owned(Datum::Object(fields)))
            }
        };
        let checked =
            primary_key_bytes(&key).and_then(|encoded| check_storable(&value).map(|()| encoded));
        match checked {
            Ok(encoded) => {
                mutations.push(Mutation::Put {
                    table: table.id,
                    key: Bytes::from(encoded),
                    value: Bytes::from(document::encode(&value)),
                    conflict,
                });
                written.push(value);
                results.push(None);
            }
            Err(error) => {
                result.error(error.message, None, None);
                results.push(Some(result));
            }
        }
    }
    let outcomes = context.engine.write(mutations, durability).await?;
    let mut written_results = Vec::with_capacity(outcomes.len());
    for (outcome, new_document) in outcomes.into_iter().zip(written) {
        let mut result = Tally::new(return_changes);
        // Without changes to return, the stored bytes say what happened: no
        // document need be decoded (equal encodings are equal documents; a
        // replace by different bytes is decoded to compare, as -0 and 0 are
        // equal).
        if !outcome.conflicted && return_changes == ReturnChanges::Never {
            match (&outcome.old, &outcome.new) {
                (_, None) => result.deleted += 1,
                (None, _) => result.inserted += 1,
                (Some(old), Some(new)) if old == new => result.unchanged += 1,
                (Some(old), Some(new)) if decode(old)? == decode(new)? => result.unchanged += 1,
                _ => result.replaced += 1,
            }
            written_results.push(result);
            continue;
        }
        let new_document = new_document.into_owned();
        let mut old = outcome.old.as_deref().map(decode).transpose()?;
        let mut new = outcome.new.as_deref().map(decode).transpose()?;
        if outcome.conflicted {
            let existing = old.clone();
            let Some(resolver) = &resolver else {
                let message = format!(
                    "Duplicate primary key `{}`:\n{}\n{}",
                    table.primary_key,
                    pretty(existing.as_ref().unwrap_or(&Datum::Null)),
                    pretty(&new_document)
                );
                result.error(message, existing.clone(), existing);
                written_results.push(result);
                continue;
            };
            match resolve_conflict(
                context,
                &table,
                resolver,
                old.clone(),
                new_document,
                durability,
            )
            .await
            {
                Ok((before, after)) => (old, new) = (before, after),
                Err(error) => {
                    result.error(error.message, existing.clone(), existing);
                    written_results.push(result);
                    continue;
                }
            }
        }
        match (&old, &new) {
            (_, None) => result.deleted += 1,
            (None, _) => result.inserted += 1,
            (Some(old), Some(new)) if old == new => result.unchanged += 1,
            _ => result.replaced += 1,
        }
        result.change(old, new);
        written_results.push(result);
    }
    let mut written_results = written_results.into_iter();
    let mut tally = Tally::new(return_changes);
    for result in results {
        let result = result
            .or_else(|| written_results.next())
            .expect("one result per written document");
        tally.absorb(result);
    }
    tally.generated_keys = generated_keys;
    Ok(Value::Datum(tally.into_datum()))
}

/// Runs a conflict function `(id, old, new)` and writes its result over the
/// stored document with a compare-and-set, recomputing if the document
/// changes meanwhile. Returns the document before and after.
async fn resolve_conflict(
    context: &Context,
    table: &TableConfig,
    resolver: &super::function::Function,
    mut old: Option<Datum>,
    proposed: Datum,
    durability: Durability,
) -> Result<(Option<Datum>, Option<Datum>), ReqlError> {
    let key_value = primary_key_of(table, &proposed)?;
    let key = Bytes::from(primary_key_bytes(&key_value)?);
    for _ in 0..ATTEMPTS {
        let resolved = match &old {
            // Gone meanwhile: the insert goes ahead as it was.
            None => proposed.clone(),
            Some(existing) => {
                resolver
                    .call(
                        context,
                        vec![key_value.clone(), existing.clone(), proposed.clone()],
                    )
                    .await?
            }
        };
        let new = match resolved {
            Datum::Null => None,
            document @ Datum::Object(_) => {
                if primary_key_of(table, &document)? != key_value {
                    return Err(ReqlError::logic(format!(
                        "Primary key `{}` cannot be changed (`{}` -> `{}`).",
                        table.primary_key,
                        pretty(old.as_ref().unwrap_or(&Datum::Null)),
                        pretty(&document)
                    )));
                }
                check_storable(&document)?;
                Some(document)
            }
            other => {
                return Err(ReqlError::logic(format!(
                    "Inserted value must be an OBJECT (got {}):\n{}",
                    other.type_name(),
                    pretty(&other)
                )))
            }
        };
        match compare_and_set(
            context,
            table,
            key.clone(),
            old.as_ref(),
            new.as_ref(),
            durability,
        )
        .await?
        {
            None => return Ok((old, new)),
            Some(current) => old = current,
        }
    }
    Err(ReqlError::op_failed(format!(
        "The document changed {ATTEMPTS} times while it was being inserted; try again."
    )))
}

pub async fn delete(
    context: &Context,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 1, 1)?;
    // `table.get(key).delete()`: deleted on the owner without reading the
    // row first (the delete hands back what it removed).
    if let Some((table, key)) = point_target(context, &args[0]).await {
        context.require_on_table(Permission::Write, &table)?;
        let durability = durability(context, optargs, &table).await?;
        let mut tally = Tally::new(return_changes(context, optargs).await?);
        let outcome = context
            .engine
            .delete(table.id, Bytes::from(key), durability)
            .await?;
        count_delete(&mut tally, outcome.old.as_deref())?;
        return Ok(Value::Datum(tally.into_datum()));
    }
    let target = context.argument(args, 0).await?;
    // Rows of `rethinkdb.permissions` (a user's permissions at a scope).
    let system = match &target {
        Value::SystemTable(name) => Some(name.clone()),
        Value::Stream(stream) => stream.system_table().map(str::to_owned),
        // `filter` of a system table reads it whole, as an array.
        Value::Datum(Datum::Array(_)) => system_table_read(&args[0]),
        _ => None,
    };
    if let Some(name) = system {
        if name != "permissions" {
            return Err(ReqlError::op_failed(format!(
                "Table `rethinkdb.{name}` cannot be deleted from by PhotonDB yet."
            )));
        }
        let rows = match target {
            Value::SystemTable(name) => super::system::rows(context, &name)?,
            Value::Stream(stream) => stream.collect(context).await?,
            Value::Datum(Datum::Array(rows)) => rows,
            _ => unreachable!("matched above"),
        };
        let tally = Tally {
            deleted: super::system::delete_permissions(context, rows).await?,
            ..Default::default()
        };
        return Ok(Value::Datum(tally.into_datum()));
    }
    let (table, mut rows) = rows_of(target).map_err(|error| error.within(Frame::Position(0)))?;
    context.require_on_table(Permission::Write, &table)?;
    let durability = durability(context, optargs, &table).await?;
    let mut tally = Tally::new(return_changes(context, optargs).await?);
    while let Some(row) = rows.next(context).await? {
        let Some(row) = row else {
            tally.skipped += 1;
            continue;
        };
        let key = primary_key_of(&table, &row)?;
        let outcome = context
            .engine
            .delete(table.id, Bytes::from(primary_key_bytes(&key)?), durability)
            .await?;
        count_delete(&mut tally, outcome.old.as_deref())?;
    }
    Ok(Value::Datum(tally.into_datum()))
}

/// Counts one delete by the row it removed (`None`: there was none).
fn count_delete(tally: &mut Tally, removed: Option<&[u8]>) -> Result<(), ReqlError> {
    match removed.map(decode).transpose()? {
        Some(old) => {
            tally.deleted += 1;
            tally.change(Some(old), None);
        }
        None => tally.skipped += 1,
    }
    Ok(())
}

/// The `rethinkdb` table a chain of terms reads from (`r.db('rethinkdb')
/// .table(name).filter(…)…`), following each term's first argument.
fn system_table_read(term: &Term) -> Option<String> {
    let mut term = term;
    loop {
        let Term::Call {
            term_type, args, ..
        } = term
        else {
            return None;
        };
        if *term_type == kind::TABLE {
            return match args.as_slice() {
                [Term::Call {
                    term_type: kind::DB,
                    args: database,
                    ..
                }, Term::Datum(Datum::String(name))]
                    if matches!(database.as_slice(), [Term::Datum(Datum::String(db))] if db == super::system::DATABASE) =>
                {
                    Some(name.clone())
                }
                _ => None,
            };
        }
        term = args.first()?;
    }
}

/// The rows a write goes through: one (maybe missing) row, or a stream.
enum Rows {
    Single(Option<Option<Datum>>),
    Stream(Stream),
}

impl Rows {
    /// `Some(None)` is a `get` of a missing row.
    async fn next(&mut self, context: &Context) -> Result<Option<Option<Datum>>, ReqlError> {
        match self {
            Rows::Single(row) => Ok(row.take()),
            Rows::Stream(stream) => Ok(stream.next(context).await?.map(Some)),
        }
    }
}

fn rows_of(target: Value) -> Result<(TableConfig, Rows), ReqlError> {
    match target {
        Value::SingleSelection { table, row, .. } => Ok((table, Rows::Single(Some(row)))),
        Value::Table(table) => {
            let stream = Stream::table(table.clone(), Bound::Unbounded, Bound::Unbounded);
            Ok((table, Rows::Stream(stream)))
        }
        Value::Stream(stream) => match stream.selected_table().cloned() {
            Some(table) => Ok((table, Rows::Stream(stream))),
            None => Err(ReqlError::logic(
                "Expected type SELECTION but found SEQUENCE.",
            )),
        },
        other => Err(other.wrong_type("SELECTION")),
    }
}

fn primary_key_of(table: &TableConfig, row: &Datum) -> Result<Datum, ReqlError> {
    match row {
        Datum::Object(fields) => fields.get(&table.primary_key).cloned().ok_or_else(|| {
            ReqlError::new(
                ErrorClass::Internal,
                format!("Stored row has no primary key `{}`.", table.primary_key),
            )
        }),
        other => Err(other.wrong_type("OBJECT")),
    }
}

/// The documents of an insert whose argument is written out in the query
/// (a datum, or an array literal of datums), borrowed from it. `None` when
/// the argument must be evaluated.
fn literal_documents<'a>(context: &Context, argument: &'a Term) -> Option<Vec<&'a Datum>> {
    match argument {
        Term::Datum(Datum::Array(items)) => Some(items.iter().collect()),
        Term::Datum(single) => Some(vec![single]),
        Term::Call {
            term_type: kind::MAKE_ARRAY,
            args,
            optargs,
        } if optargs.is_empty() && args.len() <= context.array_limit => args
            .iter()
            .map(|item| match item {
                Term::Datum(datum) => Some(datum),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Inserts into a system table: only `users` takes writes so far.
async fn insert_system(
    context: &Context,
    table: &str,
    documents: Datum,
) -> Result<Value, ReqlError> {
    context.require_on_system_table(Permission::Write, table)?;
    if table != "users" {
        return Err(ReqlError::op_failed(format!(
            "Table `rethinkdb.{table}` cannot be written by PhotonDB yet."
        )));
    }
    let documents = match documents {
        Datum::Array(items) => items,
        single => vec![single],
    };
    let mut tally = Tally::default();
    for document in documents {
        let Datum::Object(fields) = document else {
            tally.error("Expected type OBJECT.".into(), None, None);
            continue;
        };
        let Some(Datum::String(name)) = fields.get("id") else {
            tally.error("A user needs a string `id`.".into(), None, None);
            continue;
        };
        let password = fields
            .get("password")
            .cloned()
            .unwrap_or(Datum::Bool(false));
        match super::system::write_user(context, name, &password, true).await {
            Ok(()) => tally.inserted += 1,
            Err(error) => tally.error(error.message, None, None),
        }
    }
    Ok(Value::Datum(tally.into_datum()))
}

/// `update` of one row of a system table: only a user's password so far.
async fn update_system(
    context: &Context,
    table: &str,
    row: Option<Datum>,
    change: &Callable,
) -> Result<Value, ReqlError> {
    context.require_on_system_table(Permission::Write, table)?;
    let mut tally = Tally::default();
    let Some(row) = row else {
        tally.skipped += 1;
        return Ok(Value::Datum(tally.into_datum()));
    };
    if table == "table_config" {
        let patch = change.call(context, row.clone()).await?;
        let new = super::sequence::merge(row.clone(), patch);
        if new == row {
            tally.unchanged += 1;
        } else {
            update_table_config(context, &row, &new).await?;
            tally.replaced += 1;
        }
        return Ok(Value::Datum(tally.into_datum()));
    }
    if table != "users" {
        return Err(ReqlError::op_failed(format!(
            "Table `rethinkdb.{table}` cannot be written by PhotonDB yet."
        )));
    }
    let Datum::Object(patch) = change.call(context, row.clone()).await? else {
        return Err(ReqlError::logic(
            "Expected an object to update a user with.",
        ));
    };
    let Datum::Object(fields) = &row else {
        unreachable!("system rows are objects")
    };
    let Some(Datum::String(name)) = fields.get("id") else {
        unreachable!("user rows have an id")
    };
    match patch.get("password") {
        Some(password) => {
            super::system::write_user(context, name, password, false).await?;
            tally.replaced += 1;
        }
        None => tally.unchanged += 1,
    }
    Ok(Value::Datum(tally.into_datum()))
}

/// Applies a changed `table_config` row: a new name, durability or shard
/// count. Anything else in the row is fixed, and changing it is an error.
async fn update_table_config(context: &Context, old: &Datum, new: &Datum) -> Result<(), ReqlError> {
    let (Datum::Object(old_fields), Datum::Object(new_fields)) = (old, new) else {
        return Err(ReqlError::logic("Expected type OBJECT."));
    };
    for field in ["id", "db", "primary_key", "indexes", "write_acks"] {
        if old_fields.get(field) != new_fields.get(field) {
            return Err(ReqlError::op_failed(format!(
                "The `{field}` field of a table's configuration cannot be changed by PhotonDB."
            )));
        }
    }
    if let Some(extra) = new_fields
        .keys()
        .find(|name| !old_fields.contains_key(*name))
    {
        return Err(ReqlError::op_failed(format!(
            "Unexpected key `{extra}` in a table configuration."
        )));
    }
    let id = match old_fields.get("id") {
        Some(Datum::String(id)) => photondb_storage::catalog::parse_uuid(id),
        _ => None,
    };
    let mut table = context
        .engine
        .catalog()
        .tables
        .into_values()
        .find(|table| Some(table.id.0) == id)
        .ok_or_else(|| ReqlError::op_failed("The table was dropped meanwhile."))?;
    match new_fields.get("name") {
        Some(Datum::String(name)) => {
            super::admin::check_name("Table", name)?;
            table.name = name.clone();
        }
        other => return Err(other.unwrap_or(&Datum::Null).wrong_type("STRING")),
    }
    table.durability = match new_fields.get("durability") {
        Some(Datum::String(text)) if text == "hard" => Durability::Hard,
        Some(Datum::String(text)) if text == "soft" => Durability::Soft,
        other => {
            let shown = other.map_or_else(|| "null".to_owned(), option_text);
            return Err(ReqlError::logic(format!(
                "Durability option `{shown}` unrecognized (options are \"hard\" and \"soft\")."
            )));
        }
    };
    match new_fields.get("shards") {
        Some(Datum::Array(shards)) if !shards.is_empty() && shards.len() <= 64 => {
            table.shards = shards.len() as u32
        }
        Some(Datum::Array(_)) => {
            return Err(ReqlError::logic(
                "A table must have between 1 and 64 shards.",
            ))
        }
        other => return Err(other.unwrap_or(&Datum::Null).wrong_type("ARRAY")),
    }
    context.engine.update_table(table).await?;
    Ok(())
}

pub async fn update_or_replace(
    context: &Context,
    term_type: u64,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 2, 2)?;
    // `table.get(key)`: the row is not read here but on the shard that owns
    // it, where the whole write then runs (one trip instead of two).
    let (table, rows) = match point_target(context, &args[0]).await {
        Some((table, key)) => (table, Target::Point(key)),
        None => {
            let target = context.argument(args, 0).await?;
            if let Value::SystemSelection { table, row } = target {
                if term_type != kind::UPDATE {
                    return Err(ReqlError::op_failed(format!(
                        "Table `rethinkdb.{table}` can only be updated by PhotonDB so far."
                    )));
                }
                let change = context.callable_argument(args, 1).await?;
                return update_system(context, &table, row, &change).await;
            }
            let (table, rows) =
                rows_of(target).map_err(|error| error.within(Frame::Position(0)))?;
            (table, Target::Rows(Box::new(rows)))
        }
    };
    context.require_on_table(Permission::Write, &table)?;
    // RethinkDB computes the change on the shard that owns the row, so it
    // must give the same answer there as here: no reads, no randomness.
    let non_atomic = matches!(
        context.optional_datum(optargs, "non_atomic").await?,
        Some(Datum::Bool(true))
    );
    if !non_atomic && !args[1].is_deterministic() {
        return Err(ReqlError::logic(
            "Could not prove argument deterministic.  Maybe you want to use the non_atomic flag?",
        )
        .within(Frame::Position(1)));
    }
    // Anything but a function is still evaluated once per row, so an error
    // in it fails that row (`first_error`), not the whole write.
    let change = match &args[1] {
        Term::Call {
            term_type: kind::FUNC,
            ..
        } => context.callable_argument(args, 1).await?,
        Term::Datum(datum) => Callable::Constant(datum.clone()),
        other => Callable::Function(super::function::Function::closure(other.clone(), context)),
    };
    let durability = durability(context, optargs, &table).await?;
    let mut tally = Tally::new(return_changes(context, optargs).await?);
    let mut rows = match rows {
        Target::Rows(rows) => *rows,
        Target::Point(key) => {
            let written =
                write_on_owner(context, &table, term_type, &change, key, durability).await;
            count_write(&mut tally, written)?;
            return Ok(Value::Datum(tally.into_datum()));
        }
    };
    while let Some(row) = rows.next(context).await? {
        let written =
            write_atomically(context, &table, term_type, &change, row.clone(), durability)
                .await
                .map_err(|error| (error, row));
        count_write(&mut tally, written)?;
    }
    Ok(Value::Datum(tally.into_datum()))
}

/// What an update or replace writes to.
enum Target {
    Rows(Box<Rows>),
    /// The row of this primary key (encoded), not read yet.
    Point(Vec<u8>),
}

/// A write's document before and after; or why it failed, with the row as
/// it was read.
type Written = Result<(Option<Datum>, Option<Datum>), (ReqlError, Option<Datum>)>;

/// Counts one document's write in the tally. Errors of the storage itself
/// end the whole query; any other fails only its document (`first_error`).
fn count_write(tally: &mut Tally, written: Written) -> Result<(), ReqlError> {
    let (old, new) = match written {
        Ok(change) => change,
        Err((error, _))
            if error.class == ErrorClass::OpIndeterminate
                || error.class == ErrorClass::OpFailed =>
        {
            return Err(error)
        }
        Err((error, row)) => {
            tally.error(error.message, row.clone(), row);
            return Ok(());
        }
    };
    match (&old, &new) {
        (None, None) => {
            tally.skipped += 1;
            return Ok(());
        }
        (Some(old), Some(new)) if old == new => tally.unchanged += 1,
        (Some(_), Some(_)) => tally.replaced += 1,
        (None, Some(_)) => tally.inserted += 1,
        (Some(_), None) => tally.deleted += 1,
    }
    tally.change(old, new);
    Ok(())
}

/// The table and primary key of a `table.get(key)` target, evaluated
/// without reading the row. `None` for any other target, and wherever
/// evaluating it fails: the general path then reports the error as usual.
async fn point_target(context: &Context, target: &Term) -> Option<(TableConfig, Vec<u8>)> {
    let Term::Call {
        term_type: kind::GET,
        args,
        optargs,
    } = target
    else {
        return None;
    };
    if args.len() != 2 || !optargs.is_empty() {
        return None;
    }
    let Ok(Value::Table(table)) = context.eval(&args[0]).await else {
        return None;
    };
    context.require_on_table(Permission::Read, &table).ok()?;
    let key = context.datum_argument(args, 1).await.ok()?;
    let key = primary_key_bytes(&key).ok()?;
    Some((table, key))
}

/// Applies `update`/`replace` to the row of `key` on the shard that owns it:
/// read, change and compare-and-set there, so nothing but the change and
/// its outcome crosses between cores.
async fn write_on_owner(
    context: &Context,
    table: &TableConfig,
    term_type: u64,
    change: &Callable,
    key: Vec<u8>,
    durability: Durability,
) -> Written {
    let partition = photondb_runtime::partition_of(&key, context.engine.partitions());
    let owner = (context.clone(), table.clone(), change.clone());
    let key = Bytes::from(key);
    context
        .engine
        .run_on_partition(partition, move |backend| async move {
            let (context, table, change) = owner;
            let storage = |error| {
                (
                    ReqlError::from(photondb_runtime::EngineError::from(error)),
                    None,
                )
            };
            for _ in 0..ATTEMPTS {
                let stored = backend.get(table.id, &key).await.map_err(storage)?;
                let current = stored
                    .as_deref()
                    .map(decode)
                    .transpose()
                    .map_err(|error| (error, None))?;
                let (new, row_key) = next_version(&context, &table, term_type, &change, &current)
                    .await
                    .map_err(|error| (error, current.clone()))?;
                let Some(row_key) = row_key else {
                    return Ok((current, new));
                };
                // Only a replace of a missing row can get here with another
                // key; RethinkDB refuses it as a primary key change.
                if row_key != key {
                    let message = format!(
                        "Primary key `{}` cannot be changed (`{}` -> `{}`).",
                        table.primary_key,
                        pretty(current.as_ref().unwrap_or(&Datum::Null)),
                        pretty(new.as_ref().unwrap_or(&Datum::Null))
                    );
                    return Err((ReqlError::logic(message), current));
                }
                let mutation = Mutation::CompareAndSet {
                    table: table.id,
                    key: key.clone(),
                    expected: stored,
                    new: new.as_ref().map(|row| Bytes::from(document::encode(row))),
                };
                let outcome = backend
                    .write(WriteBatch::new(vec![mutation]), durability)
                    .await
                    .map_err(storage)?
                    .remove(0);
                if !outcome.conflicted {
                    return Ok((current, new));
                }
                // Another write on this shard got in between: again.
            }
            Err((too_many_attempts(), None))
        })
        .await
        .map_err(|error| (ReqlError::from(error), None))?
}

/// Writes `new` (or deletes, for `None`) where the row is still `expected`.
/// `None` when written; otherwise the row as another writer left it.
async fn compare_and_set(
    context: &Context,
    table: &TableConfig,
    key: Bytes,
    expected: Option<&Datum>,
    new: Option<&Datum>,
    durability: Durability,
) -> Result<Option<Option<Datum>>, ReqlError> {
    let mutation = Mutation::CompareAndSet {
        table: table.id,
        key,
        expected: expected.map(|row| Bytes::from(document::encode(row))),
        new: new.map(|row| Bytes::from(document::encode(row))),
    };
    let outcome = context
        .engine
        .write(vec![mutation], durability)
        .await?
        .remove(0);
    if !outcome.conflicted {
        return Ok(None);
    }
    Ok(Some(outcome.old.as_deref().map(decode).transpose()?))
}

/// How often a document changed by another writer between our read and our
/// write is re-read and recomputed before giving up.
const ATTEMPTS: usize = 64;

/// Applies `update`/`replace` to one document atomically: the change is
/// computed from the row as read and written only if the row is still that
/// (compare-and-set); otherwise it is recomputed from the row as it is now.
/// Returns the document before and after.
async fn write_atomically(
    context: &Context,
    table: &TableConfig,
    term_type: u64,
    change: &Callable,
    row: Option<Datum>,
    durability: Durability,
) -> Result<(Option<Datum>, Option<Datum>), ReqlError> {
    let mut current = row;
    for _ in 0..ATTEMPTS {
        let (new, key) = next_version(context, table, term_type, change, &current).await?;
        let Some(key) = key else {
            return Ok((current, new));
        };
        match compare_and_set(
            context,
            table,
            key,
            current.as_ref(),
            new.as_ref(),
            durability,
        )
        .await?
        {
            None => return Ok((current, new)),
            // Someone else wrote the document meanwhile: start again from it.
            Some(now) => current = now,
        }
    }
    Err(too_many_attempts())
}

fn too_many_attempts() -> ReqlError {
    ReqlError::op_failed(format!(
        "The document changed {ATTEMPTS} times while it was being updated; try again."
    ))
}

/// The row's next version under the change, and the key to write it at;
/// no key when the change leaves the row as it is.
async fn next_version(
    context: &Context,
    table: &TableConfig,
    term_type: u64,
    change: &Callable,
    current: &Option<Datum>,
) -> Result<(Option<Datum>, Option<Bytes>), ReqlError> {
    let new = apply_change(context, table, term_type, change, current.clone()).await?;
    if let Some(document_value) = &new {
        check_storable(document_value)?;
    }
    if *current == new {
        return Ok((new, None));
    }
    let row = new
        .as_ref()
        .or(current.as_ref())
        .expect("one of them exists when they differ");
    let key = Bytes::from(primary_key_bytes(&primary_key_of(table, row)?)?);
    Ok((new, Some(key)))
}

/// The new version of one row under `update` or `replace`; `None` deletes
/// (replace with null) or skips (update of a missing row).
async fn apply_change(
    context: &Context,
    table: &TableConfig,
    term_type: u64,
    change: &Callable,
    row: Option<Datum>,
) -> Result<Option<Datum>, ReqlError> {
    let argument = row.clone().unwrap_or(Datum::Null);
    if term_type == kind::UPDATE {
        let Some(old) = row else { return Ok(None) };
        let patch = change.call(context, argument).await?;
        let new = match patch {
            Datum::Null => return Ok(Some(old)),
            patch @ Datum::Object(_) => super::sequence::merge(old.clone(), patch),
            other => {
                return Err(ReqlError::logic(format!(
                    "Inserted value must be an OBJECT (got {}):\n{}",
                    other.type_name(),
                    pretty(&other)
                )))
            }
        };
        check_primary_key_kept(table, &old, &new)?;
        return Ok(Some(new));
    }
    let new = change.call(context, argument).await?;
    match (&row, new) {
        (_, Datum::Null) => Ok(None),
        (old, new @ Datum::Object(_)) => {
            if let Datum::Object(fields) = &new {
                if !fields.contains_key(&table.primary_key) {
                    return Err(ReqlError::logic(format!(
                        "Inserted object must have primary key `{}`:\n{}",
                        table.primary_key,
                        pretty(&new)
                    )));
                }
            }
            if let Some(old) = old {
                check_primary_key_kept(table, old, &new)?;
            }
            Ok(Some(new))
        }
        (_, other) => Err(ReqlError::logic(format!(
            "Inserted value must be an OBJECT (got {}):\n{}",
            other.type_name(),
            pretty(&other)
        ))),
    }
}

fn check_primary_key_kept(table: &TableConfig, old: &Datum, new: &Datum) -> Result<(), ReqlError> {
    let (Datum::Object(old_fields), Datum::Object(new_fields)) = (old, new) else {
        return Ok(());
    };
    if old_fields.get(&table.primary_key) != new_fields.get(&table.primary_key) {
        return Err(ReqlError::logic(format!(
            "Primary key `{}` cannot be changed (`{}` -> `{}`).",
            table.primary_key,
            pretty(old),
            pretty(new)
        )));
    }
    Ok(())
}

pub async fn get_all(
    context: &Context,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 1, usize::MAX)?;
    let table = context.table_argument(args, 0).await?;
    let index = match super::index::option(context, optargs)
        .await
        .map_err(|error| error.within(Frame::Optional("index".into())))?
    {
        Some(name) => super::index::named(context, &table, &name)?,
        None => None,
    };
    let mut keys = Vec::with_capacity(args.len() - 1);
    let mut seen = std::collections::BTreeSet::new();
    for position in 1..args.len() {
        let key = match context.argument(args, position).await? {
            // No secondary key is either bound: nothing matches.
            Value::MinValue | Value::MaxValue if index.is_some() => continue,
            value => context
                .into_datum(value)
                .await
                .map_err(|error| error.within(Frame::Position(position)))?,
        };
        if key == Datum::Null && index.is_some() {
            return Err(
                ReqlError::new(ErrorClass::NonExistence, "Keys cannot be NULL.")
                    .within(Frame::Position(position)),
            );
        }
        let encoded = match &index {
            None => {
                primary_key_bytes(&key).map_err(|error| error.within(Frame::Position(position)))?
            }
            Some(_) => photondb_datum::key::encode(&key),
        };
        if seen.insert(encoded) {
            keys.push(key);
        }
    }
    Ok(Value::Stream(match index {
        None => Stream::keys(table, keys),
        Some(index) => Stream::index_keys(table, index, keys),
    }))
}

/// A `between` bound: its value, or, for an array with `r.minval` or
/// `r.maxval` in it (`[10, r.minval]`, bounds of a compound index), the
/// bytes that sort just below or above every key that array stands for:
/// the array's encoding up to that element, unterminated, then a byte
/// below every tag (minval; above the array's end) or above every tag
/// (maxval).
async fn bound_argument(
    context: &Context,
    args: &[Term],
    position: usize,
) -> Result<(Value, Option<Vec<u8>>), ReqlError> {
    if let Term::Call {
        term_type: super::term_type::MAKE_ARRAY,
        args: items,
        ..
    } = &args[position]
    {
        let mut values = Vec::with_capacity(items.len());
        for index in 0..items.len() {
            values.push(
                context
                    .argument(items, index)
                    .await
                    .map_err(|error| error.within(Frame::Position(position)))?,
            );
        }
        if let Some(at) = values
            .iter()
            .position(|value| matches!(value, Value::MinValue | Value::MaxValue))
        {
            let mut raw = vec![0x01];
            for value in &values[..at] {
                match value {
                    Value::Datum(datum) => photondb_datum::key::encode_into(datum, &mut raw),
                    other => {
                        return Err(other.wrong_type("DATUM").within(Frame::Position(position)))
                    }
                }
            }
            raw.push(if matches!(values[at], Value::MinValue) {
                0x01
            } else {
                0xFF
            });
            return Ok((Value::Datum(Datum::Array(Vec::new())), Some(raw)));
        }
        let mut datums = Vec::with_capacity(values.len());
        for value in values {
            datums.push(
                context
                    .into_datum(value)
                    .await
                    .map_err(|error| error.within(Frame::Position(position)))?,
            );
        }
        return Ok((Value::Datum(Datum::Array(datums)), None));
    }
    Ok((context.argument(args, position).await?, None))
}

pub async fn between(
    context: &Context,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 3, 3)?;
    // A table, or a table ordered by an index (`order_by(index=…)`), whose
    // order the range keeps.
    let (table, ordered) = match context.argument(args, 0).await? {
        Value::Table(table) => (table, None),
        Value::Stream(mut stream) if stream.is_table_slice() => {
            let read = stream.table_read_mut().expect("a table slice not started");
            if read.sliced {
                return Err(ReqlError::logic(
                    "Cannot perform multiple BETWEENs on the same table.",
                ));
            }
            let index_name = read.index.as_ref().map_or_else(
                || read.table.primary_key.clone(),
                |index| index.config.name.clone(),
            );
            (read.table.clone(), Some((index_name, read.descending)))
        }
        other => return Err(other.wrong_type("TABLE_SLICE").within(Frame::Position(0))),
    };
    let index_name = super::index::option(context, optargs)
        .await
        .map_err(|error| error.within(Frame::Optional("index".into())))?;
    if let (Some((ordered_by, _)), wanted) =
        (&ordered, index_name.as_ref().unwrap_or(&table.primary_key))
    {
        if ordered_by != wanted {
            return Err(ReqlError::logic(format!(
                "Cannot use index `{wanted}` after calling ORDER_BY on index `{ordered_by}`."
            )));
        }
    }
    let descending = ordered.as_ref().is_some_and(|(_, descending)| *descending);
    let index = match index_name {
        Some(name) => super::index::named(context, &table, &name)?,
        None => None,
    };
    let bound_option = |name: &'static str, default: &'static str| async move {
        match context.optional_datum(optargs, name).await? {
            None => Ok(default == "closed"),
            Some(Datum::String(text)) if text == "closed" => Ok(true),
            Some(Datum::String(text)) if text == "open" => Ok(false),
            Some(other) => Err(ReqlError::logic(format!(
                "Expected `open` or `closed` for optarg `{name}` (got `{}`).",
                pretty(&other)
            ))),
        }
    };
    let left_closed = bound_option("left_bound", "closed").await?;
    let right_closed = bound_option("right_bound", "open").await?;
    let bound =
        |value: Value, closed: bool, position: usize| -> Result<Bound<Vec<u8>>, ReqlError> {
            match value {
                Value::MinValue | Value::MaxValue => Ok(Bound::Unbounded),
                Value::Datum(datum) => {
                    let encoded = photondb_datum::key::encode(&datum);
                    Ok(if closed {
                        Bound::Included(encoded)
                    } else {
                        Bound::Excluded(encoded)
                    })
                }
                other => Err(other.wrong_type("DATUM").within(Frame::Position(position))),
            }
        };
    let (lower, lower_raw) = bound_argument(context, args, 1).await?;
    let (upper, upper_raw) = bound_argument(context, args, 2).await?;
    if matches!(lower, Value::Datum(Datum::Null)) || matches!(upper, Value::Datum(Datum::Null)) {
        return Err(ReqlError::logic(
            "Cannot use `null` in BETWEEN, use `r.minval` or `r.maxval` to denote unboundedness.",
        ));
    }
    let empty = matches!(lower, Value::MaxValue) || matches!(upper, Value::MinValue);
    let (start, end) = if empty {
        // Still a table slice, of nothing.
        (Bound::Excluded(Vec::new()), Bound::Excluded(Vec::new()))
    } else {
        // A bound with `r.minval`/`r.maxval` inside an array lies between
        // keys, never on one: open or closed makes no difference.
        let start = match lower_raw {
            Some(raw) => Bound::Included(raw),
            None => bound(lower, left_closed, 1)?,
        };
        let end = match upper_raw {
            Some(raw) => Bound::Excluded(raw),
            None => bound(upper, right_closed, 2)?,
        };
        (start, end)
    };
    let mut stream = match index {
        None => {
            let bytes = |bound: Bound<Vec<u8>>| bound.map(Bytes::from);
            Stream::table(table, bytes(start), bytes(end))
        }
        Some(index) => super::stream::index_read_between(context, &table, &index, start, end)?,
    };
    let read = stream.table_read_mut().expect("a new table read");
    read.descending = descending;
    read.ordered = ordered.is_some();
    read.sliced = true;
    Ok(Value::Stream(stream))
}
