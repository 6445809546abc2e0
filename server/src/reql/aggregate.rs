//! Grouped reductions of tables, computed where the rows are.
//!
//! `table.filter(…).group(…).count()` (and `sum`, `avg`, `min`, `max`;
//! a filtered `count()` is the same with one group)
//! runs on every partition's own shard at once: each reads its rows, keeps
//! a partial result per group, and sends only those partials to the
//! coordinator, which merges them. No document crosses between cores and
//! no group is ever held as an array, so `array_limit` does not apply to a
//! group's size, as in RethinkDB.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use photondb_datum::document::{self, DocumentRef};
use photondb_datum::Datum;
use photondb_storage::catalog::TableConfig;
use photondb_storage::{Backend, Direction, RowVisitor, ScanRange};

use super::error::{ErrorClass, ReqlError};
use super::eval::{combine_group_keys, group_keys, Context, TypeMismatch};
use super::function::Callable;
use super::in_place::{KeyValue, StoredKey, StoredPredicate};
use super::stream::{Operation, Stream};

/// Rows a partition copies out for the interpreter before it stops its
/// scan to evaluate them.
const PENDING_ROWS: usize = 1024;

/// Rows a partition's scan reads in one stretch before it lets the core's
/// other tasks run (a few milliseconds at most).
const VISIT_ROWS: usize = 4096;

/// What is computed per group.
#[derive(Clone, Debug)]
pub enum Reduction {
    Count,
    /// `count(value)` or `count(predicate)`.
    CountMatching(Callable),
    Sum(Selector),
    Avg(Selector),
    Min(Selector),
    Max(Selector),
}

/// The value a reduction looks at in a row: a field, or a function's
/// result. A row without one is left out.
#[derive(Clone, Debug)]
pub enum Selector {
    /// The row itself (`min()` with nothing to look at).
    Row,
    Field(String),
    Function(Callable),
}

impl Selector {
    async fn select(&self, context: &Context, row: &Datum) -> Result<Option<Datum>, ReqlError> {
        match self {
            Selector::Row => Ok(Some(row.clone())),
            Selector::Field(field) => match row {
                Datum::Object(fields) => Ok(fields.get(field).cloned()),
                other => Err(ReqlError::logic(format!(
                    "Cannot perform get_field on a non-object non-sequence `{}`.",
                    super::eval::pretty(other)
                ))),
            },
            Selector::Function(function) => match function.call(context, row.clone()).await {
                Ok(value) => Ok(Some(value)),
                Err(error) if error.class == ErrorClass::NonExistence => Ok(None),
                Err(error) => Err(error),
            },
        }
    }
}

/// A group's partial result on one partition.
#[derive(Debug)]
enum Partial {
    Count(u64),
    Sum {
        total: f64,
        rows: u64,
    },
    /// The best value so far, with its row's key (ties go to the smaller
    /// key, as rows come in key order) and the row.
    Best(Option<(Datum, Bytes, Datum)>),
}

impl Reduction {
    fn empty(&self) -> Partial {
        match self {
            Reduction::Count | Reduction::CountMatching(_) => Partial::Count(0),
            Reduction::Sum(_) | Reduction::Avg(_) => Partial::Sum {
                total: 0.0,
                rows: 0,
            },
            Reduction::Min(_) | Reduction::Max(_) => Partial::Best(None),
        }
    }

