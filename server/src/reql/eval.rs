//! Evaluating a term tree against the engine.
//!
//! Evaluation runs on the connection's shard; storage calls go to the
//! shards owning the keys through the engine handle.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use photondb_datum::{key, Datum, Object};
use photondb_runtime::Engine;
use photondb_storage::catalog::{DatabaseConfig, TableConfig};
use photondb_storage::Durability;

use super::error::{ErrorClass, Frame, ReqlError};
use super::function::{Callable, Function};
use super::stream::{Operation, Stream};
use super::term::Term;
use super::term_type as kind;
use super::{admin, write};

/// RethinkDB's default `array_limit`.
pub const DEFAULT_ARRAY_LIMIT: usize = 100_000;

/// What a term evaluates to.
#[derive(Clone, Debug)]
pub enum Value {
    Datum(Datum),
    Database(DatabaseConfig),
    Table(TableConfig),
    /// `table.get(key)`: the row (or null), and where it lives.
    SingleSelection {
        table: TableConfig,
        row: Option<Datum>,
    },
    Stream(Stream),
    /// A table of the `rethinkdb` system database, by name.
    SystemTable(String),
    /// `r.db('rethinkdb').table(t).get(key)`.
    SystemSelection {
        table: String,
        row: Option<Datum>,
    },
    Function(Function),
    /// The result of `group`: groups in order, each with its rows (or, after
    /// a reduction, its value). `stream` is true until something reduced it.
    Grouped {
        groups: Vec<(Datum, Datum)>,
        stream: bool,
    },
    /// `r.minval` / `r.maxval`: bounds for `between`, nothing else.
    MinValue,
    MaxValue,
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Datum(datum) => datum.type_name(),
            Value::Database(_) => "DATABASE",
            Value::Table(_) | Value::SystemTable(_) => "TABLE",
            Value::SingleSelection { .. } | Value::SystemSelection { .. } => "SELECTION<OBJECT>",
            Value::Stream(stream) if stream.is_table_slice() => "TABLE_SLICE",
            Value::Stream(stream) if stream.selected_table().is_some() => "SELECTION<STREAM>",
            Value::Stream(_) => "STREAM",
            Value::Function(_) => "FUNCTION",
            Value::Grouped { stream: true, .. } => "GROUPED_STREAM",
            Value::Grouped { stream: false, .. } => "GROUPED_DATA",
            Value::MinValue => "MINVAL",
            Value::MaxValue => "MAXVAL",
        }
    }
}

/// Types that exist only above datums. When one of them was expected and a
/// datum came, RethinkDB names the datum `DATUM` and prints it.
const NON_DATUM_TYPES: &[&str] = &[
    "TABLE",
    "TABLE_SLICE",
    "SELECTION",
    "DATABASE",
    "FUNCTION",
    "SEQUENCE",
    "STREAM",
    "GROUPED_DATA",
    "GROUPED_STREAM",
];

/// RethinkDB's "Expected type X but found Y" error, worded as RethinkDB
/// words it: a datum type ends the sentence (`found NUMBER.`), anything
/// else is followed by a colon and the value (`found TABLE:\n…`).
pub trait TypeMismatch {
    fn wrong_type(&self, expected: &str) -> ReqlError;
}

impl TypeMismatch for Datum {
    fn wrong_type(&self, expected: &str) -> ReqlError {
        if NON_DATUM_TYPES.contains(&expected) {
            return ReqlError::logic(format!(
                "Expected type {expected} but found DATUM:\n{}",
                pretty(self)
            ));
        }
        ReqlError::logic(format!(
            "Expected type {expected} but found {}.",
            self.type_name()
        ))
    }
}

impl TypeMismatch for Value {
    fn wrong_type(&self, expected: &str) -> ReqlError {
        let (kind, shown) = match self {
            Value::Datum(datum) => return datum.wrong_type(expected),
            Value::Database(database) => ("DATABASE", format!("r.db(\"{}\")", database.name)),
            Value::Table(table) => ("TABLE", format!("r.table(\"{}\")", table.name)),
            Value::SystemTable(name) => ("TABLE", format!("r.db(\"rethinkdb\").table(\"{name}\")")),
            Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => {
                ("SELECTION", pretty(row.as_ref().unwrap_or(&Datum::Null)))
            }
            Value::Stream(stream) if stream.is_table_slice() => {
                ("TABLE_SLICE", "table slice".to_owned())
            }
            Value::Stream(stream) if stream.selected_table().is_some() => {
                ("SELECTION", "selection".to_owned())
            }
            Value::Stream(_) => ("SEQUENCE", "sequence".to_owned()),
            Value::Function(_) => ("FUNCTION", "function".to_owned()),
            Value::Grouped { stream: true, .. } => ("GROUPED_STREAM", "grouped stream".to_owned()),
            Value::Grouped { stream: false, .. } => ("GROUPED_DATA", "grouped data".to_owned()),
            Value::MinValue => ("DATUM", "r.minval".to_owned()),
            Value::MaxValue => ("DATUM", "r.maxval".to_owned()),
        };
        ReqlError::logic(format!(
            "Expected type {expected} but found {kind}:\n{shown}"
        ))
    }
}

/// A comparison operand: a datum, or one of the bounds beyond every datum.
enum Bound {
    Min,
    Datum(Datum),
    Max,
}

impl Bound {
    fn cmp(&self, other: &Bound) -> Ordering {
        match (self, other) {
            (Bound::Datum(a), Bound::Datum(b)) => a.cmp_reql(b),
            (Bound::Min, Bound::Min) | (Bound::Max, Bound::Max) => Ordering::Equal,
            (Bound::Min, _) | (_, Bound::Max) => Ordering::Less,
            (Bound::Max, _) | (_, Bound::Min) => Ordering::Greater,
        }
    }
}

/// Per-query settings from the global optargs, and the variables in scope.
#[derive(Clone)]
pub struct Context {
    pub engine: Engine,
    pub default_database: String,
    pub durability: Option<Durability>,
    pub array_limit: usize,
    /// Function parameters in scope, by variable number.
    pub variables: BTreeMap<u64, Datum>,
    /// What `r.row` stands for: the argument of the innermost one-argument
    /// function.
    pub implicit: Option<Datum>,
    /// Inside the handler of a `default`: the error it caught (`None` when
    /// it caught a null). `r.error()` there rethrows it.
    pub caught: Option<Option<ReqlError>>,
    /// `r.now()`: fixed for the whole query, as in RethinkDB.
    pub now: f64,
    /// Changes a feed holds unread before it drops some.
    pub changefeed_queue_size: usize,
    /// Who runs the query, whose permissions are checked; `None` for the
    /// server's own work (index builds), which may do anything.
    pub user: Option<std::sync::Arc<str>>,
}

type Evaluation<'a> = Pin<Box<dyn Future<Output = Result<Value, ReqlError>> + 'a>>;

