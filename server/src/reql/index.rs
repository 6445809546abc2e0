//! Secondary indexes in ReQL: `index_create`, `index_drop`, `index_list`,
//! `index_rename`, `index_status`, `index_wait`, and the index functions the
//! storage engine runs on every write ([`Compiler`]).
//!
//! An index function is stored in the catalog as the wire JSON of its
//! `FUNC` term; `index_status` hands it out as binary, and `index_create`
//! takes that binary back (copying an index).

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use photondb_datum::{document, key, Datum};
use photondb_runtime::{Engine, IndexCompiler};
use photondb_storage::catalog::{IndexConfig, TableConfig};
use photondb_storage::IndexFunction;
use serde_json::Value as Json;

use super::error::{Frame, ReqlError};
use super::eval::{arity, object, Context, TypeMismatch, Value};
use super::function::Function;
use super::permission::Permission;
use super::term::Term;
use super::term_type as kind;

/// How often `index_wait` looks again.
const WAIT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Compiles stored index functions for the engine.
pub struct Compiler;

impl IndexCompiler for Compiler {
    fn compile(
        &self,
        engine: &Engine,
        index: &IndexConfig,
    ) -> Result<Rc<dyn IndexFunction>, String> {
        let context = Context::new(engine.clone());
        let function =
            compile_function(&index.function, &context).map_err(|error| error.message)?;
        Ok(Rc::new(CompiledIndex {
            function,
            context,
            multi: index.multi,
        }))
    }
}

/// An index function ready to run against stored documents.
struct CompiledIndex {
    function: Function,
    context: Context,
    multi: bool,
}

impl IndexFunction for CompiledIndex {
    fn secondary_keys(&self, document: &[u8]) -> Vec<Vec<u8>> {
        let Ok(row) = document::decode(document) else {
            return Vec::new();
        };
        match run_to_completion(self.function.call(&self.context, vec![row])) {
            Some(Ok(value)) => secondary_keys(value, self.multi),
            // A row the function fails on is not in the index, as in RethinkDB.
            _ => Vec::new(),
        }
    }
}

/// Runs a future that needs no I/O (an index function cannot read
/// tables) to its end on this thread. Cooperative yields inside it return
/// `Pending` once and are ready when polled again; a future still pending
/// after many polls is waiting on something that will not come here.
fn run_to_completion<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut context = TaskContext::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
    }
    None
}

/// The key encodings a function result indexes a row under: none for a
/// value that cannot be a secondary key, each element of an array in a
/// multi index.
pub fn secondary_keys(value: Datum, multi: bool) -> Vec<Vec<u8>> {
    match value {
        Datum::Array(items) if multi => {
            let mut keys: Vec<Vec<u8>> = items
                .into_iter()
                .filter(is_indexable)
                .map(|item| key::encode(&item))
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
        value if is_indexable(&value) => vec![key::encode(&value)],
        _ => Vec::new(),
    }
}

/// Whether a value can be a secondary key: RethinkDB takes numbers,
/// strings, booleans, times, binary and arrays of those; not null, not
/// objects.
fn is_indexable(value: &Datum) -> bool {
    match value {
        Datum::Null | Datum::Object(_) => false,
        Datum::Array(items) => items.iter().all(is_indexable),
        _ => true,
    }
}

/// A stored index function (wire JSON of a `FUNC`) as a [`Function`].
pub fn compile_function(wire: &str, context: &Context) -> Result<Function, ReqlError> {
    let json: Json = serde_json::from_str(wire)
        .map_err(|error| ReqlError::op_failed(format!("Index function does not parse: {error}")))?;
    match Term::parse(&json)? {
        Term::Call {
            term_type: kind::FUNC,
            args,
            ..
        } => Function::from_arguments(&args, context),
        _ => Err(ReqlError::op_failed("Index function is not a function.")),
    }
}

/// The wire JSON of a term (the inverse of [`Term::parse`]).
fn to_wire(term: &Term) -> Result<Json, ReqlError> {
    match term {
        Term::Datum(datum @ (Datum::Array(_) | Datum::Object(_))) => Ok(Json::Array(vec![
            Json::from(kind::DATUM),
            photondb_datum::json::to_json(datum),
        ])),
        Term::Datum(datum) => Ok(photondb_datum::json::to_json(datum)),
        Term::Call {
            term_type,
            args,
            optargs,
        } => {
            let args = args.iter().map(to_wire).collect::<Result<Vec<_>, _>>()?;
            let mut wire = vec![Json::from(*term_type), Json::Array(args)];
            if !optargs.is_empty() {
                let optargs = optargs
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), to_wire(value)?)))
                    .collect::<Result<serde_json::Map<_, _>, ReqlError>>()?;
                wire.push(Json::Object(optargs));
            }
            Ok(Json::Array(wire))
        }
        Term::Evaluated(_) => Err(ReqlError::logic(
            "Index functions cannot refer to values computed earlier in the query.",
        )),
    }
}