    /// Adds a row read in place; `false` when the reduction needs the
    /// decoded row (or the interpreter's error) instead.
    fn add_in_place(&self, partial: &mut Partial, document: DocumentRef<'_>) -> bool {
        match (self, partial) {
            (Reduction::Count, Partial::Count(count)) => {
                *count += 1;
                true
            }
            (
                Reduction::Sum(Selector::Field(field)) | Reduction::Avg(Selector::Field(field)),
                Partial::Sum { total, rows },
            ) if document.is_object() => match document.field(field) {
                Ok(None) => true,
                Ok(Some(value)) => match value.number() {
                    Some(number) => {
                        *total += number;
                        *rows += 1;
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            },
            _ => false,
        }
    }

    fn better(&self, candidate: &Datum, best: &Datum) -> bool {
        let ordering = candidate.cmp_reql(best);
        match self {
            Reduction::Min(_) => ordering == std::cmp::Ordering::Less,
            _ => ordering == std::cmp::Ordering::Greater,
        }
    }

    async fn add(
        &self,
        context: &Context,
        partial: &mut Partial,
        key: &Bytes,
        row: &Datum,
    ) -> Result<(), ReqlError> {
        match (self, partial) {
            (Reduction::Count, Partial::Count(count)) => *count += 1,
            (Reduction::CountMatching(wanted), Partial::Count(count)) => {
                // As `filter(predicate).count()`: a missing field is a no.
                let hit = match wanted {
                    Callable::Constant(value) => value == row,
                    function => match function.accepts(context, row).await {
                        Ok(hit) => hit,
                        Err(error) if error.class == ErrorClass::NonExistence => false,
                        Err(error) => return Err(error),
                    },
                };
                *count += u64::from(hit);
            }
            (Reduction::Sum(selector) | Reduction::Avg(selector), Partial::Sum { total, rows }) => {
                if let Some(value) = selector.select(context, row).await? {
                    match value {
                        Datum::Number(number) => *total += number,
                        other => return Err(other.wrong_type("NUMBER")),
                    }
                    *rows += 1;
                }
            }
            (Reduction::Min(selector) | Reduction::Max(selector), Partial::Best(best)) => {
                if let Some(value) = selector.select(context, row).await? {
                    let replace = match best {
                        None => true,
                        Some((current, current_key, _)) => {
                            self.better(&value, current)
                                || (value.cmp_reql(current).is_eq() && key < current_key)
                        }
                    };
                    if replace {
                        *best = Some((value, key.clone(), row.clone()));
                    }
                }
            }
            _ => unreachable!("partials are made by their reduction"),
        }
        Ok(())
    }

    fn merge(&self, into: &mut Partial, other: Partial) {
        match (into, other) {
            (Partial::Count(count), Partial::Count(more)) => *count += more,
            (
                Partial::Sum { total, rows },
                Partial::Sum {
                    total: more,
                    rows: more_rows,
                },
            ) => {
                *total += more;
                *rows += more_rows;
            }
            (Partial::Best(best), Partial::Best(Some((value, key, row)))) => {
                let replace = match best {
                    None => true,
                    Some((current, current_key, _)) => {
                        self.better(&value, current)
                            || (value.cmp_reql(current).is_eq() && key < *current_key)
                    }
                };
                if replace {
                    *best = Some((value, key, row));
                }
            }
            (Partial::Best(_), Partial::Best(None)) => {}
            _ => unreachable!("partials of one reduction merge"),
        }
    }

    /// The group's result; `None` drops the group (nothing to aggregate,
    /// as RethinkDB drops groups a field or filter left empty).
    fn finish(&self, partial: Partial) -> Option<Datum> {
        match (self, partial) {
            (Reduction::Count, Partial::Count(count)) => Some(Datum::Number(count as f64)),
            (Reduction::CountMatching(_), Partial::Count(0)) => None,
            (Reduction::CountMatching(_), Partial::Count(count)) => {
                Some(Datum::Number(count as f64))
            }
            (_, Partial::Sum { rows: 0, .. }) => None,
            (Reduction::Sum(_), Partial::Sum { total, .. }) => Some(Datum::Number(total)),
            (Reduction::Avg(_), Partial::Sum { total, rows }) => {
                Some(Datum::Number(total / rows as f64))
            }
            (_, Partial::Best(best)) => best.map(|(_, _, row)| row),
            _ => unreachable!("partials are made by their reduction"),
        }
    }
}

/// A partition scan's filters and group keys, compiled to read stored
/// documents in place where they can (see [`super::in_place`]).
struct CompiledScan {
    /// One per filter: `None` where the filter needs the interpreter.
    predicates: Vec<Option<StoredPredicate>>,
    /// `None` when any key needs the interpreter.
    keys: Option<Vec<StoredKey>>,
}

impl CompiledScan {
    fn new(filters: &[Operation], keys: &[Callable]) -> CompiledScan {
        CompiledScan {
            predicates: filters
                .iter()
                .map(|filter| match filter {
                    Operation::Filter { predicate, .. } => StoredPredicate::compile(predicate),
                    _ => None,
                })
                .collect(),
            keys: keys.iter().map(StoredKey::compile).collect(),
        }
    }

    /// Whether the row passes every filter, read in place where a filter
    /// compiled and decoded into `row` (once) where one did not.
    async fn passes(
        &self,
        context: &Context,
        filters: &[Operation],
        document: DocumentRef<'_>,
        bytes: &[u8],
        row: &mut Option<Datum>,
    ) -> Result<bool, ReqlError> {
        for (filter, predicate) in filters.iter().zip(&self.predicates) {
            let passed = match predicate
                .as_ref()
                .and_then(|predicate| predicate.accepts(document))
            {
                Some(passed) => passed,
                None => {
                    let row = decoded(row, bytes)?;
                    Stream::passes(context, std::slice::from_ref(filter), row).await?
                }
            };
            if !passed {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reduces a row read in place into its group's partial: `Ok(false)`,
    /// having changed nothing, when the row needs the interpreter.
    fn reduce_in_place(
        &self,
        reduction: &Reduction,
        groups: &mut Groups,
        multi: bool,
        bytes: &[u8],
    ) -> Result<bool, ReqlError> {
        let document = DocumentRef::new(bytes).map_err(ReqlError::unreadable)?;
        for predicate in &self.predicates {
            match predicate
                .as_ref()
                .and_then(|predicate| predicate.accepts(document))
            {
                Some(true) => {}
                Some(false) => return Ok(true),
                None => return Ok(false),
            }
        }
        let Some(keys) = &self.keys else {
            return Ok(false);
        };
        // One key and one group per row, the common case: found by the
        // key's stored bytes, without a vector or a decoded key.
        if let ([key], false) = (keys.as_slice(), multi) {
            return Ok(match key.locate(document) {
                None => false,
                Some(KeyValue::Given(group)) => groups
                    .add_in_place(group.clone(), reduction, document)
                    .is_some(),
                Some(KeyValue::Stored(value)) => {
                    let Ok(stored) = value.encoded() else {
                        return Ok(false);
                    };
                    match groups.find_stored(stored) {
                        Some(index) => {
                            reduction.add_in_place(&mut groups.partials[index], document)
                        }
                        None => match value.to_datum() {
                            Ok(group) => match groups.add_in_place(group, reduction, document) {
                                Some(index) => {
                                    groups.remember_stored(stored, index);
                                    true
                                }
                                None => false,
                            },
                            Err(_) => false,
                        },
                    }
                }
            });
        }
        let Some(values) = keys.iter().map(|key| key.evaluate(document)).collect() else {
            return Ok(false);
        };
        let keys = combine_group_keys(values, multi);
        // Adding to one group and not the next would count a row twice
        // once the interpreter takes it: only counts, which always add.
        if keys.len() != 1 && !matches!(reduction, Reduction::Count) {
            return Ok(false);
        }
        Ok(keys
            .into_iter()
            .all(|group| groups.add_in_place(group, reduction, document).is_some()))
    }

    /// Prefetches what the compiled filters and keys will read in a row.
    fn prefetch(&self, bytes: &[u8]) {
        let Ok(document) = DocumentRef::new(bytes) else {
            return;
        };
        for predicate in self.predicates.iter().flatten() {
            predicate.prefetch(document);
        }
        for key in self.keys.iter().flatten() {
            key.prefetch(document);
        }
    }

    /// The row's key values, one per key; `None` when the interpreter must
    /// work them out.
    fn keys_in_place(&self, document: DocumentRef<'_>) -> Option<Vec<Datum>> {
        self.keys
            .as_ref()?
            .iter()
            .map(|key| key.evaluate(document))
            .collect()
    }
}

/// A scan's visitor: `row` reduces each row; rows about to come have what
/// the compiled parts read in them prefetched. With documents scattered
/// over memory (rows written in random order), a field deep in each
/// document was a cache miss the scan waited on.
struct Prefetching<'a, F> {
    scan: &'a CompiledScan,
    row: F,
}

impl<F: FnMut(&[u8], &[u8]) -> ControlFlow<()>> RowVisitor for Prefetching<'_, F> {
    fn row(&mut self, key: &[u8], value: &[u8]) -> ControlFlow<()> {
        (self.row)(key, value)
    }

    fn upcoming(&mut self, value: &[u8]) {
        self.scan.prefetch(value);
    }
}

/// A partition's partial results, one per group.
///
/// Most group keys are a field read in place, and a scan meets the same
/// few groups over and over. Such a row finds its group by a hash of the
/// key's stored bytes, instead of decoding the key and comparing datums
/// down a `BTreeMap` (half of a `group().count()`'s time went there).
/// Different bytes can decode to one group (0 and -0): each then leads to
/// it.
#[derive(Default)]
struct Groups {
    /// Each group's index in `partials`, in ReQL's order.
    order: BTreeMap<Datum, usize>,
    partials: Vec<Partial>,
    stored: hashbrown::HashMap<Box<[u8]>, usize>,
}

/// Stored keys remembered at most: past that many groups, a key is
/// likely new to the scan, and remembering it would only cost.
const STORED_KEYS: usize = 65_536;

impl Groups {
    fn insert(&mut self, group: Datum, partial: Partial) -> usize {
        let index = self.partials.len();
        self.partials.push(partial);
        self.order.insert(group, index);
        index
    }

    /// `group`'s partial, made empty if new.
    fn entry(&mut self, group: Datum, reduction: &Reduction) -> &mut Partial {
        let index = match self.order.get(&group) {
            Some(&index) => index,
            None => self.insert(group, reduction.empty()),
        };
        &mut self.partials[index]
    }

    /// Adds a row read in place to `group`, whose partial is made only if
    /// the row adds: the group's index, or `None`, having changed nothing,
    /// when the row needs the interpreter.
    fn add_in_place(
        &mut self,
        group: Datum,
        reduction: &Reduction,
        document: DocumentRef<'_>,
    ) -> Option<usize> {
        match self.order.get(&group) {
            Some(&index) => reduction
                .add_in_place(&mut self.partials[index], document)
                .then_some(index),
            None => {
                let mut partial = reduction.empty();
                reduction
                    .add_in_place(&mut partial, document)
                    .then(|| self.insert(group, partial))
            }
        }
    }

    /// The group of a key stored as `bytes`, if met before.
    fn find_stored(&self, bytes: &[u8]) -> Option<usize> {
        self.stored.get(bytes).copied()
    }

    fn remember_stored(&mut self, bytes: &[u8], index: usize) {
        if self.stored.len() < STORED_KEYS {
            self.stored.insert(bytes.into(), index);
        }
    }

    /// The groups and their partials, in ReQL's order.
    fn into_partials(self) -> Vec<(Datum, Partial)> {
        let mut partials: Vec<Option<Partial>> = self.partials.into_iter().map(Some).collect();
        self.order
            .into_iter()
            .map(|(group, index)| (group, partials[index].take().expect("one group per index")))
            .collect()
    }
}

/// The decoded row, decoding it the first time it is asked for.
fn decoded<'a>(row: &'a mut Option<Datum>, bytes: &[u8]) -> Result<&'a Datum, ReqlError> {
    if row.is_none() {
        *row = Some(document::decode(bytes).map_err(ReqlError::unreadable)?);
    }
    Ok(row.as_ref().expect("decoded above"))
}

/// Groups the rows of `table` in `[start, end)` that pass `filters` by
/// `keys` and reduces each group, every partition on its own shard.
#[allow(clippy::too_many_arguments)]
pub async fn grouped_on_partitions(
    context: &Context,
    table: &TableConfig,
    start: Bound<Bytes>,
    end: Bound<Bytes>,
    filters: Vec<Operation>,
    keys: Vec<Callable>,
    multi: bool,
    reduction: Reduction,
) -> Result<Vec<(Datum, Datum)>, ReqlError> {
    context.require_on_table(super::permission::Permission::Read, table)?;
    let table = table.id;
    let calls = (0..context.engine.partitions()).map(|partition| {
        let inner = context.clone();
        let (start, end, filters, keys, reduction) = (
            start.clone(),
            end.clone(),
            filters.clone(),
            keys.clone(),
            reduction.clone(),
        );
        context
            .engine
            .run_on_partition(partition, move |backend| async move {
                let context = inner;
                let scan = CompiledScan::new(&filters, &keys);
                let mut groups = Groups::default();
                let mut range = ScanRange {
                    start,
                    end,
                    direction: Direction::Ascending,
                    limit: None,
                };
                loop {
                    // Rows read in place are reduced while storage lends
                    // them; the others are copied out for the interpreter,
                    // a bounded number per pass. Partials do not depend on
                    // the order rows are added in (ties of `min`/`max` go
                    // by key), so the two kinds may interleave.
                    // The visit also stops every `VISIT_ROWS` rows, so
                    // the core's other queries run between stretches.
                    let mut pending: Vec<(Bytes, Bytes)> = Vec::new();
                    let mut unreadable = None;
                    let mut stopped_after: Option<Bytes> = None;
                    let mut visited = 0;
                    backend
                        .visit(
                            table,
                            &range,
                            &mut Prefetching {
                                scan: &scan,
                                row: |key: &[u8], bytes: &[u8]| {
                                    visited += 1;
                                    let go_on = match scan.reduce_in_place(
                                        &reduction,
                                        &mut groups,
                                        multi,
                                        bytes,
                                    ) {
                                        Ok(true) => true,
                                        Ok(false) => {
                                            pending.push((
                                                Bytes::copy_from_slice(key),
                                                Bytes::copy_from_slice(bytes),
                                            ));
                                            pending.len() < PENDING_ROWS
                                        }
                                        Err(error) => {
                                            unreadable = Some(error);
                                            return ControlFlow::Break(());
                                        }
                                    };
                                    if go_on && visited < VISIT_ROWS {
                                        return ControlFlow::Continue(());
                                    }
                                    stopped_after = Some(Bytes::copy_from_slice(key));
                                    ControlFlow::Break(())
                                },
                            },
                        )
                        .await
                        .map_err(|error| {
                            ReqlError::from(photondb_runtime::EngineError::from(error))
                        })?;
                    if let Some(error) = unreadable {
                        return Err(error);
                    }
                    for (key, bytes) in &pending {
                        let document = DocumentRef::new(bytes).map_err(ReqlError::unreadable)?;
                        // Decoded only when something compiled cannot
                        // decide the row.
                        let mut row: Option<Datum> = None;
                        if !scan
                            .passes(&context, &filters, document, bytes, &mut row)
                            .await?
                        {
                            continue;
                        }
                        let row_groups = match scan.keys_in_place(document) {
                            Some(values) => combine_group_keys(values, multi),
                            None => {
                                group_keys(&context, &keys, multi, decoded(&mut row, bytes)?)
                                    .await?
                            }
                        };
                        for group in row_groups {
                            let partial = groups.entry(group, &reduction);
                            if !reduction.add_in_place(partial, document) {
                                let row = decoded(&mut row, bytes)?;
                                reduction.add(&context, partial, key, row).await?;
                            }
                        }
                    }
                    match stopped_after {
                        Some(last) => {
                            range.start = Bound::Excluded(last);
                            super::cooperate::yield_now().await;
                        }
                        None => break,
                    }
                }
                Ok::<_, ReqlError>(groups.into_partials())
            })
    });
    let mut merged: BTreeMap<Datum, Partial> = BTreeMap::new();
    for partials in photondb_runtime::join_all(calls).await {
        for (group, partial) in partials?? {
            match merged.get_mut(&group) {
                Some(into) => reduction.merge(into, partial),
                None => {
                    merged.insert(group, partial);
                }
            }
        }
    }
    Ok(merged
        .into_iter()
        .filter_map(|(group, partial)| reduction.finish(partial).map(|value| (group, value)))
        .collect())
}