impl Context {
    pub fn new(engine: Engine) -> Context {
        Context {
            engine,
            default_database: "test".into(),
            durability: None,
            array_limit: DEFAULT_ARRAY_LIMIT,
            variables: BTreeMap::new(),
            implicit: None,
            caught: None,
            changefeed_queue_size: super::feed::DEFAULT_QUEUE_SIZE,
            user: None,
            now: super::time::truncate_to_millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |elapsed| elapsed.as_secs_f64()),
            ),
        }
    }

    /// A context for a function body: same settings, its own variables.
    pub fn child(&self) -> Context {
        self.clone()
    }

    /// A context for a function's body: these settings, `variables` in
    /// scope instead of the caller's (which are not copied).
    pub fn with_variables(&self, variables: BTreeMap<u64, Datum>) -> Context {
        Context {
            engine: self.engine.clone(),
            default_database: self.default_database.clone(),
            durability: self.durability,
            array_limit: self.array_limit,
            variables,
            implicit: None,
            caught: self.caught.clone(),
            now: self.now,
            changefeed_queue_size: self.changefeed_queue_size,
            user: self.user.clone(),
        }
    }

    /// The datum a `VAR` or `IMPLICIT_VAR` term names, borrowed.
    fn variable(&self, term: &Term) -> Option<&Datum> {
        match term {
            Term::Call {
                term_type: kind::IMPLICIT_VAR,
                args,
                ..
            } if args.is_empty() => self.implicit.as_ref(),
            Term::Call {
                term_type: kind::VAR,
                args,
                ..
            } => match args.as_slice() {
                [Term::Datum(Datum::Number(id))] => self.variables.get(&(*id as u64)),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn eval<'a>(&'a self, term: &'a Term) -> Evaluation<'a> {
        Box::pin(async move {
            match term {
                Term::Datum(datum) => Ok(Value::Datum(datum.clone())),
                Term::Evaluated(value) => Ok((**value).clone()),
                Term::Call {
                    term_type,
                    args,
                    optargs,
                } => self.call(*term_type, args, optargs).await,
            }
        })
    }

    /// Evaluates argument `index`, recording it in the backtrace on failure.
    pub async fn argument(&self, args: &[Term], index: usize) -> Result<Value, ReqlError> {
        self.eval(&args[index])
            .await
            .map_err(|error| error.within(Frame::Position(index)))
    }

    /// A datum argument; a selection gives its row, and a table or stream
    /// is read into an array (terms over sequences accept them).
    pub async fn datum_argument(&self, args: &[Term], index: usize) -> Result<Datum, ReqlError> {
        let value = self.argument(args, index).await?;
        self.into_datum(value)
            .await
            .map_err(|error| error.within(Frame::Position(index)))
    }

    /// A datum argument where a sequence is no substitute: a table there is
    /// a type error (`r.expr(5) + tbl`, `r.branch(tbl, …)`), as in RethinkDB.
    pub async fn strict_datum_argument(
        &self,
        args: &[Term],
        index: usize,
    ) -> Result<Datum, ReqlError> {
        match self.argument(args, index).await? {
            value @ (Value::Table(_) | Value::SystemTable(_)) => {
                Err(value.wrong_type("DATUM").within(Frame::Position(index)))
            }
            value => self
                .into_datum(value)
                .await
                .map_err(|error| error.within(Frame::Position(index))),
        }
    }

    pub async fn into_datum(&self, value: Value) -> Result<Datum, ReqlError> {
        match value {
            Value::Datum(datum) => Ok(datum),
            Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => {
                Ok(row.unwrap_or(Datum::Null))
            }
            Value::Stream(stream) => stream.collect(self).await.map(Datum::Array),
            Value::SystemTable(name) => super::system::rows(self, &name).map(Datum::Array),
            Value::Table(table) => Stream::table(
                table,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            )
            .collect(self)
            .await
            .map(Datum::Array),
            Value::MinValue => Err(ReqlError::logic("Cannot convert `r.minval` to JSON.")),
            Value::MaxValue => Err(ReqlError::logic("Cannot convert `r.maxval` to JSON.")),
            other => Err(other.wrong_type("DATUM")),
        }
    }

    /// A sequence argument as a stream: tables, streams and arrays.
    pub async fn stream_argument(&self, args: &[Term], index: usize) -> Result<Stream, ReqlError> {
        let value = self.argument(args, index).await?;
        self.into_stream(value)
            .map_err(|error| error.within(Frame::Position(index)))
    }

    pub fn into_stream(&self, value: Value) -> Result<Stream, ReqlError> {
        match value {
            Value::Stream(stream) => Ok(stream),
            Value::Table(table) => Ok(Stream::table(
                table,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            )),
            Value::SystemTable(name) => Ok(Stream::system_rows(
                &name,
                super::system::rows(self, &name)?,
            )),
            Value::Datum(Datum::Array(items)) => Ok(Stream::rows(items)),
            other => Err(ReqlError::logic(format!(
                "Cannot convert {} to SEQUENCE",
                other.type_name()
            ))),
        }
    }

    /// A function argument; a datum stands for a constant function.
    pub async fn callable_argument(
        &self,
        args: &[Term],
        index: usize,
    ) -> Result<Callable, ReqlError> {
        match self.argument(args, index).await? {
            Value::Function(function) => Ok(Callable::Function(function)),
            Value::Datum(datum) => Ok(Callable::Constant(datum)),
            Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => {
                Ok(Callable::Constant(row.unwrap_or(Datum::Null)))
            }
            other => Err(other.wrong_type("FUNCTION").within(Frame::Position(index))),
        }
    }

    pub async fn string_argument(&self, args: &[Term], index: usize) -> Result<String, ReqlError> {
        match self.datum_argument(args, index).await? {
            Datum::String(text) => Ok(text),
            other => Err(other.wrong_type("STRING").within(Frame::Position(index))),
        }
    }

    pub async fn optional_datum(
        &self,
        optargs: &BTreeMap<String, Term>,
        name: &str,
    ) -> Result<Option<Datum>, ReqlError> {
        let Some(term) = optargs.get(name) else {
            return Ok(None);
        };
        match self
            .eval(term)
            .await
            .map_err(|error| error.within(Frame::Optional(name.to_owned())))?
        {
            Value::Datum(datum) => Ok(Some(datum)),
            other => Err(other
                .wrong_type("DATUM")
                .within(Frame::Optional(name.to_owned()))),
        }
    }

    pub async fn table_argument(
        &self,
        args: &[Term],
        index: usize,
    ) -> Result<TableConfig, ReqlError> {
        match self.argument(args, index).await? {
            Value::Table(table) => Ok(table),
            other => Err(other.wrong_type("TABLE").within(Frame::Position(index))),
        }
    }

    pub async fn database_argument(
        &self,
        args: &[Term],
        index: usize,
    ) -> Result<DatabaseConfig, ReqlError> {
        match self.argument(args, index).await? {
            Value::Database(database) => Ok(database),
            other => Err(other.wrong_type("DATABASE").within(Frame::Position(index))),
        }
    }

    pub fn database_named(&self, name: &str) -> Result<DatabaseConfig, ReqlError> {
        if name == super::system::DATABASE {
            return Ok(super::system::database());
        }
        self.engine
            .database(name)
            .ok_or_else(|| ReqlError::op_failed(format!("Database `{name}` does not exist.")))
    }

    async fn call(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        check_optional_arguments(term_type, optargs)?;
        // `r.args(array)` splices the array's items into the argument list.
        if args.iter().any(|arg| {
            matches!(
                arg,
                Term::Call {
                    term_type: kind::ARGS,
                    ..
                }
            )
        }) {
            let mut spliced = Vec::with_capacity(args.len());
            for (index, arg) in args.iter().enumerate() {
                match arg {
                    Term::Call {
                        term_type: kind::ARGS,
                        args: inner,
                        ..
                    } => {
                        arity(inner, 1, 1)?;
                        match self
                            .datum_argument(inner, 0)
                            .await
                            .map_err(|error| error.within(Frame::Position(index)))?
                        {
                            Datum::Array(items) => {
                                spliced.extend(items.into_iter().map(Term::Datum))
                            }
                            other => {
                                return Err(other
                                    .wrong_type("ARRAY")
                                    .within(Frame::Position(index)))
                            }
                        }
                    }
                    other => spliced.push(other.clone()),
                }
            }
            // Argument counts known only now are runtime errors, as in RethinkDB.
            return Box::pin(self.call(term_type, &spliced, optargs))
                .await
                .map_err(|error| {
                    if error.class == ErrorClass::Compile
                        && error.message.starts_with("Expected ")
                        && error.message.contains("argument")
                    {
                        ReqlError::new(ErrorClass::QueryLogic, error.message)
                    } else {
                        error
                    }
                });
        }
        // A reduction of a grouped table read runs on the partitions.
        if let Some(Term::Call {
            term_type: kind::GROUP,
            args: group_args,
            optargs: group_optargs,
        }) = args.first()
        {
            let eligible = matches!(
                term_type,
                kind::COUNT | kind::SUM | kind::AVG | kind::MIN | kind::MAX
            ) && args.len() <= 2
                && group_args.len() >= 2
                && !group_optargs.contains_key("index")
                && !matches!(group_args[0], Term::Evaluated(_));
            if eligible {
                let source = self
                    .argument(group_args, 0)
                    .await
                    .map_err(|error| error.within(Frame::Position(0)))?;
                let read = match &source {
                    Value::Table(table) => Some(Stream::table(
                        table.clone(),
                        std::ops::Bound::Unbounded,
                        std::ops::Bound::Unbounded,
                    )),
                    Value::Stream(stream) => Some(stream.clone()),
                    _ => None,
                };
                if let Some((table, start, end, filters)) =
                    read.as_ref().and_then(Stream::table_filters)
                {
                    let keys = self.group_key_arguments(group_args).await?;
                    let multi = matches!(
                        self.optional_datum(group_optargs, "multi").await?,
                        Some(Datum::Bool(true))
                    );
                    let reduction = self.reduction(term_type, args).await?;
                    let groups = super::aggregate::grouped_on_partitions(
                        self, &table, start, end, filters, keys, multi, reduction,
                    )
                    .await?;
                    return Ok(Value::Grouped {
                        groups,
                        stream: false,
                    });
                }
                // Not a plain table read: group as usual, the source evaluated once.
                let mut evaluated = group_args.clone();
                evaluated[0] = Term::Evaluated(Box::new(source));
                let mut rest = args.to_vec();
                rest[0] = Term::Call {
                    term_type: kind::GROUP,
                    args: evaluated,
                    optargs: group_optargs.clone(),
                };
                return Box::pin(self.call(term_type, &rest, optargs)).await;
            }
        }
        // Terms over grouped data run once per group.
        if APPLIES_PER_GROUP.contains(&term_type) && matches!(args.first(), Some(Term::Call { .. }))
        {
            let first = self.argument(args, 0).await?;
            let mut rest = args.to_vec();
            if let Value::Grouped { groups, .. } = first {
                let mut results = Vec::with_capacity(groups.len());
                for (group, rows) in groups {
                    if matches!(term_type, kind::SUM | kind::AVG | kind::MIN | kind::MAX) {
                        let Datum::Array(rows) = rows else {
                            return Err(rows.wrong_type("ARRAY"));
                        };
                        if let Some(value) = self.aggregate_group(term_type, &rest, rows).await? {
                            results.push((group, value));
                        }
                        continue;
                    }
                    rest[0] = Term::Evaluated(Box::new(Value::Datum(rows)));
                    let value = Box::pin(self.call(term_type, &rest, optargs)).await?;
                    // `count(value or predicate)` filters first: a group it
                    // leaves empty drops out, as in RethinkDB.
                    if term_type == kind::COUNT
                        && rest.len() == 2
                        && matches!(value, Value::Datum(Datum::Number(count)) if count == 0.0)
                    {
                        continue;
                    }
                    let value = match value {
                        Value::Datum(datum) => datum,
                        Value::SingleSelection { row, .. } => row.unwrap_or(Datum::Null),
                        Value::Stream(stream) => Datum::Array(stream.collect(self).await?),
                        other => return Err(other.wrong_type("DATUM")),
                    };
                    results.push((group, value));
                }
                return Ok(Value::Grouped {
                    groups: results,
                    stream: false,
                });
            }
            rest[0] = Term::Evaluated(Box::new(first));
            return Box::pin(self.call_term(term_type, &rest, optargs)).await;
        }
        self.call_term(term_type, args, optargs).await
    }

    async fn call_term(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        match term_type {
            kind::GROUP => self.group(args, optargs).await,
            kind::UNGROUP => {
                arity(args, 1, 1)?;
                match self.argument(args, 0).await? {
                    Value::Grouped { groups, .. } => Ok(Value::Datum(Datum::Array(
                        groups
                            .into_iter()
                            .map(|(group, reduction)| {
                                object([("group", group), ("reduction", reduction)])
                            })
                            .collect(),
                    ))),
                    other => Err(other.wrong_type("GROUPED_DATA").within(Frame::Position(0))),
                }
            }
            kind::VAR => {
                arity(args, 1, 1)?;
                let id = match &args[0] {
                    Term::Datum(Datum::Number(id)) => *id as u64,
                    _ => return Err(ReqlError::compile("Expected a variable number in VAR.")),
                };
                self.variables
                    .get(&id)
                    .cloned()
                    .map(Value::Datum)
                    .ok_or_else(|| ReqlError::compile(format!("Variable name not found.")))
            }
            kind::IMPLICIT_VAR => self
                .implicit
                .clone()
                .map(Value::Datum)
                .ok_or_else(|| ReqlError::compile("r.row is not defined in this context.")),
            kind::FUNC => Function::from_arguments(args, self).map(Value::Function),
            kind::FUNCALL => {
                arity(args, 1, usize::MAX)?;
                let function = match self.argument(args, 0).await? {
                    Value::Function(function) => function,
                    // `r.do(args…, value)`: anything but a function is the
                    // result itself (it may be a write, evaluated once).
                    other => return Ok(other),
                };
                // Each argument is evaluated once: it may be a write.
                let mut arguments = Vec::with_capacity(args.len() - 1);
                for index in 1..args.len() {
                    let value = self.argument(args, index).await?;
                    // `grouped.do(f)` applies f to each group's value.
                    if let (Value::Grouped { groups, .. }, 2) = (&value, args.len()) {
                        let mut results = Vec::with_capacity(groups.len());
                        for (group, value) in groups {
                            results.push((
                                group.clone(),
                                function.call(self, vec![value.clone()]).await?,
                            ));
                        }
                        return Ok(Value::Grouped {
                            groups: results,
                            stream: false,
                        });
                    }
                    let rest = [Term::Evaluated(Box::new(value))];
                    arguments.push(
                        self.datum_argument(&rest, 0)
                            .await
                            .map_err(|error| error.within(Frame::Position(index)))?,
                    );
                }
                function.call(self, arguments).await.map(Value::Datum)
            }
            kind::MINVAL => Ok(Value::MinValue),
            kind::MAXVAL => Ok(Value::MaxValue),
            kind::MAP => {
                // `map(sequence…, function)`: with several sequences the
                // function gets one item of each, until the shortest ends.
                arity(args, 2, usize::MAX)?;
                let last = args.len() - 1;
                let function = match self.argument(args, last).await? {
                    Value::Function(function) => function,
                    other => {
                        return Err(other.wrong_type("FUNCTION").within(Frame::Position(last)))
                    }
                };
                if !function.parameters.is_empty() && function.parameters.len() != last {
                    let plural = |count: usize, word: &str| {
                        if count == 1 {
                            format!("{count} {word}")
                        } else {
                            format!("{count} {word}s")
                        }
                    };
                    return Err(ReqlError::logic(format!(
                        "The function passed to `map` expects {}, but {} {} found.",
                        plural(function.parameters.len(), "argument"),
                        plural(last, "sequence"),
                        if last == 1 { "was" } else { "were" }
                    )));
                }
                if last == 1 {
                    let stream = self.stream_argument(args, 0).await?;
                    return self
                        .stream_result(args, stream.with(Operation::Map(function)))
                        .await;
                }
                let mut streams = Vec::with_capacity(last);
                let mut any_stream = false;
                for index in 0..last {
                    let value = self.argument(args, index).await?;
                    any_stream |= !matches!(value, Value::Datum(_));
                    streams.push(
                        self.into_stream(value)
                            .map_err(|error| error.within(Frame::Position(index)))?,
                    );
                }
                let zipped = Stream::zip(streams, function);
                if any_stream {
                    return Ok(Value::Stream(zipped));
                }
                zipped
                    .collect(self)
                    .await
                    .map(|rows| Value::Datum(Datum::Array(rows)))
            }
            kind::FILTER => {
                arity(args, 2, 2)?;
                let stream = self.stream_argument(args, 0).await?;
                let predicate = self.callable_argument(args, 1).await?;
                // `default` is evaluated only when the predicate hits a
                // missing value, and can rethrow it (`default=r.error()`).
                let default = optargs
                    .get("default")
                    .map(|term| Function::closure(term.clone(), self));
                self.stream_result(args, stream.with(Operation::Filter { predicate, default }))
                    .await
            }
            // A slice of a stream stays a lazy stream (a selection stays a
            // selection); its bounds cannot count from the end.
            kind::SLICE if self.is_stream_argument(args) => {
                arity(args, 2, 3)?;
                let stream = self.stream_argument(args, 0).await?;
                let index_at = |datum: Datum, index: usize| match datum {
                    Datum::Number(number) if number.fract() == 0.0 => Ok(number as i64),
                    Datum::Number(number) => {
                        Err(ReqlError::logic(format!("Number not an integer: {number}"))
                            .within(Frame::Position(index)))
                    }
                    other => Err(other.wrong_type("NUMBER").within(Frame::Position(index))),
                };
                let start = index_at(self.datum_argument(args, 1).await?, 1)?;
                let end = if args.len() == 3 {
                    Some(index_at(self.datum_argument(args, 2).await?, 2)?)
                } else {
                    None
                };
                let (left_open, right_closed) =
                    super::datum_terms::slice_bound_options(self, optargs).await?;
                if start < 0 {
                    return Err(ReqlError::logic(
                        "Cannot use a negative left index on a stream.",
                    ));
                }
                let from = start as usize + usize::from(left_open);
                let to = match end {
                    None => None,
                    Some(end) if end < -1 => {
                        return Err(ReqlError::logic(
                            "Cannot use a right index < -1 on a stream.",
                        ))
                    }
                    Some(-1) if !right_closed => {
                        return Err(ReqlError::logic(
                            "Cannot slice to an open right index of -1 on a stream.",
                        ))
                    }
                    Some(-1) => None,
                    Some(end) => Some(end as usize + usize::from(right_closed)),
                };
                let mut sliced = stream.with(Operation::Skip(from));
                if let Some(to) = to {
                    sliced = sliced.with(Operation::Limit(to.saturating_sub(from)));
                }
                self.stream_result(args, sliced).await
            }
            kind::LIMIT | kind::SKIP if self.is_stream_argument(args) => {
                arity(args, 2, 2)?;
                let stream = self.stream_argument(args, 0).await?;
                let count = match self.datum_argument(args, 1).await? {
                    Datum::Number(count) if count >= 0.0 && count.fract() == 0.0 => count as usize,
                    // `skip` is a slice from the left, which cannot count
                    // from a stream's end.
                    Datum::Number(count) if term_type == kind::SKIP && count < 0.0 => {
                        return Err(ReqlError::logic(
                            "Cannot use a negative left index on a stream.",
                        ));
                    }
                    Datum::Number(count) => {
                        let name = if term_type == kind::SKIP {
                            "SKIP"
                        } else {
                            "LIMIT"
                        };
                        return Err(ReqlError::logic(format!(
                            "{name} takes a non-negative argument (got {count})"
                        ))
                        .within(Frame::Position(1)));
                    }
                    other => return Err(other.wrong_type("NUMBER").within(Frame::Position(1))),
                };
                let operation = if term_type == kind::SKIP {
                    Operation::Skip(count)
                } else {
                    Operation::Limit(count)
                };
                self.stream_result(args, stream.with(operation)).await
            }
            // `has_fields` on a sequence keeps the rows that have them (a
            // selection stays a selection).
            kind::HAS_FIELDS if self.is_stream_argument(args) => {
                arity(args, 1, usize::MAX)?;
                let stream = self.stream_argument(args, 0).await?;
                const ROW: u64 = u64::MAX;
                let mut check = vec![Term::Call {
                    term_type: kind::VAR,
                    args: vec![Term::Datum(Datum::Number(ROW as f64))],
                    optargs: BTreeMap::new(),
                }];
                for index in 1..args.len() {
                    check.push(Term::Datum(self.datum_argument(args, index).await?));
                }
                let predicate = Function {
                    parameters: vec![ROW],
                    body: Term::Call {
                        term_type: kind::HAS_FIELDS,
                        args: check,
                        optargs: BTreeMap::new(),
                    },
                    captured: BTreeMap::new(),
                };
                self.stream_result(
                    args,
                    stream.with(Operation::Filter {
                        predicate: Callable::Function(predicate),
                        default: None,
                    }),
                )
                .await
            }
            kind::GET_ALL => write::get_all(self, args, optargs).await,
            kind::BETWEEN => write::between(self, args, optargs).await,
            kind::UPDATE | kind::REPLACE => {
                write::update_or_replace(self, term_type, args, optargs).await
            }
            kind::MAKE_ARRAY => {
                if args.len() > self.array_limit {
                    return Err(ReqlError::array_limit(self.array_limit));
                }
                let mut items = Vec::with_capacity(args.len());
                for index in 0..args.len() {
                    items.push(self.datum_argument(args, index).await?);
                }
                Ok(Value::Datum(Datum::Array(items)))
            }
            kind::MAKE_OBJ => {
                let mut fields = Object::new();
                for name in optargs.keys() {
                    let value = self
                        .optional_datum(optargs, name)
                        .await?
                        .expect("the key exists");
                    fields.insert(name.clone(), value);
                }
                Ok(Value::Datum(Datum::Object(fields)))
            }
            kind::DB => {
                arity(args, 1, 1)?;
                let name = self.string_argument(args, 0).await?;
                super::admin::check_name("Database", &name)
                    .map_err(|error| error.within(Frame::Position(0)))?;
                Ok(Value::Database(self.database_named(&name)?))
            }
            kind::TABLE => {
                arity(args, 1, 2)?;
                let (database, name) = if args.len() == 2 {
                    (
                        self.database_argument(args, 0).await?,
                        self.string_argument(args, 1).await?,
                    )
                } else {
                    (
                        self.database_named(&self.default_database)?,
                        self.string_argument(args, 0).await?,
                    )
                };
                super::admin::check_name("Table", &name)
                    .map_err(|error| error.within(Frame::Position(args.len() - 1)))?;
                match self.optional_datum(optargs, "read_mode").await? {
                    None => {}
                    Some(Datum::String(mode)) if matches!(mode.as_str(), "single" | "majority" | "outdated") => {}
                    Some(Datum::String(mode)) => {
                        return Err(ReqlError::logic(format!("Read mode `{mode}` unrecognized (options are \"majority\", \"single\", and \"outdated\").")))
                    }
                    Some(other) => return Err(other.wrong_type("STRING")),
                }
                if database.id == super::system::DATABASE_ID {
                    if name == super::system::DEBUG_SCRATCH {
                        // RethinkDB's scratch table: an ordinary table that
                        // lives in the system database.
                        let table = self
                            .engine
                            .internal_table(database.id, &database.name, &name)
                            .await?;
                        return Ok(Value::Table(table));
                    }
                    if !super::system::TABLES.contains(&name.as_str()) {
                        return Err(ReqlError::op_failed(format!(
                            "Table `{}.{name}` does not exist.",
                            database.name
                        )));
                    }
                    return Ok(Value::SystemTable(name));
                }
                let table = self.engine.table(&database.name, &name).ok_or_else(|| {
                    ReqlError::op_failed(format!(
                        "Table `{}.{name}` does not exist.",
                        database.name
                    ))
                })?;
                Ok(Value::Table(table))
            }
            kind::GET if matches!(args.first(), Some(Term::Call { term_type: kind::TABLE, args: table_args, .. }) if table_args.len() == 2) =>
            {
                arity(args, 2, 2)?;
                match self.argument(args, 0).await? {
                    Value::SystemTable(table) => {
                        let key = self.datum_argument(args, 1).await?;
                        let row =
                            super::system::rows(self, &table)?
                                .into_iter()
                                .find(|row| match row {
                                    Datum::Object(fields) => fields.get("id") == Some(&key),
                                    _ => false,
                                });
                        Ok(Value::SystemSelection { table, row })
                    }
                    Value::Table(table) => {
                        self.require_on_table(super::permission::Permission::Read, &table)?;
                        let key = self.datum_argument(args, 1).await?;
                        let row = write::get(&self.engine, &table, &key)
                            .await
                            .map_err(|error| error.within(Frame::Position(1)))?;
                        Ok(Value::SingleSelection { table, row })
                    }
                    other => Err(other.wrong_type("TABLE").within(Frame::Position(0))),
                }
            }
            kind::GET => {
                arity(args, 2, 2)?;
                let table = self.table_argument(args, 0).await?;
                self.require_on_table(super::permission::Permission::Read, &table)?;
                let key = self.datum_argument(args, 1).await?;
                let row = write::get(&self.engine, &table, &key)
                    .await
                    .map_err(|error| error.within(Frame::Position(1)))?;
                Ok(Value::SingleSelection { table, row })
            }
            kind::EQ | kind::NE | kind::LT | kind::LE | kind::GT | kind::GE => {
                arity(args, 1, usize::MAX)?;
                // `r.minval`/`r.maxval` compare below/above every datum.
                let mut values = Vec::with_capacity(args.len());
                for index in 0..args.len() {
                    values.push(match self.argument(args, index).await? {
                        Value::MinValue => Bound::Min,
                        Value::MaxValue => Bound::Max,
                        value => Bound::Datum(
                            self.into_datum(value)
                                .await
                                .map_err(|error| error.within(Frame::Position(index)))?,
                        ),
                    });
                }
                let result = if term_type == kind::NE {
                    !values
                        .windows(2)
                        .all(|pair| pair[0].cmp(&pair[1]) == Ordering::Equal)
                } else {
                    values
                        .windows(2)
                        .all(|pair| super::in_place::holds(term_type, pair[0].cmp(&pair[1])))
                };
                Ok(Value::Datum(Datum::Bool(result)))
            }
            kind::NOT => {
                arity(args, 1, 1)?;
                Ok(Value::Datum(Datum::Bool(!truthy(
                    &self.datum_argument(args, 0).await?,
                ))))
            }
            kind::AND | kind::OR => {
                let mut last = Datum::Bool(term_type == kind::AND);
                for index in 0..args.len() {
                    last = self.datum_argument(args, index).await?;
                    if truthy(&last) != (term_type == kind::AND) {
                        break;
                    }
                }
                Ok(Value::Datum(last))
            }
            kind::ADD | kind::SUB | kind::MUL | kind::DIV => self.arithmetic(term_type, args).await,
            // `row['field']` of a variable reads the field in place instead
            // of copying the whole row first (the common predicate shape).
            kind::GET_FIELD | kind::BRACKET
                if args.len() == 2
                    && matches!(&args[1], Term::Datum(Datum::String(_)))
                    && self.variable(&args[0]).is_some() =>
            {
                let (Some(object), Term::Datum(field)) = (self.variable(&args[0]), &args[1]) else {
                    unreachable!("checked above")
                };
                let name = if term_type == kind::BRACKET {
                    "bracket"
                } else {
                    "get_field"
                };
                get_field(object, field, name).map(Value::Datum)
            }
            kind::GET_FIELD | kind::BRACKET => {
                arity(args, 2, 2)?;
                // A field of every row of a stream read lazily (a changefeed
                // never ends, a table may be large).
                let object = match self.argument(args, 0).await? {
                    Value::Stream(stream) if stream.is_table_source() => {
                        return match self.datum_argument(args, 1).await? {
                            Datum::String(name) => {
                                Ok(Value::Stream(stream.with(Operation::Field(name))))
                            }
                            Datum::Number(_) if stream.is_feed() => {
                                Err(ReqlError::logic("Cannot use `nth` on an infinite stream."))
                            }
                            other => {
                                let rows = stream.collect(self).await?;
                                let name = if term_type == kind::BRACKET {
                                    "bracket"
                                } else {
                                    "get_field"
                                };
                                get_field(&Datum::Array(rows), &other, name).map(Value::Datum)
                            }
                        };
                    }
                    value => self
                        .into_datum(value)
                        .await
                        .map_err(|error| error.within(Frame::Position(0)))?,
                };
                let field = self.datum_argument(args, 1).await?;
                if term_type == kind::BRACKET
                    && !matches!(field, Datum::Number(_) | Datum::String(_))
                {
                    return Err(ReqlError::logic(format!(
                        "Expected NUMBER or STRING as second argument to `bracket` but found {}.",
                        field.type_name()
                    )));
                }
                let name = if term_type == kind::BRACKET {
                    "bracket"
                } else {
                    "get_field"
                };
                get_field(&object, &field, name).map(Value::Datum)
            }
            kind::TYPE_OF => {
                arity(args, 1, 1)?;
                let value = self.argument(args, 0).await?;
                Ok(Value::Datum(Datum::String(value.type_name().to_owned())))
            }
            kind::COUNT if args.len() == 2 => self.stream_query(term_type, args).await,
            kind::COUNT if args.len() > 2 => {
                Err(arity(args, 1, 2).expect_err("more than two arguments"))
            }
            kind::COUNT => {
                arity(args, 1, 1)?;
                match self.argument(args, 0).await? {
                    Value::Table(table) => {
                        self.require_on_table(super::permission::Permission::Read, &table)?;
                        Ok(Value::Datum(Datum::Number(
                            self.engine.count(table.id).await? as f64,
                        )))
                    }
                    Value::Stream(stream) => Ok(Value::Datum(Datum::Number(
                        stream.count(self).await? as f64,
                    ))),
                    Value::SystemTable(name) => Ok(Value::Datum(Datum::Number(
                        super::system::rows(self, &name)?.len() as f64,
                    ))),
                    Value::Datum(Datum::Array(items)) => {
                        Ok(Value::Datum(Datum::Number(items.len() as f64)))
                    }
                    Value::Datum(Datum::String(text)) => {
                        Ok(Value::Datum(Datum::Number(text.chars().count() as f64)))
                    }
                    Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => {
                        match row {
                            Some(Datum::Object(fields)) => {
                                Ok(Value::Datum(Datum::Number(fields.len() as f64)))
                            }
                            _ => Err(ReqlError::logic("Cannot convert NULL to SEQUENCE")),
                        }
                    }
                    // An object counts its fields.
                    Value::Datum(Datum::Object(fields)) => {
                        Ok(Value::Datum(Datum::Number(fields.len() as f64)))
                    }
                    Value::Datum(Datum::Binary(bytes)) => {
                        Ok(Value::Datum(Datum::Number(bytes.len() as f64)))
                    }
                    other => Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    ))
                    .within(Frame::Position(0))),
                }
            }
            kind::INSERT => write::insert(self, args, optargs).await,
            kind::DELETE => write::delete(self, args, optargs).await,
            kind::CONFIG | kind::STATUS | kind::WAIT | kind::INFO => {
                self.meta_term(term_type, args).await
            }
            kind::SYNC => {
                arity(args, 1, 1)?;
                self.table_argument(args, 0).await?;
                self.engine.sync().await?;
                Ok(Value::Datum(object([("synced", Datum::Number(1.0))])))
            }
            kind::RECONFIGURE | kind::REBALANCE => {
                super::reconfigure::evaluate(self, term_type, args, optargs).await
            }
            kind::DB_CREATE
            | kind::DB_DROP
            | kind::DB_LIST
            | kind::TABLE_CREATE
            | kind::TABLE_DROP
            | kind::TABLE_LIST => admin::evaluate(self, term_type, args, optargs).await,
            kind::CHANGES => super::feed::evaluate(self, args, optargs).await,
            kind::GRANT => {
                arity(args, 2, 3)?;
                use super::permission::Scope;
                let scope = if args.len() == 3 {
                    match self.argument(args, 0).await? {
                        Value::Database(database) => Scope::Database(database.id),
                        Value::Table(table) => Scope::table(&table),
                        Value::SystemTable(name) => Scope::system_table(&name),
                        other => {
                            return Err(other.wrong_type("DATABASE").within(Frame::Position(0)))
                        }
                    }
                } else {
                    Scope::Global
                };
                let first = args.len() - 2;
                let user = self.string_argument(args, first).await?;
                let asked = self.datum_argument(args, first + 1).await?;
                super::permission::grant(self, scope, &user, &asked)
                    .await
                    .map(Value::Datum)
            }
            kind::INDEX_CREATE
            | kind::INDEX_DROP
            | kind::INDEX_LIST
            | kind::INDEX_RENAME
            | kind::INDEX_STATUS
            | kind::INDEX_WAIT => super::index::evaluate(self, term_type, args, optargs).await,
            other => {
                if let Some(result) = self.sequence_term(other, args, optargs).await {
                    return result;
                }
                if let Some(result) = self.time_term(other, args, optargs).await {
                    return result;
                }
                if let Some(result) = self.datum_term(other, args, optargs).await {
                    return result;
                }
                Err(ReqlError::compile(match super::term_type::name(other) {
                    Some(name) => format!("Term `{name}` is not supported by PhotonDB yet."),
                    None => format!("Term type {other} is not supported by PhotonDB yet."),
                }))
            }
        }
    }

    async fn arithmetic(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        let mut accumulator = self.strict_datum_argument(args, 0).await?;
        for index in 1..args.len() {
            let operand = self.strict_datum_argument(args, index).await?;
            accumulator = match (term_type, accumulator, operand) {
                (kind::ADD, Datum::Number(a), Datum::Number(b)) => Datum::Number(a + b),
                (
                    kind::ADD,
                    Datum::Time {
                        epoch_seconds,
                        timezone,
                    },
                    Datum::Number(seconds),
                ) => Datum::Time {
                    epoch_seconds: super::time::truncate_to_millis(epoch_seconds + seconds),
                    timezone,
                },
                (
                    kind::SUB,
                    Datum::Time {
                        epoch_seconds,
                        timezone,
                    },
                    Datum::Number(seconds),
                ) => Datum::Time {
                    epoch_seconds: super::time::truncate_to_millis(epoch_seconds - seconds),
                    timezone,
                },
                (
                    kind::SUB,
                    Datum::Time {
                        epoch_seconds: a, ..
                    },
                    Datum::Time {
                        epoch_seconds: b, ..
                    },
                ) => Datum::Number(super::time::truncate_to_millis(a - b)),
                (kind::ADD, Datum::String(a), Datum::String(b)) => Datum::String(a + &b),
                (kind::ADD, Datum::Array(mut a), Datum::Array(b)) => {
                    a.extend(b);
                    Datum::Array(a)
                }
                (kind::SUB, Datum::Number(a), Datum::Number(b)) => Datum::Number(a - b),
                (kind::MUL, Datum::Number(a), Datum::Number(b)) => Datum::Number(a * b),
                // `[1, 2] * 3` repeats the array.
                (kind::MUL, Datum::Array(items), Datum::Number(times))
                | (kind::MUL, Datum::Number(times), Datum::Array(items)) => {
                    if times.fract() != 0.0 {
                        return Err(ReqlError::logic(format!("Number not an integer: {times}"))
                            .within(Frame::Position(index)));
                    }
                    let times = times.max(0.0) as usize;
                    if items.len().saturating_mul(times) > self.array_limit {
                        return Err(ReqlError::array_limit(self.array_limit));
                    }
                    Datum::Array(
                        items
                            .iter()
                            .cloned()
                            .cycle()
                            .take(items.len() * times)
                            .collect(),
                    )
                }
                (kind::DIV, Datum::Number(_), Datum::Number(b)) if b == 0.0 => {
                    return Err(
                        ReqlError::logic("Cannot divide by zero.").within(Frame::Position(index))
                    );
                }
                (kind::DIV, Datum::Number(a), Datum::Number(b)) => Datum::Number(a / b),
                (kind::ADD, Datum::String(_), other) => {
                    return Err(other.wrong_type("STRING").within(Frame::Position(index)));
                }
                (kind::ADD, Datum::Array(_), other) => {
                    return Err(other.wrong_type("ARRAY").within(Frame::Position(index)));
                }
                (_, Datum::Number(_), other) => {
                    return Err(other.wrong_type("NUMBER").within(Frame::Position(index)));
                }
                (_, other, _) => {
                    return Err(other
                        .wrong_type("NUMBER")
                        .within(Frame::Position(index - 1)));
                }
            };
            if let Datum::Number(value) = accumulator {
                if !value.is_finite() {
                    return Err(ReqlError::logic("Number not finite."));
                }
            }
        }
        Ok(Value::Datum(accumulator))
    }
}

