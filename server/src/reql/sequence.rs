//! Terms over sequences and documents: `pluck`, `without`, `merge`,
//! `literal`, `order_by`, `distinct`, `union`, `concat_map`, `reduce`,
//! `sum`, `avg`, `min`, `max`, `count` with a predicate, `for_each`, `nth`,
//! `is_empty` and `contains` on streams, and the array set operations.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use photondb_datum::{Datum, Object};

use super::error::{ErrorClass, Frame, ReqlError};
use super::eval::TypeMismatch;
use super::eval::{arity, pretty, truthy, Context, Value};
use super::function::Callable;
use super::stream::{Operation, Stream, Transform};
use super::term::Term;
use super::term_type as kind;

const LITERAL_TYPE: &str = "LITERAL";

/// `r.literal(value)` inside a merge patch: replace instead of merging
/// (no value: remove the field).
pub fn literal(value: Option<Datum>) -> Datum {
    let mut fields = Object::new();
    fields.insert("$reql_type$".into(), Datum::String(LITERAL_TYPE.into()));
    if let Some(value) = value {
        fields.insert("value".into(), value);
    }
    Datum::Object(fields)
}

/// RethinkDB's error for an `r.literal` anywhere but inside the object given
/// to `merge` or `update`.
pub fn stray_literal() -> ReqlError {
    ReqlError::logic("Stray literal keyword found: literal is only legal inside of the object passed to merge or update and cannot nest inside other literals.")
}

/// Whether a datum holds an `r.literal` anywhere.
pub fn contains_literal(datum: &Datum) -> bool {
    match datum {
        Datum::Object(fields) => {
            as_literal(datum).is_some() || fields.values().any(contains_literal)
        }
        Datum::Array(items) => items.iter().any(contains_literal),
        _ => false,
    }
}

pub fn as_literal(datum: &Datum) -> Option<Option<&Datum>> {
    match datum {
        Datum::Object(fields)
            if fields.get("$reql_type$") == Some(&Datum::String(LITERAL_TYPE.into())) =>
        {
            Some(fields.get("value"))
        }
        _ => None,
    }
}

/// Deep merge with `r.literal`.
pub fn merge(base: Datum, patch: Datum) -> Datum {
    if let Some(value) = as_literal(&patch) {
        return value.cloned().unwrap_or(Datum::Null);
    }
    match (base, patch) {
        (Datum::Object(mut base), Datum::Object(patch)) => {
            for (key, value) in patch {
                match as_literal(&value) {
                    Some(None) => {
                        base.remove(&key);
                    }
                    Some(Some(value)) => {
                        base.insert(key, value.clone());
                    }
                    None => {
                        let merged = match base.remove(&key) {
                            Some(existing) => merge(existing, value),
                            None => strip_literals(value),
                        };
                        base.insert(key, merged);
                    }
                }
            }
            Datum::Object(base)
        }
        (_, patch) => strip_literals(patch),
    }
}