fn function_term(parameter: u64, body: Term) -> Term {
    let parameters = Term::Call {
        term_type: kind::MAKE_ARRAY,
        args: vec![Term::Datum(Datum::Number(parameter as f64))],
        optargs: BTreeMap::new(),
    };
    Term::Call {
        term_type: kind::FUNC,
        args: vec![parameters, body],
        optargs: BTreeMap::new(),
    }
}

/// `row => row(field)`: the function of `index_create(name)` without one.
fn field_function(field: &str) -> Term {
    let row = Term::Call {
        term_type: kind::VAR,
        args: vec![Term::Datum(Datum::Number(1.0))],
        optargs: BTreeMap::new(),
    };
    function_term(
        1,
        Term::Call {
            term_type: kind::GET_FIELD,
            args: vec![row, Term::Datum(Datum::String(field.to_owned()))],
            optargs: BTreeMap::new(),
        },
    )
}

/// Whether a term may define an index: no table reads, no randomness, no
/// `r.now()` (which would index every row under the time it was written).
fn is_index_safe(term: &Term) -> bool {
    match term {
        Term::Call {
            term_type: super::time::NOW,
            ..
        } => false,
        Term::Call { args, optargs, .. } => {
            term.is_deterministic()
                && args.iter().all(is_index_safe)
                && optargs.values().all(is_index_safe)
        }
        other => other.is_deterministic(),
    }
}

/// The index named `name` of `table`; `None` for the primary key.
pub fn named(
    context: &Context,
    table: &TableConfig,
    name: &str,
) -> Result<Option<IndexConfig>, ReqlError> {
    if name == table.primary_key {
        return Ok(None);
    }
    match context.engine.index(table.id, name) {
        Some(index) => Ok(Some(index)),
        None => Err(ReqlError::op_failed(format!(
            "Index `{name}` was not found on table `{}.{}`.",
            context.database_name_of(table),
            table.name
        ))),
    }
}

/// An `index` option's value: a string.
pub async fn option(
    context: &Context,
    optargs: &BTreeMap<String, Term>,
) -> Result<Option<String>, ReqlError> {
    match context.optional_datum(optargs, "index").await? {
        None => Ok(None),
        Some(Datum::String(name)) => Ok(Some(name)),
        Some(other) => Err(other.wrong_type("STRING")),
    }
}