impl Context {
    /// `config`, `status`, `wait` and `info`.
    async fn meta_term(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        let value = self.argument(args, 0).await?;
        let database_document =
            |database: &DatabaseConfig| super::admin::database_document(database);
        // `config()` is the row of `rethinkdb.table_config` (or `db_config`),
        // selected so that `config().update(…)` writes it.
        let value = match (term_type, value) {
            (kind::CONFIG, Value::Table(table)) => {
                let row = super::admin::table_document(
                    &table,
                    &self.database_name_of(&table),
                    &self.engine,
                );
                return Ok(Value::SystemSelection {
                    table: "table_config".into(),
                    row: Some(row),
                });
            }
            (kind::CONFIG, Value::Database(database)) => {
                return Ok(Value::SystemSelection {
                    table: "db_config".into(),
                    row: Some(database_document(&database)),
                });
            }
            (_, value) => value,
        };
        Ok(Value::Datum(match (term_type, value) {
            (kind::STATUS, Value::Table(table)) => {
                super::system::table_status_document(&table, &self.database_name_of(&table))
            }
            (kind::WAIT, Value::Table(_)) => object([("ready", Datum::Number(1.0))]),
            (kind::WAIT, Value::Database(database)) => {
                let tables = self
                    .engine
                    .catalog()
                    .tables
                    .values()
                    .filter(|table| table.database == database.id)
                    .count();
                object([("ready", Datum::Number(tables as f64))])
            }
            (kind::INFO, Value::Database(database)) => {
                let mut info = match database_document(&database) {
                    Datum::Object(fields) => fields,
                    _ => unreachable!("a database document is an object"),
                };
                info.insert("type".into(), Datum::String("DB".into()));
                Datum::Object(info)
            }
            (kind::INFO, Value::Table(table)) => {
                self.require_on_table(super::permission::Permission::Read, &table)?;
                let database = self.database_name_of(&table);
                let count = self.engine.count(table.id).await?;
                object([
                    (
                        "db",
                        object([
                            (
                                "id",
                                Datum::String(photondb_storage::catalog::uuid_string(
                                    table.database,
                                )),
                            ),
                            ("name", Datum::String(database)),
                            ("type", Datum::String("DB".into())),
                        ]),
                    ),
                    (
                        "doc_count_estimates",
                        Datum::Array(vec![Datum::Number(count as f64)]),
                    ),
                    (
                        "id",
                        Datum::String(photondb_storage::catalog::uuid_string(table.id.0)),
                    ),
                    (
                        "indexes",
                        Datum::Array(
                            self.engine
                                .indexes_of(table.id)
                                .into_iter()
                                .map(|index| Datum::String(index.name))
                                .collect(),
                        ),
                    ),
                    ("name", Datum::String(table.name.clone())),
                    ("primary_key", Datum::String(table.primary_key.clone())),
                    ("type", Datum::String("TABLE".into())),
                ])
            }
            (kind::INFO, Value::SystemTable(name)) => object([
                (
                    "db",
                    object([
                        (
                            "id",
                            Datum::String(photondb_storage::catalog::uuid_string(
                                super::system::DATABASE_ID,
                            )),
                        ),
                        ("name", Datum::String(super::system::DATABASE.into())),
                        ("type", Datum::String("DB".into())),
                    ]),
                ),
                ("id", Datum::String(super::system::table_id(&name))),
                ("indexes", Datum::Array(Vec::new())),
                ("name", Datum::String(name)),
                ("primary_key", Datum::String("id".into())),
                ("type", Datum::String("TABLE".into())),
            ]),
            (kind::INFO, Value::Datum(datum)) => super::system::datum_info(&datum),
            (_, other) => {
                let name = super::term_type::name(term_type)
                    .unwrap_or("term")
                    .to_ascii_lowercase();
                return Err(ReqlError::logic(format!(
                    "Cannot call `{name}` on a value of type {}.",
                    other.type_name()
                ))
                .within(Frame::Position(0)));
            }
        }))
    }