fn strip_literals(datum: Datum) -> Datum {
    match datum {
        Datum::Object(fields) => {
            if let Some(value) = as_literal(&Datum::Object(fields.clone())) {
                return value.cloned().unwrap_or(Datum::Null);
            }
            Datum::Object(
                fields
                    .into_iter()
                    .map(|(key, value)| (key, strip_literals(value)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// Whether a row has every field the selectors name (nested selectors
/// look inside), none of them null: `has_fields` and `with_fields`.
pub fn has_selectors(row: &Datum, selectors: &[Datum]) -> Result<bool, ReqlError> {
    let Datum::Object(fields) = row else {
        return Err(ReqlError::logic(format!(
            "Cannot perform has_fields on a non-object non-sequence `{}`.",
            pretty(row)
        )));
    };
    for selector in selectors {
        let present = match selector {
            Datum::String(name) => fields.get(name).is_some_and(|value| *value != Datum::Null),
            Datum::Array(nested) => has_selectors(row, nested)?,
            Datum::Object(paths) => {
                let mut all = true;
                for (name, sub) in paths {
                    all &= match fields.get(name) {
                        None | Some(Datum::Null) => false,
                        Some(_) if *sub == Datum::Bool(true) => true,
                        Some(value @ Datum::Object(_)) => {
                            has_selectors(value, std::slice::from_ref(sub))?
                        }
                        Some(_) => false,
                    };
                }
                all
            }
            other => {
                return Err(ReqlError::logic(format!(
                    "Invalid path argument `{}`.",
                    pretty(other)
                )))
            }
        };
        if !present {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn pluck(value: &Datum, selectors: &[Datum]) -> Result<Datum, ReqlError> {
    match value {
        Datum::Array(items) => items
            .iter()
            .map(|item| pluck(item, selectors))
            .collect::<Result<_, _>>()
            .map(Datum::Array),
        Datum::Object(fields) => {
            let mut out = Object::new();
            pluck_into(fields, selectors, &mut out)?;
            Ok(Datum::Object(out))
        }
        other => Err(ReqlError::logic(format!(
            "Cannot perform pluck on a non-object non-sequence `{}`.",
            pretty(other)
        ))),
    }
}

fn pluck_into(fields: &Object, selectors: &[Datum], out: &mut Object) -> Result<(), ReqlError> {
    for selector in selectors {
        match selector {
            Datum::String(name) => {
                if let Some(value) = fields.get(name) {
                    out.insert(name.clone(), value.clone());
                }
            }
            Datum::Array(nested) => pluck_into(fields, nested, out)?,
            Datum::Object(paths) => {
                for (name, sub) in paths {
                    let Some(value) = fields.get(name) else {
                        continue;
                    };
                    if *sub == Datum::Bool(true) {
                        out.insert(name.clone(), value.clone());
                        continue;
                    }
                    let selected = match value {
                        Datum::Object(_) | Datum::Array(_) => {
                            pluck(value, std::slice::from_ref(sub))?
                        }
                        _ => continue,
                    };
                    let merged = match out.remove(name) {
                        Some(existing) => merge(existing, selected),
                        None => selected,
                    };
                    out.insert(name.clone(), merged);
                }
            }
            other => {
                return Err(ReqlError::logic(format!(
                    "Invalid path argument `{}`.",
                    pretty(other)
                )))
            }
        }
    }
    Ok(())
}

pub fn without(value: &Datum, selectors: &[Datum]) -> Result<Datum, ReqlError> {
    match value {
        Datum::Array(items) => items
            .iter()
            .map(|item| without(item, selectors))
            .collect::<Result<_, _>>()
            .map(Datum::Array),
        Datum::Object(fields) => {
            let mut out = fields.clone();
            without_from(&mut out, selectors)?;
            Ok(Datum::Object(out))
        }
        other => Err(ReqlError::logic(format!(
            "Cannot perform without on a non-object non-sequence `{}`.",
            pretty(other)
        ))),
    }
}

fn without_from(fields: &mut Object, selectors: &[Datum]) -> Result<(), ReqlError> {
    for selector in selectors {
        match selector {
            Datum::String(name) => {
                fields.remove(name);
            }
            Datum::Array(nested) => without_from(fields, nested)?,
            Datum::Object(paths) => {
                for (name, sub) in paths {
                    if *sub == Datum::Bool(true) {
                        fields.remove(name);
                    } else if let Some(value) = fields.get(name).cloned() {
                        if matches!(value, Datum::Object(_) | Datum::Array(_)) {
                            fields
                                .insert(name.clone(), without(&value, std::slice::from_ref(sub))?);
                        }
                    }
                }
            }
            other => {
                return Err(ReqlError::logic(format!(
                    "Invalid path argument `{}`.",
                    pretty(other)
                )))
            }
        }
    }
    Ok(())
}

/// Sums or combines the write results of `for_each`.
fn combine_write_results(total: &mut Object, result: Object) {
    for (key, value) in result {
        match (total.get_mut(&key), value) {
            (Some(Datum::Number(sum)), Datum::Number(value)) => *sum += value,
            (Some(Datum::Array(items)), Datum::Array(more)) => items.extend(more),
            (Some(_), _) if key == "first_error" => {}
            (_, value) => {
                total.insert(key, value);
            }
        }
    }
}

fn whole_number(datum: &Datum) -> Result<i64, ReqlError> {
    match datum {
        Datum::Number(number) if number.fract() == 0.0 => Ok(*number as i64),
        Datum::Number(number) => Err(ReqlError::logic(format!("Number not an integer: {number}"))),
        other => Err(other.wrong_type("NUMBER")),
    }
}

enum SortKey {
    Field(String),
    Function(Callable),
}

fn compare_sort_values(
    keys: &[(bool, SortKey)],
    a: &[Option<Datum>],
    b: &[Option<Datum>],
) -> Ordering {
    for ((descending, _), (x, y)) in keys.iter().zip(a.iter().zip(b.iter())) {
        let ordering = match (x, y) {
            (Some(x), Some(y)) => x.cmp_reql(y),
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
        };
        let ordering = if *descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

impl Context {
    /// Evaluates the sequence terms; `None` for any other term.
    pub async fn sequence_term(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Option<Result<Value, ReqlError>> {
        Some(match term_type {
            kind::LITERAL => self.literal_term(args).await,
            kind::PLUCK | kind::WITHOUT => self.pluck_or_without(term_type, args).await,
            kind::WITH_FIELDS => self.with_fields(args).await,
            kind::MERGE => self.merge_term(args).await,
            kind::ORDER_BY => self.order_by(args, optargs).await,
            kind::DISTINCT => self.distinct(args, optargs).await,
            kind::UNION => self.union(args, optargs).await,
            kind::CONCAT_MAP => self.concat_map(args).await,
            kind::REDUCE => self.reduce(args).await,
            kind::SUM | kind::AVG | kind::MIN | kind::MAX => {
                self.aggregate(term_type, args, optargs).await
            }
            kind::FOR_EACH => self.for_each(args).await,
            kind::SAMPLE => self.sample(args).await,
            kind::ZIP => self.zip(args).await,
            kind::EQ_JOIN => self.eq_join(args, optargs).await,
            kind::FOLD => self.fold(args, optargs).await,
            kind::INNER_JOIN | kind::OUTER_JOIN => self.nested_join(term_type, args).await,
            kind::SET_INSERT
            | kind::SET_UNION
            | kind::SET_INTERSECTION
            | kind::SET_DIFFERENCE
            | kind::DIFFERENCE => self.set_operation(term_type, args).await,
            kind::INSERT_AT | kind::DELETE_AT | kind::CHANGE_AT | kind::SPLICE_AT => {
                self.positional(term_type, args).await
            }
            kind::NTH | kind::IS_EMPTY if self.is_stream_argument(args) => {
                self.stream_query(term_type, args).await
            }
            kind::CONTAINS | kind::OFFSETS_OF => self.stream_query(term_type, args).await,
            _ => return None,
        })
    }

    async fn literal_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 0, 1)?;
        let value = if args.is_empty() {
            None
        } else {
            Some(self.datum_argument(args, 0).await?)
        };
        if value.as_ref().is_some_and(contains_literal) {
            return Err(stray_literal());
        }
        Ok(Value::Datum(literal(value)))
    }

    /// `with_fields(selectors…)`: the rows that have every field, plucked.
    async fn with_fields(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        let mut selectors = Vec::with_capacity(args.len() - 1);
        for index in 1..args.len() {
            selectors.push(self.datum_argument(args, index).await?);
        }
        let is_stream = self.is_stream_argument(args);
        let stream = match self.argument(args, 0).await? {
            Value::Datum(Datum::Array(items)) => Stream::rows(items),
            Value::Datum(other) => {
                return Err(ReqlError::logic(format!(
                    "Cannot perform has_fields on a non-object non-sequence `{}`.",
                    pretty(&other)
                )))
            }
            value => self
                .into_stream(value)
                .map_err(|error| error.within(Frame::Position(0)))?,
        };
        let stream = stream.with(Operation::WithFields(selectors));
        if is_stream {
            return Ok(Value::Stream(stream));
        }
        stream
            .collect(self)
            .await
            .map(|rows| Value::Datum(Datum::Array(rows)))
    }

    async fn pluck_or_without(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        let mut selectors = Vec::with_capacity(args.len() - 1);
        for index in 1..args.len() {
            selectors.push(self.datum_argument(args, index).await?);
        }
        let transform = if term_type == kind::PLUCK {
            Transform::Pluck(selectors)
        } else {
            Transform::Without(selectors)
        };
        match self.argument(args, 0).await? {
            Value::Datum(datum) => transform.apply(self, datum).await.map(Value::Datum),
            Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => transform
                .apply(self, row.unwrap_or(Datum::Null))
                .await
                .map(Value::Datum),
            Value::Table(table) => Ok(Value::Stream(
                Stream::table(table, Bound::Unbounded, Bound::Unbounded)
                    .with(Operation::Transform(transform)),
            )),
            Value::Stream(stream) => {
                Ok(Value::Stream(stream.with(Operation::Transform(transform))))
            }
            other => Err(ReqlError::logic(format!(
                "Cannot perform {} on a non-object non-sequence `{}`.",
                if term_type == kind::PLUCK {
                    "pluck"
                } else {
                    "without"
                },
                other.type_name()
            ))),
        }
    }

    async fn merge_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        let mut patches = Vec::with_capacity(args.len() - 1);
        for index in 1..args.len() {
            patches.push(self.callable_argument(args, index).await?);
        }
        let transform = Transform::Merge(patches);
        match self.argument(args, 0).await? {
            Value::Datum(datum) => transform.apply(self, datum).await.map(Value::Datum),
            Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => transform
                .apply(self, row.unwrap_or(Datum::Null))
                .await
                .map(Value::Datum),
            Value::Table(table) => Ok(Value::Stream(
                Stream::table(table, Bound::Unbounded, Bound::Unbounded)
                    .with(Operation::Transform(transform)),
            )),
            Value::Stream(stream) => {
                Ok(Value::Stream(stream.with(Operation::Transform(transform))))
            }
            other => Err(other.wrong_type("OBJECT")),
        }
    }

    /// Rows of a sequence argument, materialised.
    async fn rows(&self, args: &[Term], index: usize) -> Result<(Vec<Datum>, bool), ReqlError> {
        let value = self.argument(args, index).await?;
        self.rows_of(value, index).await
    }

    /// The rows of argument `index`, already evaluated to `value`.
    async fn rows_of(&self, value: Value, index: usize) -> Result<(Vec<Datum>, bool), ReqlError> {
        match value {
            Value::Datum(Datum::Array(items)) => Ok((items, false)),
            Value::Table(table) => Ok((
                Stream::table(table, Bound::Unbounded, Bound::Unbounded)
                    .collect(self)
                    .await?,
                true,
            )),
            Value::Stream(stream) => Ok((stream.collect(self).await?, true)),
            Value::SystemTable(name) => Ok((super::system::rows(self, &name)?, true)),
            other => Err(ReqlError::logic(format!(
                "Cannot convert {} to SEQUENCE",
                other.type_name()
            ))
            .within(Frame::Position(index))),
        }
    }

    fn sequence_value(rows: Vec<Datum>, is_stream: bool) -> Value {
        if is_stream {
            Value::Stream(Stream::rows(rows))
        } else {
            Value::Datum(Datum::Array(rows))
        }
    }

    async fn order_by(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 1, usize::MAX)?;
        if let Some(index_term) = optargs.get("index") {
            let (descending, index_term) = match index_term {
                Term::Call {
                    term_type: kind::DESC,
                    args: inner,
                    ..
                } if inner.len() == 1 => (true, &inner[0]),
                Term::Call {
                    term_type: kind::ASC,
                    args: inner,
                    ..
                } if inner.len() == 1 => (false, &inner[0]),
                other => (false, other),
            };
            let mut stream = match self.argument(args, 0).await? {
                Value::Table(table) => Stream::table(table, Bound::Unbounded, Bound::Unbounded),
                Value::Stream(stream) if stream.is_table_slice() => stream,
                _ => {
                    return Err(ReqlError::logic(
                        "Indexed order_by can only be performed on a TABLE or TABLE_SLICE. Make sure order_by comes before any transformations (such as map) or filters.",
                    )
                    .within(Frame::Position(0)))
                }
            };
            let name = match self.eval(index_term).await? {
                Value::Datum(Datum::String(index)) => index,
                other => return Err(other.wrong_type("STRING")),
            };
            let read = stream.table_read_mut().expect("a table slice not started");
            let index = super::index::named(self, &read.table, &name)?;
            let sliced_by = read.index.as_ref().map(|index| index.config.name.clone());
            let whole_table = !read.sliced;
            match (&index, &sliced_by) {
                (None, None) => {}
                (Some(index), Some(sliced)) if index.name == *sliced => {}
                (Some(index), None) if whole_table => {
                    read.index = Some(super::stream::IndexRead::whole(index.clone()));
                }
                _ => {
                    let sliced = sliced_by.unwrap_or_else(|| read.table.primary_key.clone());
                    return Err(ReqlError::logic(format!(
                        "Cannot order by index `{name}` after calling BETWEEN on index `{sliced}`."
                    )));
                }
            }
            read.descending = descending;
            read.ordered = true;
            if args.len() == 1 {
                return Ok(Value::Stream(stream));
            }
            // The index orders first; the other orderings break its ties.
            let index_key = match &index {
                None => SortKey::Field(read.table.primary_key.clone()),
                Some(index) => SortKey::Function(Callable::Function(
                    super::index::compile_function(&index.function, self)?,
                )),
            };
            let rows = stream.collect(self).await?;
            return self
                .sort_after(rows, vec![(descending, index_key)], args, true)
                .await;
        }
        let (rows, is_stream) = self.rows(args, 0).await?;
        if args.len() == 1 {
            return Err(ReqlError::logic("Must specify something to order by."));
        }
        self.sort(rows, args, is_stream).await
    }

    async fn sort(
        &self,
        rows: Vec<Datum>,
        args: &[Term],
        is_stream: bool,
    ) -> Result<Value, ReqlError> {
        self.sort_after(rows, Vec::new(), args, is_stream).await
    }

    /// Sorts by `leading` orderings, then by those `args` give.
    async fn sort_after(
        &self,
        rows: Vec<Datum>,
        leading: Vec<(bool, SortKey)>,
        args: &[Term],
        is_stream: bool,
    ) -> Result<Value, ReqlError> {
        let mut keys = leading;
        for index in 1..args.len() {
            keys.push(
                self.sort_key(&args[index])
                    .await
                    .map_err(|error| error.within(Frame::Position(index)))?,
            );
        }
        let mut keyed = Vec::with_capacity(rows.len());
        for row in rows {
            keyed.push((self.sort_values(&keys, &row).await?, row));
        }
        keyed.sort_by(|(a, _), (b, _)| compare_sort_values(&keys, a, b));
        Ok(Self::sequence_value(
            keyed.into_iter().map(|(_, row)| row).collect(),
            is_stream,
        ))
    }

    /// One ordering of `order_by` (or `union`'s `interleave`): a field name
    /// or a function, wrapped in `r.asc`/`r.desc` or not.
    async fn sort_key(&self, term: &Term) -> Result<(bool, SortKey), ReqlError> {
        let (descending, term) = match term {
            Term::Call {
                term_type: kind::DESC,
                args: inner,
                ..
            } if inner.len() == 1 => (true, &inner[0]),
            Term::Call {
                term_type: kind::ASC,
                args: inner,
                ..
            } if inner.len() == 1 => (false, &inner[0]),
            other => (false, other),
        };
        let key = match self.eval(term).await? {
            Value::Datum(Datum::String(field)) => SortKey::Field(field),
            Value::Function(function) => SortKey::Function(Callable::Function(function)),
            other => return Err(other.wrong_type("STRING")),
        };
        Ok((descending, key))
    }

    /// A row's values under each ordering. A key that does not exist (a
    /// missing field, a non-existence error in the function) is `None`: it
    /// sorts before every value ascending and after every value
    /// descending, as in RethinkDB; the row stays.
    async fn sort_values(
        &self,
        keys: &[(bool, SortKey)],
        row: &Datum,
    ) -> Result<Vec<Option<Datum>>, ReqlError> {
        let mut values = Vec::with_capacity(keys.len());
        for (_, key) in keys {
            values.push(match key {
                SortKey::Field(field) => match row {
                    Datum::Object(fields) => fields.get(field).cloned(),
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot perform get_field on a non-object non-sequence `{}`.",
                            pretty(other)
                        )))
                    }
                },
                SortKey::Function(function) => match function.call(self, row.clone()).await {
                    Ok(value) => Some(value),
                    Err(error) if error.class == ErrorClass::NonExistence => None,
                    Err(error) => return Err(error),
                },
            });
        }
        Ok(values)
    }

    async fn distinct(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        if let Some(name) = super::index::option(self, optargs)
            .await
            .map_err(|error| error.within(Frame::Optional("index".into())))?
        {
            return self.distinct_index_values(args, &name).await;
        }
        let (mut rows, is_stream) = self.rows(args, 0).await?;
        rows.sort_by(|a, b| a.cmp_reql(b));
        rows.dedup_by(|a, b| a.cmp_reql(b) == Ordering::Equal);
        Ok(Self::sequence_value(rows, is_stream))
    }

    /// `table.distinct(index=…)`: the distinct keys of an index, in index
    /// order (for the primary key, every key).
    /// Of a table slice (`between(…).distinct(index=…)`), the distinct keys
    /// of its rows, in index order.
    async fn distinct_index_values(&self, args: &[Term], name: &str) -> Result<Value, ReqlError> {
        let (table, slice) = match self.argument(args, 0).await? {
            Value::Table(table) => (table, None),
            Value::Stream(stream) if stream.selected_table().is_some() => {
                let table = stream.selected_table().cloned().expect("checked");
                (table, Some(stream))
            }
            other => return Err(other.wrong_type("TABLE").within(Frame::Position(0))),
        };
        let Some(index) = super::index::named(self, &table, name)? else {
            let key = table.primary_key.clone();
            let Some(slice) = slice else {
                let stream = Stream::table(table, Bound::Unbounded, Bound::Unbounded)
                    .with(Operation::Field(key));
                return Ok(Value::Stream(stream));
            };
            // Primary keys are distinct already; a slice of another index
            // comes in that index's order.
            let mut keys = slice.with(Operation::Field(key)).collect(self).await?;
            keys.sort_by(|a, b| a.cmp_reql(b));
            return Ok(Value::Stream(Stream::rows(keys)));
        };
        let function = super::index::compile_function(&index.function, self)?;
        let mut stream = slice.unwrap_or_else(|| {
            Stream::index_range(
                table,
                super::stream::IndexRead::whole(index.clone()),
                Bound::Unbounded,
                Bound::Unbounded,
            )
        });
        // Index order is key order: equal keys are neighbours, except rows
        // of a multi index, whose other keys come elsewhere.
        let mut keys: BTreeMap<Vec<u8>, Datum> = BTreeMap::new();
        while let Some(row) = stream.next(self).await? {
            let value = match function.call(self, vec![row]).await {
                Ok(value) => value,
                Err(_) => continue,
            };
            let values = match value {
                Datum::Array(items) if index.multi => items,
                value => vec![value],
            };
            for value in values {
                if let [key] = super::index::secondary_keys(value.clone(), false).as_slice() {
                    keys.entry(key.clone()).or_insert(value);
                }
            }
            if keys.len() > self.array_limit {
                return Err(ReqlError::array_limit(self.array_limit));
            }
        }
        Ok(Value::Stream(Stream::rows(keys.into_values().collect())))
    }

    async fn union(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        let mut values = Vec::with_capacity(args.len());
        for index in 0..args.len() {
            values.push(self.argument(args, index).await?);
        }
        // Changefeeds: one feed of every change of each.
        if values
            .iter()
            .any(|value| matches!(value, Value::Stream(stream) if stream.is_feed()))
        {
            let mut feeds = Vec::with_capacity(values.len());
            for (index, value) in values.into_iter().enumerate() {
                match value {
                    Value::Stream(stream) if stream.is_feed() => feeds.push(stream),
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot union a changefeed with {}.",
                            other.type_name()
                        ))
                        .within(Frame::Position(index)))
                    }
                }
            }
            return Ok(Value::Stream(Stream::feed_union(feeds)));
        }
        let mut sequences = Vec::with_capacity(args.len());
        let mut any_stream = false;
        let mut total = 0;
        for (index, value) in values.into_iter().enumerate() {
            let (rows, is_stream) = self.rows_of(value, index).await?;
            any_stream |= is_stream;
            total += rows.len();
            if total > self.array_limit && !any_stream {
                return Err(ReqlError::array_limit(self.array_limit));
            }
            sequences.push(rows);
        }
        // `interleave`: true or absent (any order; here, one after the
        // other), false (one after the other), or an ordering the inputs
        // follow, which the result then follows too (a merge).
        let keys =
            match optargs.get("interleave") {
                None => Vec::new(),
                Some(term) => match term {
                    Term::Call {
                        term_type: kind::MAKE_ARRAY,
                        args: orderings,
                        ..
                    } => {
                        let mut keys = Vec::with_capacity(orderings.len());
                        for ordering in orderings {
                            keys.push(self.sort_key(ordering).await.map_err(|error| {
                                error.within(Frame::Optional("interleave".into()))
                            })?);
                        }
                        keys
                    }
                    single => match self
                        .eval(single)
                        .await
                        .map_err(|error| error.within(Frame::Optional("interleave".into())))?
                    {
                        Value::Datum(Datum::Bool(_)) => Vec::new(),
                        _ => vec![self
                            .sort_key(single)
                            .await
                            .map_err(|error| error.within(Frame::Optional("interleave".into())))?],
                    },
                },
            };
        if keys.is_empty() {
            return Ok(Self::sequence_value(
                sequences.into_iter().flatten().collect(),
                any_stream,
            ));
        }
        let mut keyed = Vec::with_capacity(sequences.len());
        for rows in sequences {
            let mut entries: Vec<(Vec<Option<Datum>>, Datum)> = Vec::with_capacity(rows.len());
            for row in rows {
                let values = self.sort_values(&keys, &row).await?;
                if let Some((previous, _)) = entries.last() {
                    if compare_sort_values(&keys, previous, &values) == Ordering::Greater {
                        return Err(ReqlError::logic(
                            "The streams given as arguments are not ordered by given ordering.",
                        ));
                    }
                }
                entries.push((values, row));
            }
            keyed.push(std::collections::VecDeque::from(entries));
        }
        // Merge: the smallest head next; on a tie, the earlier input.
        let mut merged = Vec::with_capacity(total);
        loop {
            let mut best: Option<usize> = None;
            for (index, entries) in keyed.iter().enumerate() {
                let Some((values, _)) = entries.front() else {
                    continue;
                };
                if best.is_none_or(|best| {
                    compare_sort_values(&keys, values, &keyed[best].front().expect("a head").0)
                        == Ordering::Less
                }) {
                    best = Some(index);
                }
            }
            let Some(best) = best else { break };
            merged.push(keyed[best].pop_front().expect("a head").1);
        }
        Ok(Self::sequence_value(merged, any_stream))
    }

    async fn concat_map(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let (rows, is_stream) = self.rows(args, 0).await?;
        let function = self.callable_argument(args, 1).await?;
        let mut out = Vec::new();
        let mut budget = super::cooperate::Budget::default();
        for row in rows {
            budget.tick().await;
            match function.call(self, row).await? {
                Datum::Array(items) => out.extend(items),
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    )))
                }
            }
        }
        Ok(Self::sequence_value(out, is_stream))
    }

    async fn reduce(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let (rows, _) = self.rows(args, 0).await?;
        let function = match self.argument(args, 1).await? {
            Value::Function(function) => function,
            other => return Err(other.wrong_type("FUNCTION").within(Frame::Position(1))),
        };
        let mut rows = rows.into_iter();
        let Some(mut accumulator) = rows.next() else {
            return Err(ReqlError::new(
                ErrorClass::NonExistence,
                "Cannot reduce over an empty stream.",
            ));
        };
        let mut budget = super::cooperate::Budget::default();
        for row in rows {
            budget.tick().await;
            accumulator = function.call(self, vec![accumulator, row]).await?;
        }
        Ok(Value::Datum(accumulator))
    }

    async fn aggregate(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 1, 2)?;
        // `min()`/`max()` of a table without a field: by primary key, as
        // RethinkDB reads them from the primary index.
        let input = self.argument(args, 0).await?;
        if let (1, kind::MIN | kind::MAX, Value::Table(table)) = (args.len(), term_type, &input) {
            let table = table.clone();
            let index = match super::index::option(self, optargs)
                .await
                .map_err(|error| error.within(Frame::Optional("index".into())))?
            {
                Some(name) => super::index::named(self, &table, &name)?,
                None => None,
            };
            let direction = if term_type == kind::MIN {
                photondb_storage::Direction::Ascending
            } else {
                photondb_storage::Direction::Descending
            };
            let row = match index {
                // The first or last row in a secondary index's order.
                Some(index) => {
                    let read = super::stream::IndexRead::whole(index);
                    let mut stream =
                        Stream::index_range(table, read, Bound::Unbounded, Bound::Unbounded)
                            .with(Operation::Limit(1));
                    if let Some(read) = stream.table_read_mut_any() {
                        read.descending = term_type == kind::MAX;
                    }
                    stream.next(self).await?
                }
                None => {
                    let range = photondb_storage::ScanRange {
                        start: Bound::Unbounded,
                        end: Bound::Unbounded,
                        direction,
                        limit: Some(1),
                    };
                    match self.engine.scan(table.id, range).await?.into_iter().next() {
                        Some((_, bytes)) => Some(
                            photondb_datum::document::decode(&bytes)
                                .map_err(ReqlError::unreadable)?,
                        ),
                        None => None,
                    }
                }
            };
            return match row {
                Some(row) => Ok(Value::Datum(row)),
                None => {
                    let name = if term_type == kind::MIN { "min" } else { "max" };
                    Err(ReqlError::new(ErrorClass::NonExistence, format!("Cannot take the {name} of an empty stream.  (If you passed `{name}` a field name, it may be that no elements of the stream had that field.)")))
                }
            };
        }
        let rows = self
            .into_stream(input)
            .map_err(|error| error.within(Frame::Position(0)))?
            .collect(self)
            .await?;
        let selected = self.aggregate_select(args, rows).await?;
        self.aggregate_selected(term_type, selected)
    }

    /// `group(…).sum('field')` and kin, one group at a time: a group in which
    /// no row has the field (or the function found nothing) drops out of
    /// the result, as in RethinkDB, instead of failing or summing to 0.
    pub(super) async fn aggregate_group(
        &self,
        term_type: u64,
        args: &[Term],
        rows: Vec<Datum>,
    ) -> Result<Option<Datum>, ReqlError> {
        let selected = self.aggregate_select(args, rows).await?;
        if args.len() == 2 && selected.is_empty() {
            return Ok(None);
        }
        match self.aggregate_selected(term_type, selected)? {
            Value::Datum(datum) => Ok(Some(datum)),
            other => Err(other.wrong_type("DATUM")),
        }
    }

    /// Each row with the value the aggregation looks at (the row itself,
    /// its field, or the function's result); rows without one are left out.
    async fn aggregate_select(
        &self,
        args: &[Term],
        rows: Vec<Datum>,
    ) -> Result<Vec<(Datum, Datum)>, ReqlError> {
        let key = if args.len() == 2 {
            match self.argument(args, 1).await? {
                Value::Datum(Datum::String(field)) => Some(SortKey::Field(field)),
                Value::Function(function) => Some(SortKey::Function(Callable::Function(function))),
                other => return Err(other.wrong_type("STRING").within(Frame::Position(1))),
            }
        } else {
            None
        };
        let mut selected: Vec<(Datum, Datum)> = Vec::with_capacity(rows.len());
        for row in rows {
            let value = match &key {
                None => row.clone(),
                Some(SortKey::Field(field)) => match &row {
                    Datum::Object(fields) => match fields.get(field) {
                        Some(value) => value.clone(),
                        None => continue,
                    },
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot perform get_field on a non-object non-sequence `{}`.",
                            pretty(other)
                        )))
                    }
                },
                Some(SortKey::Function(function)) => match function.call(self, row.clone()).await {
                    Ok(value) => value,
                    Err(error) if error.class == ErrorClass::NonExistence => continue,
                    Err(error) => return Err(error),
                },
            };
            selected.push((value, row));
        }
        Ok(selected)
    }

    fn aggregate_selected(
        &self,
        term_type: u64,
        selected: Vec<(Datum, Datum)>,
    ) -> Result<Value, ReqlError> {
        let name = match term_type {
            kind::SUM => "sum",
            kind::AVG => "avg",
            kind::MIN => "min",
            _ => "max",
        };
        match term_type {
            kind::SUM | kind::AVG => {
                let mut total = 0.0;
                for (value, _) in &selected {
                    match value {
                        Datum::Number(number) => total += number,
                        other => return Err(other.wrong_type("NUMBER")),
                    }
                }
                if term_type == kind::SUM {
                    return Ok(Value::Datum(Datum::Number(total)));
                }
                if selected.is_empty() {
                    return Err(ReqlError::new(ErrorClass::NonExistence, "Cannot take the average of an empty stream.  (If you passed `avg` a field name, it may be that no elements of the stream had that field.)"));
                }
                Ok(Value::Datum(Datum::Number(total / selected.len() as f64)))
            }
            _ => {
                let best = selected.into_iter().reduce(|best, candidate| {
                    let ordering = candidate.0.cmp_reql(&best.0);
                    let better = if term_type == kind::MIN {
                        ordering == Ordering::Less
                    } else {
                        ordering == Ordering::Greater
                    };
                    if better {
                        candidate
                    } else {
                        best
                    }
                });
                match best {
                    Some((_, row)) => Ok(Value::Datum(row)),
                    None => Err(ReqlError::new(ErrorClass::NonExistence, format!("Cannot take the {name} of an empty stream.  (If you passed `{name}` a field name, it may be that no elements of the stream had that field.)"))),
                }
            }
        }
    }

    async fn sample(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let (mut rows, is_stream) = self.rows(args, 0).await?;
        let count = match self.datum_argument(args, 1).await? {
            Datum::Number(count) if count < 0.0 => {
                return Err(ReqlError::logic(format!(
                    "Number of items to sample must be non-negative, got `{count}`."
                ))
                .within(Frame::Position(0)))
            }
            Datum::Number(count) if count.fract() == 0.0 => count as usize,
            other => return Err(other.wrong_type("NUMBER").within(Frame::Position(1))),
        };
        // Partial Fisher-Yates; xorshift seeded from the kernel.
        let take = count.min(rows.len());
        let seed: [u8; 8] = crate::protocol::scram::random_bytes(8)
            .try_into()
            .expect("8 bytes");
        let mut state = u64::from_le_bytes(seed) | 1;
        for index in 0..take {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pick = index + (state % (rows.len() - index) as u64) as usize;
            rows.swap(index, pick);
        }
        rows.truncate(take);
        Ok(Self::sequence_value(rows, is_stream))
    }

    /// `left.eq_join(field_or_function, right_table)`: the right row whose
    /// primary key equals the left row's value, as `{left, right}`.
    async fn eq_join(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 3, 3)?;
        let (rows, is_stream) = self.rows(args, 0).await?;
        let key = match self.argument(args, 1).await? {
            Value::Datum(Datum::String(field)) => SortKey::Field(field),
            Value::Function(function) => SortKey::Function(Callable::Function(function)),
            other => return Err(other.wrong_type("STRING").within(Frame::Position(1))),
        };
        let right = self.table_argument(args, 2).await?;
        self.require_on_table(super::permission::Permission::Read, &right)?;
        let index = match super::index::option(self, optargs)
            .await
            .map_err(|error| error.within(Frame::Optional("index".into())))?
        {
            Some(name) => super::index::named(self, &right, &name)?,
            None => None,
        };
        let mut joined = Vec::new();
        let mut budget = super::cooperate::Budget::default();
        for row in rows {
            budget.tick().await;
            let value = match &key {
                SortKey::Field(field) => match &row {
                    Datum::Object(fields) => match fields.get(field) {
                        Some(value) => value.clone(),
                        None => continue,
                    },
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot perform get_field on a non-object non-sequence `{}`.",
                            pretty(other)
                        )))
                    }
                },
                SortKey::Function(function) => match function.call(self, row.clone()).await {
                    Ok(value) => value,
                    Err(error) if error.class == ErrorClass::NonExistence => continue,
                    Err(error) => return Err(error),
                },
            };
            if matches!(value, Datum::Null | Datum::Object(_)) {
                continue;
            }
            match &index {
                None => {
                    if let Some(right_row) = super::write::get(&self.engine, &right, &value).await?
                    {
                        joined.push(super::eval::object([("left", row), ("right", right_row)]));
                    }
                }
                Some(index) => {
                    let matches = Stream::index_keys(right.clone(), index.clone(), vec![value])
                        .collect(self)
                        .await?;
                    for right_row in matches {
                        joined.push(super::eval::object([
                            ("left", row.clone()),
                            ("right", right_row),
                        ]));
                    }
                }
            }
        }
        Ok(Self::sequence_value(joined, is_stream))
    }

    /// `inner_join` and `outer_join`: every pair the predicate accepts;
    /// the outer join keeps left rows with no match as `{left}`.
    async fn nested_join(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 3, 3)?;
        let (left_rows, left_stream) = self.rows(args, 0).await?;
        let (right_rows, right_stream) = self.rows(args, 1).await?;
        let predicate = match self.argument(args, 2).await? {
            Value::Function(function) => function,
            other => return Err(other.wrong_type("FUNCTION").within(Frame::Position(2))),
        };
        let mut joined = Vec::new();
        let mut budget = super::cooperate::Budget::default();
        for left in left_rows {
            let mut matched = false;
            for right in &right_rows {
                budget.tick().await;
                if truthy(
                    &predicate
                        .call(self, vec![left.clone(), right.clone()])
                        .await?,
                ) {
                    matched = true;
                    joined.push(super::eval::object([
                        ("left", left.clone()),
                        ("right", right.clone()),
                    ]));
                }
            }
            if !matched && term_type == kind::OUTER_JOIN {
                joined.push(super::eval::object([("left", left)]));
            }
        }
        Ok(Self::sequence_value(joined, left_stream || right_stream))
    }

    /// `fold(base, combine, {emit, final_emit})`: without `emit`, the final
    /// accumulator (through `final_emit`); with it, a stream of what `emit`
    /// returns for each row.
    async fn fold(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 3, 3)?;
        let stream = self.stream_argument(args, 0).await?;
        let base = self.datum_argument(args, 1).await?;
        let function_of = |value: Value, index: Frame| match value {
            Value::Function(function) => Ok(function),
            other => Err(other.wrong_type("FUNCTION").within(index)),
        };
        let combine = function_of(self.argument(args, 2).await?, Frame::Position(2))?;
        let optional_function = |name: &'static str| async move {
            match optargs.get(name) {
                None => Ok(None),
                Some(term) => {
                    function_of(self.eval(term).await?, Frame::Optional(name.into())).map(Some)
                }
            }
        };
        let emit = optional_function("emit").await?;
        let final_emit = optional_function("final_emit").await?;
        if let Some(emit) = emit {
            let folded = Stream::fold(super::stream::FoldSource {
                inner: stream,
                accumulator: base,
                combine,
                emit,
                final_emit,
            });
            return Ok(Value::Stream(folded));
        }
        stream.check_finite()?;
        let mut stream = stream;
        let mut accumulator = base;
        while let Some(row) = stream.next(self).await? {
            accumulator = combine.call(self, vec![accumulator, row]).await?;
        }
        match final_emit {
            Some(final_emit) => final_emit
                .call(self, vec![accumulator])
                .await
                .map(Value::Datum),
            None => Ok(Value::Datum(accumulator)),
        }
    }

    async fn zip(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        let (rows, is_stream) = self.rows(args, 0).await?;
        let mut zipped = Vec::with_capacity(rows.len());
        for row in rows {
            let Datum::Object(mut fields) = row else {
                return Err(ReqlError::logic(
                    "ZIP can only be called on the result of a join.",
                ));
            };
            let (Some(left), right) = (fields.remove("left"), fields.remove("right")) else {
                return Err(ReqlError::logic(
                    "ZIP can only be called on the result of a join.",
                ));
            };
            zipped.push(match right {
                Some(right) => merge(left, right),
                None => left,
            });
        }
        Ok(Self::sequence_value(zipped, is_stream))
    }

    async fn for_each(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let (rows, _) = self.rows(args, 0).await?;
        let function = self.callable_argument(args, 1).await?;
        let mut total = Object::new();
        const EXPECTS_WRITES: &str = "FOR_EACH expects one or more basic write queries.";
        for row in rows {
            let result = match &function {
                Callable::Function(function) => match function.call_value(self, vec![row]).await? {
                    (Value::Datum(datum), _) => datum,
                    _ => return Err(ReqlError::logic(EXPECTS_WRITES)),
                },
                constant => constant.call(self, row).await?,
            };
            match result {
                Datum::Object(result) => combine_write_results(&mut total, result),
                Datum::Array(results) => {
                    for result in results {
                        match result {
                            Datum::Object(result) => combine_write_results(&mut total, result),
                            other => {
                                return Err(ReqlError::logic(format!(
                                    "{EXPECTS_WRITES}  Expected type OBJECT but found {}.",
                                    other.type_name()
                                )))
                            }
                        }
                    }
                }
                other => {
                    return Err(ReqlError::logic(format!(
                        "{EXPECTS_WRITES}  Expected type ARRAY but found {}.",
                        other.type_name()
                    )))
                }
            }
        }
        Ok(Value::Datum(Datum::Object(total)))
    }

    pub(super) async fn stream_query(
        &self,
        term_type: u64,
        args: &[Term],
    ) -> Result<Value, ReqlError> {
        let mut stream = self.stream_argument(args, 0).await?;
        match term_type {
            kind::IS_EMPTY => {
                arity(args, 1, 1)?;
                Ok(Value::Datum(Datum::Bool(
                    stream.next(self).await?.is_none(),
                )))
            }
            kind::NTH => {
                arity(args, 2, 2)?;
                let index = match self.datum_argument(args, 1).await? {
                    Datum::Number(index) if index.fract() == 0.0 => index as i64,
                    other => return Err(other.wrong_type("NUMBER").within(Frame::Position(1))),
                };
                if index < 0 {
                    let rows = stream.collect(self).await?;
                    let position = rows.len() as i64 + index;
                    return rows
                        .get(position as usize)
                        .filter(|_| position >= 0)
                        .cloned()
                        .map(Value::Datum)
                        .ok_or_else(|| {
                            ReqlError::new(
                                ErrorClass::NonExistence,
                                format!("Index out of bounds: {index}"),
                            )
                        });
                }
                for _ in 0..index {
                    if stream.next(self).await?.is_none() {
                        return Err(ReqlError::new(
                            ErrorClass::NonExistence,
                            format!("Index out of bounds: {index}"),
                        ));
                    }
                }
                stream.next(self).await?.map(Value::Datum).ok_or_else(|| {
                    ReqlError::new(
                        ErrorClass::NonExistence,
                        format!("Index out of bounds: {index}"),
                    )
                })
            }
            kind::OFFSETS_OF => {
                arity(args, 2, 2)?;
                let wanted = self.callable_argument(args, 1).await?;
                let mut offsets = Vec::new();
                let mut position = 0u64;
                while let Some(row) = stream.next(self).await? {
                    let hit = match &wanted {
                        Callable::Constant(value) => *value == row,
                        function => truthy(&function.call(self, row).await?),
                    };
                    if hit {
                        offsets.push(Datum::Number(position as f64));
                    }
                    position += 1;
                }
                Ok(Value::Datum(Datum::Array(offsets)))
            }
            kind::CONTAINS => {
                arity(args, 1, usize::MAX)?;
                let mut wanted = Vec::new();
                for index in 1..args.len() {
                    wanted.push(self.callable_argument(args, index).await?);
                }
                // Each row satisfies at most one of the values or predicates
                // (so `contains(2, 2)` needs two 2s), as in RethinkDB.
                let mut found = vec![false; wanted.len()];
                while let Some(row) = stream.next(self).await? {
                    for (slot, predicate) in wanted.iter().enumerate() {
                        if found[slot] {
                            continue;
                        }
                        let hit = match predicate {
                            Callable::Constant(value) => *value == row,
                            function => truthy(&function.call(self, row.clone()).await?),
                        };
                        if hit {
                            found[slot] = true;
                            break;
                        }
                    }
                    if found.iter().all(|&hit| hit) {
                        break;
                    }
                }
                Ok(Value::Datum(Datum::Bool(found.iter().all(|&hit| hit))))
            }
            _ => {
                // COUNT with an argument: equal values, or a predicate.
                arity(args, 1, 2)?;
                if args.len() == 1 {
                    return Ok(Value::Datum(Datum::Number(
                        stream.count(self).await? as f64,
                    )));
                }
                let predicate = self.callable_argument(args, 1).await?;
                let mut count = 0u64;
                while let Some(row) = stream.next(self).await? {
                    // A function counts like `filter`: an object it returns
                    // is a template, a missing field counts as no.
                    let hit = match &predicate {
                        Callable::Constant(value) => *value == row,
                        function => match function.accepts(self, &row).await {
                            Ok(hit) => hit,
                            Err(error) if error.class == ErrorClass::NonExistence => false,
                            Err(error) => return Err(error),
                        },
                    };
                    count += u64::from(hit);
                }
                Ok(Value::Datum(Datum::Number(count as f64)))
            }
        }
    }

    async fn set_operation(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let items = match self.datum_argument(args, 0).await? {
            Datum::Array(items) => items,
            other => return Err(other.wrong_type("ARRAY").within(Frame::Position(0))),
        };
        let operand = self.datum_argument(args, 1).await?;
        let other = || match &operand {
            Datum::Array(other) => Ok(other.clone()),
            found => Err(found.wrong_type("ARRAY").within(Frame::Position(1))),
        };
        let mut out: Vec<Datum> = Vec::new();
        let push_unique = |out: &mut Vec<Datum>, value: Datum| {
            if !out.contains(&value) {
                out.push(value);
            }
        };
        match term_type {
            kind::SET_INSERT => {
                for item in items {
                    push_unique(&mut out, item);
                }
                push_unique(&mut out, operand.clone());
            }
            kind::SET_UNION => {
                for item in items.into_iter().chain(other()?) {
                    push_unique(&mut out, item);
                }
            }
            kind::SET_INTERSECTION => {
                let other = other()?;
                for item in items {
                    if other.contains(&item) {
                        push_unique(&mut out, item);
                    }
                }
            }
            kind::SET_DIFFERENCE => {
                let other = other()?;
                for item in items {
                    if !other.contains(&item) {
                        push_unique(&mut out, item);
                    }
                }
            }
            _ => {
                let other = other()?;
                out = items
                    .into_iter()
                    .filter(|item| !other.contains(item))
                    .collect();
            }
        }
        Ok(Value::Datum(Datum::Array(out)))
    }

    async fn positional(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        let (minimum, maximum) = if term_type == kind::DELETE_AT {
            (2, 3)
        } else {
            (3, 3)
        };
        arity(args, minimum, maximum)?;
        let mut items = match self.datum_argument(args, 0).await? {
            Datum::Array(items) => items,
            other => return Err(other.wrong_type("ARRAY").within(Frame::Position(0))),
        };
        let index = whole_number(&self.datum_argument(args, 1).await?)
            .map_err(|error| error.within(Frame::Position(1)))?;
        let length = items.len() as i64;
        let inserting = matches!(term_type, kind::INSERT_AT | kind::SPLICE_AT);
        // A range deletion may start at the end (deleting nothing).
        let limit = if inserting || (term_type == kind::DELETE_AT && args.len() == 3) {
            length
        } else {
            length - 1
        };
        let position = if index < 0 {
            length + index + i64::from(inserting)
        } else {
            index
        };
        if position < 0 {
            return Err(ReqlError::new(
                ErrorClass::NonExistence,
                format!("Index out of bounds: {index}"),
            )
            .within(Frame::Position(0)));
        }
        if position > limit {
            return Err(ReqlError::new(
                ErrorClass::NonExistence,
                format!("Index `{index}` out of bounds for array of size: `{length}`."),
            )
            .within(Frame::Position(0)));
        }
        let position = position as usize;
        match term_type {
            kind::INSERT_AT => items.insert(position, self.datum_argument(args, 2).await?),
            kind::CHANGE_AT => items[position] = self.datum_argument(args, 2).await?,
            kind::SPLICE_AT => match self.datum_argument(args, 2).await? {
                Datum::Array(inserted) => {
                    items.splice(position..position, inserted);
                }
                other => return Err(other.wrong_type("ARRAY").within(Frame::Position(2))),
            },
            _ => {
                let end = if args.len() == 3 {
                    match self.datum_argument(args, 2).await? {
                        Datum::Number(end) if end.fract() == 0.0 => {
                            let end = end as i64;
                            let end = if end < 0 { length + end } else { end };
                            (end.clamp(position as i64, length)) as usize
                        }
                        other => return Err(other.wrong_type("NUMBER").within(Frame::Position(2))),
                    }
                } else {
                    position + 1
                };
                items.drain(position..end);
            }
        }
        Ok(Value::Datum(Datum::Array(items)))
    }
}