fn status_document(context: &Context, index: &IndexConfig) -> Datum {
    let mut fields = vec![
        ("index", Datum::String(index.name.clone())),
        ("ready", Datum::Bool(index.ready)),
        (
            "function",
            Datum::Binary(index.function.clone().into_bytes()),
        ),
        ("multi", Datum::Bool(index.multi)),
        ("geo", Datum::Bool(index.geo)),
        ("outdated", Datum::Bool(false)),
    ];
    if !index.ready {
        fields.push((
            "progress",
            Datum::Number(context.engine.build_progress(index.id).unwrap_or(0.0)),
        ));
    }
    Datum::Object(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

fn check_not_primary(table: &TableConfig, name: &str) -> Result<(), ReqlError> {
    if name == table.primary_key {
        return Err(ReqlError::logic(format!(
            "Index name conflict: `{name}` is the name of the primary key."
        )));
    }
    Ok(())
}

/// The indexes a status or wait names (all when none are named), in the
/// order named.
async fn selected(
    context: &Context,
    table: &TableConfig,
    args: &[Term],
) -> Result<Vec<IndexConfig>, ReqlError> {
    let all = context.engine.indexes_of(table.id);
    if args.len() == 1 {
        return Ok(all);
    }
    let mut chosen = Vec::new();
    for position in 1..args.len() {
        let name = context.string_argument(args, position).await?;
        match all.iter().find(|index| index.name == name) {
            Some(index) => chosen.push(index.clone()),
            None => {
                return Err(ReqlError::op_failed(format!(
                    "Index `{name}` was not found on table `{}.{}`.",
                    context.database_name_of(table),
                    table.name
                )))
            }
        }
    }
    Ok(chosen)
}

pub async fn evaluate(
    context: &Context,
    term_type: u64,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    let engine = &context.engine;
    match term_type {
        kind::INDEX_CREATE => {
            arity(args, 2, 3)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Config, &table)?;
            let name = context.string_argument(args, 1).await?;
            check_not_primary(&table, &name)?;
            super::admin::check_name("Index", &name)
                .map_err(|error| error.within(Frame::Position(1)))?;
            let function = match args.get(2) {
                None => field_function(&name),
                Some(
                    term @ Term::Call {
                        term_type: kind::FUNC,
                        ..
                    },
                ) => term.clone(),
                Some(_) => match context.argument(args, 2).await? {
                    // The `function` of `index_status`: a stored definition.
                    Value::Datum(Datum::Binary(bytes)) => {
                        let wire = String::from_utf8(bytes).map_err(|_| ReqlError::logic("Binary blob passed to index create could not be interpreted as a reql_index_function_t."))?;
                        let json: Json = serde_json::from_str(&wire)
                            .map_err(|_| ReqlError::logic("Binary blob passed to index create could not be interpreted as a reql_index_function_t."))?;
                        Term::parse(&json)?
                    }
                    Value::Function(function) if function.captured.is_empty() => function_term(
                        function.parameters.first().copied().unwrap_or(1),
                        function.body,
                    ),
                    Value::Datum(datum) => function_term(1, Term::Datum(datum)),
                    other => return Err(other.wrong_type("FUNCTION").within(Frame::Position(2))),
                },
            };
            if !is_index_safe(&function) {
                return Err(ReqlError::logic("Could not prove function deterministic.  Index functions must be deterministic."));
            }
            let multi = matches!(
                context.optional_datum(optargs, "multi").await?,
                Some(Datum::Bool(true))
            );
            let geo = matches!(
                context.optional_datum(optargs, "geo").await?,
                Some(Datum::Bool(true))
            );
            let wire = serde_json::to_string(&to_wire(&function)?).expect("JSON serializes");
            // Compile it now: a function that does not compile fails here,
            // not on every later write.
            compile_function(&wire, context)?;
            engine.create_index(&table, &name, wire, multi, geo).await?;
            Ok(Value::Datum(object([("created", Datum::Number(1.0))])))
        }
        kind::INDEX_DROP => {
            arity(args, 2, 2)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Config, &table)?;
            let name = context.string_argument(args, 1).await?;
            engine.drop_index(&table, &name).await?;
            Ok(Value::Datum(object([("dropped", Datum::Number(1.0))])))
        }
        kind::INDEX_LIST => {
            arity(args, 1, 1)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Read, &table)?;
            Ok(Value::Datum(Datum::Array(
                engine
                    .indexes_of(table.id)
                    .into_iter()
                    .map(|index| Datum::String(index.name))
                    .collect(),
            )))
        }
        kind::INDEX_RENAME => {
            arity(args, 3, 3)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Config, &table)?;
            let old_name = context.string_argument(args, 1).await?;
            let new_name = context.string_argument(args, 2).await?;
            let overwrite = match context.optional_datum(optargs, "overwrite").await? {
                None => false,
                Some(Datum::Bool(flag)) => flag,
                Some(other) => {
                    return Err(other
                        .wrong_type("BOOL")
                        .within(Frame::Optional("overwrite".into())))
                }
            };
            check_not_primary(&table, &old_name)?;
            check_not_primary(&table, &new_name)?;
            super::admin::check_name("Index", &new_name)
                .map_err(|error| error.within(Frame::Position(2)))?;
            let renamed = engine
                .rename_index(&table, &old_name, &new_name, overwrite)
                .await?;
            Ok(Value::Datum(object([(
                "renamed",
                Datum::Number(if renamed { 1.0 } else { 0.0 }),
            )])))
        }
        kind::INDEX_STATUS => {
            arity(args, 1, usize::MAX)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Read, &table)?;
            let indexes = selected(context, &table, args).await?;
            Ok(Value::Datum(Datum::Array(
                indexes
                    .iter()
                    .map(|index| status_document(context, index))
                    .collect(),
            )))
        }
        kind::INDEX_WAIT => {
            arity(args, 1, usize::MAX)?;
            let table = context.table_argument(args, 0).await?;
            context.require_on_table(Permission::Read, &table)?;
            loop {
                let indexes = selected(context, &table, args).await?;
                if indexes.iter().all(|index| index.ready) {
                    return Ok(Value::Datum(Datum::Array(
                        indexes
                            .iter()
                            .map(|index| status_document(context, index))
                            .collect(),
                    )));
                }
                photondb_runtime::network::sleep(WAIT_POLL).await;
            }
        }
        _ => unreachable!("index::evaluate is called for index terms only"),
    }
}