    /// `group`'s keys (arguments 1…): field names, values or functions.
    async fn group_key_arguments(&self, args: &[Term]) -> Result<Vec<Callable>, ReqlError> {
        let mut keys = Vec::with_capacity(args.len().saturating_sub(1));
        for index in 1..args.len() {
            keys.push(match self.argument(args, index).await? {
                Value::Function(function) => Callable::Function(function),
                Value::Datum(datum) => Callable::Constant(datum),
                other => return Err(other.wrong_type("STRING").within(Frame::Position(index))),
            });
        }
        Ok(keys)
    }

    /// The per-group reduction `count`/`sum`/`avg`/`min`/`max` asks for.
    async fn reduction(
        &self,
        term_type: u64,
        args: &[Term],
    ) -> Result<super::aggregate::Reduction, ReqlError> {
        use super::aggregate::{Reduction, Selector};
        if term_type == kind::COUNT {
            return Ok(if args.len() == 2 {
                Reduction::CountMatching(self.callable_argument(args, 1).await?)
            } else {
                Reduction::Count
            });
        }
        let selector = if args.len() == 2 {
            match self.argument(args, 1).await? {
                Value::Datum(Datum::String(field)) => Selector::Field(field),
                Value::Function(function) => Selector::Function(Callable::Function(function)),
                other => return Err(other.wrong_type("STRING").within(Frame::Position(1))),
            }
        } else {
            Selector::Row
        };
        Ok(match term_type {
            kind::SUM => Reduction::Sum(selector),
            kind::AVG => Reduction::Avg(selector),
            kind::MIN => Reduction::Min(selector),
            _ => Reduction::Max(selector),
        })
    }

    /// Whether argument 0 is, by its term type, a table or a stream.
    pub(super) fn is_stream_argument(&self, args: &[Term]) -> bool {
        match args.first() {
            Some(Term::Evaluated(value)) => matches!(
                **value,
                Value::Stream(_) | Value::Table(_) | Value::SystemTable(_)
            ),
            Some(Term::Call { term_type, .. }) => matches!(
                *term_type,
                kind::TABLE
                    | kind::FILTER
                    | kind::MAP
                    | kind::LIMIT
                    | kind::SKIP
                    | kind::GET_ALL
                    | kind::BETWEEN
                    | kind::ORDER_BY
                    | kind::UNION
                    | kind::CONCAT_MAP
                    | kind::DISTINCT
                    | kind::PLUCK
                    | kind::WITHOUT
                    | kind::MERGE
                    | kind::RANGE
                    | kind::EQ_JOIN
                    | kind::INNER_JOIN
                    | kind::OUTER_JOIN
                    | kind::ZIP
                    | kind::FOLD
            ),
            _ => false,
        }
    }

    /// The name of a table's database, for messages.
    pub fn database_name_of(&self, table: &TableConfig) -> String {
        self.engine
            .catalog()
            .databases
            .into_values()
            .find(|database| database.id == table.database)
            .map_or_else(|| "?".to_owned(), |database| database.name)
    }

    /// Operations on arrays give arrays; on tables and streams, streams.
    async fn stream_result(&self, args: &[Term], stream: Stream) -> Result<Value, ReqlError> {
        if stream.is_table_source() {
            return Ok(Value::Stream(stream));
        }
        let _ = args;
        stream
            .collect(self)
            .await
            .map(|rows| Value::Datum(Datum::Array(rows)))
    }
}

/// Terms that, given grouped data, apply to each group.
const APPLIES_PER_GROUP: &[u64] = &[
    kind::COUNT,
    kind::SUM,
    kind::AVG,
    kind::MIN,
    kind::MAX,
    kind::REDUCE,
    kind::MAP,
    kind::FILTER,
    kind::PLUCK,
    kind::WITHOUT,
    kind::MERGE,
    kind::LIMIT,
    kind::SKIP,
    kind::NTH,
    kind::ORDER_BY,
    kind::DISTINCT,
    kind::CONCAT_MAP,
    kind::CONTAINS,
    kind::IS_EMPTY,
    kind::BRACKET,
    kind::GET_FIELD,
    kind::SLICE,
    kind::UNION,
    kind::HAS_FIELDS,
    kind::COERCE_TO,
];

impl Context {
    /// `group(seq, field_or_function…, {multi})`.
    async fn group(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        if args.len() == 1 && !optargs.contains_key("index") {
            return Err(ReqlError::logic("Cannot group by nothing."));
        }
        let mut index_key = None;
        let mut multi = matches!(
            self.optional_datum(optargs, "multi").await?,
            Some(Datum::Bool(true))
        );
        if let Some(name) = super::index::option(self, optargs)
            .await
            .map_err(|error| error.within(Frame::Optional("index".into())))?
        {
            let table = match args.first() {
                Some(Term::Call {
                    term_type: kind::TABLE,
                    ..
                }) => self.table_argument(args, 0).await?,
                _ => return Err(ReqlError::logic("Expected type TABLE but found SEQUENCE.")),
            };
            // Rows group under their keys in the index (each of them for a
            // multi index).
            index_key = Some(match super::index::named(self, &table, &name)? {
                None => Callable::Constant(Datum::String(table.primary_key.clone())),
                Some(index) => {
                    multi |= index.multi;
                    Callable::Function(super::index::compile_function(&index.function, self)?)
                }
            });
        }
        let stream = self.stream_argument(args, 0).await?;
        let is_stream = stream.is_table_source();
        let rows = stream.collect(self).await?;
        let mut keys = self.group_key_arguments(args).await?;
        keys.extend(index_key);
        let mut groups: std::collections::BTreeMap<Datum, Vec<Datum>> =
            std::collections::BTreeMap::new();
        for row in rows {
            for group in group_keys(self, &keys, multi, &row).await? {
                groups.entry(group).or_default().push(row.clone());
            }
        }
        Ok(Value::Grouped {
            groups: groups
                .into_iter()
                .map(|(group, rows)| (group, Datum::Array(rows)))
                .collect(),
            stream: is_stream,
        })
    }
}

/// The groups a row belongs to under `group(keys…, multi)`: one, or with
/// `multi` one per element of array keys (every combination when there are
/// several keys; an empty array counts as null), each at most once.
pub async fn group_keys(
    context: &Context,
    keys: &[Callable],
    multi: bool,
    row: &Datum,
) -> Result<Vec<Datum>, ReqlError> {
    let mut values = Vec::with_capacity(keys.len());
    for key in keys {
        let value = match key {
            Callable::Constant(Datum::String(field)) => match row {
                Datum::Object(fields) => fields.get(field).cloned().unwrap_or(Datum::Null),
                _ => Datum::Null,
            },
            Callable::Constant(other) => other.clone(),
            function => match function.call(context, row.clone()).await {
                Ok(value) => value,
                Err(error) if error.class == ErrorClass::NonExistence => Datum::Null,
                Err(error) => return Err(error),
            },
        };
        values.push(value);
    }
    Ok(combine_group_keys(values, multi))
}

/// The groups a row with key `values` (one per key) falls in: the value,
/// or an array of them for several keys; with `multi`, one group per
/// combination of array elements.
pub fn combine_group_keys(mut values: Vec<Datum>, multi: bool) -> Vec<Datum> {
    if !multi {
        return vec![if values.len() == 1 {
            values.pop().expect("one key")
        } else {
            Datum::Array(values)
        }];
    }
    let mut combinations: Vec<Vec<Datum>> = vec![Vec::new()];
    for value in values {
        let choices = match value {
            Datum::Array(items) if items.is_empty() => vec![Datum::Null],
            Datum::Array(items) => items,
            other => vec![other],
        };
        combinations = combinations
            .into_iter()
            .flat_map(|prefix| {
                choices.iter().map(move |choice| {
                    let mut combination = prefix.clone();
                    combination.push(choice.clone());
                    combination
                })
            })
            .collect();
    }
    let mut groups = Vec::with_capacity(combinations.len());
    let mut joined = std::collections::BTreeSet::new();
    for mut combination in combinations {
        let group = if combination.len() == 1 {
            combination.pop().expect("one key")
        } else {
            Datum::Array(combination)
        };
        if joined.insert(group.clone()) {
            groups.push(group);
        }
    }
    groups
}

/// The optional arguments each term accepts (for the terms evaluated here);
/// any other name is a compile error, as in RethinkDB.
fn check_optional_arguments(
    term_type: u64,
    optargs: &BTreeMap<String, Term>,
) -> Result<(), ReqlError> {
    if optargs.is_empty() || term_type == kind::MAKE_OBJ {
        return Ok(());
    }
    if matches!(
        term_type,
        kind::INSERT | kind::UPDATE | kind::REPLACE | kind::DELETE
    ) && optargs.contains_key("return_vals")
    {
        return Err(ReqlError::logic(
            "Error: encountered obsolete optarg `return_vals`.  Use `return_changes` instead.",
        ));
    }
    let allowed: &[&str] = match term_type {
        kind::TABLE => &["read_mode", "identifier_format"],
        kind::TABLE_CREATE => &[
            "primary_key",
            "shards",
            "replicas",
            "primary_replica_tag",
            "nonvoting_replica_tags",
            "durability",
        ],
        kind::INSERT => &[
            "conflict",
            "durability",
            "return_changes",
            "ignore_write_hook",
        ],
        kind::UPDATE | kind::REPLACE => &[
            "durability",
            "return_changes",
            "non_atomic",
            "ignore_write_hook",
        ],
        kind::DELETE => &["durability", "return_changes", "ignore_write_hook"],
        kind::FILTER => &["default"],
        kind::BETWEEN => &["index", "left_bound", "right_bound"],
        kind::GET_ALL | kind::ORDER_BY | kind::DISTINCT => &["index"],
        kind::EQ_JOIN => &["index", "ordered"],
        kind::GROUP => &["index", "multi"],
        kind::FOLD => &["emit", "final_emit"],
        kind::FUNC
        | kind::MAKE_ARRAY
        | kind::DB
        | kind::GET
        | kind::COUNT
        | kind::MAP
        | kind::DB_CREATE
        | kind::DB_DROP
        | kind::DB_LIST
        | kind::TABLE_DROP
        | kind::TABLE_LIST
        | kind::SYNC => &[],
        _ => return Ok(()),
    };
    match optargs
        .keys()
        .find(|name| !allowed.contains(&name.as_str()))
    {
        Some(name) => Err(ReqlError::compile(format!(
            "Unrecognized optional argument `{name}`."
        ))),
        None => Ok(()),
    }
}

pub fn arity(args: &[Term], minimum: usize, maximum: usize) -> Result<(), ReqlError> {
    if args.len() >= minimum && args.len() <= maximum {
        return Ok(());
    }
    let plural = |count: usize| if count == 1 { "argument" } else { "arguments" };
    let expected = if minimum == maximum {
        format!("{minimum} {}", plural(minimum))
    } else if maximum == usize::MAX {
        format!("{minimum} or more arguments")
    } else {
        format!("between {minimum} and {maximum} arguments")
    };
    Err(ReqlError::new(
        ErrorClass::Compile,
        format!("Expected {expected} but found {}.", args.len()),
    ))
}

pub fn truthy(datum: &Datum) -> bool {
    !matches!(datum, Datum::Null | Datum::Bool(false))
}

pub fn object<const N: usize>(fields: [(&str, Datum); N]) -> Datum {
    Datum::Object(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

fn get_field(object: &Datum, field: &Datum, term_name: &str) -> Result<Datum, ReqlError> {
    match (object, field) {
        (Datum::Object(fields), Datum::String(name)) => {
            fields.get(name).cloned().ok_or_else(|| {
                ReqlError::new(
                    ErrorClass::NonExistence,
                    format!("No attribute `{name}` in object:\n{}", pretty(object)),
                )
            })
        }
        (Datum::Array(items), Datum::Number(index)) if index.fract() == 0.0 => {
            let position = if *index < 0.0 {
                items.len() as f64 + index
            } else {
                *index
            };
            items
                .get(position as usize)
                .filter(|_| position >= 0.0)
                .cloned()
                .ok_or_else(|| {
                    ReqlError::new(
                        ErrorClass::NonExistence,
                        format!("Index out of bounds: {index}"),
                    )
                })
        }
        (Datum::Object(_), other) => Err(other.wrong_type("STRING")),
        // A field of an array: that field of each object that has it.
        (Datum::Array(items), Datum::String(name)) => {
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Datum::Object(fields) => values.extend(fields.get(name).cloned()),
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot perform {term_name} on a non-object non-sequence `{}`.",
                            pretty(other)
                        )))
                    }
                }
            }
            Ok(Datum::Array(values))
        }
        // A field of null does not exist (so `default` and `filter` treat it
        // as missing); of anything else, it is a type error.
        (Datum::Null, _) => Err(ReqlError::new(
            ErrorClass::NonExistence,
            format!("Cannot perform {term_name} on a non-object non-sequence `null`."),
        )),
        (other, _) => Err(ReqlError::logic(format!(
            "Cannot perform {term_name} on a non-object non-sequence `{}`.",
            pretty(other)
        ))),
    }
}

/// RethinkDB's pretty-printing of datums in error messages: tab-indented,
/// pseudo-types shown as the objects they are on the wire.
pub fn pretty(datum: &Datum) -> String {
    fn write(value: &serde_json::Value, indent: usize, out: &mut String) {
        let tabs = |count: usize| "\t".repeat(count);
        match value {
            serde_json::Value::Object(fields) if !fields.is_empty() => {
                out.push_str("{\n");
                for (index, (name, value)) in fields.iter().enumerate() {
                    out.push_str(&tabs(indent + 1));
                    out.push_str(&serde_json::to_string(name).expect("strings serialize"));
                    out.push_str(":\t");
                    write(value, indent + 1, out);
                    if index + 1 < fields.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&tabs(indent));
                out.push('}');
            }
            serde_json::Value::Array(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (index, item) in items.iter().enumerate() {
                    out.push_str(&tabs(indent + 1));
                    write(item, indent + 1, out);
                    if index + 1 < items.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                out.push_str(&tabs(indent));
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&photondb_datum::json::to_json(datum), 0, &mut out);
    out
}

fn contains_null_character(value: &Datum) -> bool {
    match value {
        Datum::String(text) => text.contains('\0'),
        Datum::Array(items) => items.iter().any(contains_null_character),
        _ => false,
    }
}

/// The encoded storage key of a primary-key value, checked as RethinkDB does.
pub fn primary_key_bytes(value: &Datum) -> Result<Vec<u8>, ReqlError> {
    match value {
        Datum::Null | Datum::Object(_) => Err(ReqlError::logic(format!(
            "Primary keys must be either a number, string, bool, pseudotype or array (got type {}):\n{}",
            value.type_name(),
            pretty(value)
        ))),
        _ => {
            if contains_null_character(value) {
                return Err(ReqlError::logic(format!("Primary keys may not contain the null character: {}", pretty(value))));
            }
            let encoded = key::encode(value);
            if encoded.len() > 127 + 3 {
                return Err(ReqlError::logic(format!("Primary key too long (max 127 characters): {}", pretty(value))));
            }
            Ok(encoded)
        }
    }
}
