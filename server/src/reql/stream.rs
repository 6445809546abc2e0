//! Lazy sequences: a source (a table, a key range, or rows in memory) and
//! the operations applied to each row as it is pulled (`filter`, `map`,
//! `skip`, `limit`). Table sources are read in key order, a batch at a
//! time, so a cursor over a large table never holds the table in memory.

use std::collections::VecDeque;
use std::ops::Bound;

use bytes::Bytes;
use photondb_datum::{document, Datum};
use photondb_storage::catalog::{IndexConfig, TableConfig};
use photondb_storage::{Direction, ScanRange};

use super::error::{ErrorClass, ReqlError};
use super::eval::Context;
use super::eval::TypeMismatch;
use super::function::{Callable, Function};
use super::in_place::StoredPredicate;
use super::permission::Permission;

/// Rows fetched from storage per round trip to the shards.
const FETCH_ROWS: usize = 256;

#[derive(Clone, Debug)]
pub enum Source {
    /// Rows of a table in primary-key or index order, from `start` to
    /// `end`: each partition read a batch at a time and the batches merged
    /// by key, so every row is fetched once.
    Table(Box<TableRead>),
    Rows(VecDeque<Datum>),
    /// `get_all` on the primary key: the rows of these keys, in this order,
    /// read a batch at a time (missing keys yield nothing).
    Keys {
        table: TableConfig,
        keys: VecDeque<Datum>,
    },
    /// `get_all` on a secondary index: for each key in turn, the rows the
    /// index has under it.
    IndexKeys(Box<IndexKeys>),
    /// A changefeed: change documents as writes commit, without end.
    Feed(Box<super::feed::FeedSource>),
    /// `union` of changefeeds: every change of each, as they come.
    FeedUnion(Vec<Stream>),
    /// `r.range`: integers from `next`, up to `end` (exclusive) or forever.
    Range {
        next: i64,
        end: Option<i64>,
    },
    /// `fold` with `emit`: what `emit` returns for each row of `inner`, then
    /// what `final_emit` returns for the final accumulator.
    Fold(Box<FoldSource>),
    /// `map` over several sequences: the function of one item of each, until
    /// the shortest ends.
    Zip(Box<(Vec<Stream>, Function)>),
}

/// A read of a table's rows over a range of its primary key or of one of
/// its secondary indexes (then `start` and `end` bound entry keys).
#[derive(Clone, Debug)]
pub struct TableRead {
    pub table: TableConfig,
    pub start: Bound<Bytes>,
    pub end: Bound<Bytes>,
    pub index: Option<IndexRead>,
    pub descending: bool,
    /// Whether `order_by(index=…)` asked for this order (rather than it
    /// being the order a table is read in anyway).
    pub ordered: bool,
    /// Whether `between` chose the range (a second one is an error).
    pub sliced: bool,
    /// Rows asked of each partition per round trip: fewer than usual when
    /// a `limit` right after the read needs no more.
    batch_rows: usize,
    finished: bool,
    /// Once started, where each partition's read stands.
    partitions: Option<Vec<PartitionCursor>>,
}

/// The secondary index a read goes through.
#[derive(Clone, Debug)]
pub struct IndexRead {
    pub config: IndexConfig,
    /// The secondary keys (key encodings) the read selects.
    pub bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    /// Set when a bound was longer than stored index keys: the index
    /// function, to check rows whose own keys were cut against `bounds`.
    pub exact: Option<Box<Function>>,
}

impl IndexRead {
    /// A read of the whole index.
    pub fn whole(config: IndexConfig) -> IndexRead {
        IndexRead {
            config,
            bounds: (Bound::Unbounded, Bound::Unbounded),
            exact: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IndexKeys {
    pub table: TableConfig,
    pub index: IndexConfig,
    pub keys: VecDeque<Datum>,
    /// The read of the key being returned.
    current: Option<Stream>,
}

/// Where the read of one partition's part of a table stands.
#[derive(Clone, Debug)]
pub struct PartitionCursor {
    start: Bound<Bytes>,
    end: Bound<Bytes>,
    /// Fetched and not yet merged, in read order: merge key, document, and
    /// whether the row's index entry was cut (so it must be checked).
    buffer: VecDeque<(Bytes, Bytes, bool)>,
    done: bool,
}

/// The bounds on entry keys that select rows whose secondary key lies
/// between `start` and `end` (key encodings), and whether a bound had to
/// be cut to the stored key length.
pub fn entry_bounds(
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
) -> (Bound<Bytes>, Bound<Bytes>, bool) {
    use photondb_storage::index::MAX_SECONDARY_BYTES;
    // An entry is its secondary key followed by a primary key, which starts
    // with a tag byte below 0xFF: `key ++ [0xFF]` is above every entry of
    // `key` and below every greater key's.
    let above = |key: &[u8]| {
        let mut bytes = key.to_vec();
        bytes.push(0xFF);
        Bytes::from(bytes)
    };
    let mut cut = false;
    let mut shorten = |key: Vec<u8>| -> (Vec<u8>, bool) {
        if key.len() > MAX_SECONDARY_BYTES {
            cut = true;
            (key[..MAX_SECONDARY_BYTES].to_vec(), true)
        } else {
            (key, false)
        }
    };
    let start = match start {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(Bytes::from(shorten(key).0)),
        Bound::Excluded(key) => match shorten(key) {
            // A cut bound widens: the exact check narrows it again.
            (key, true) => Bound::Included(Bytes::from(key)),
            (key, false) => Bound::Excluded(above(&key)),
        },
    };
    let end = match end {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(key) => Bound::Included(above(&shorten(key).0)),
        Bound::Excluded(key) => match shorten(key) {
            (key, true) => Bound::Included(above(&key)),
            (key, false) => Bound::Excluded(Bytes::from(key)),
        },
    };
    (start, end, cut)
}

/// Whether `key` lies between `start` and `end`.
pub fn within<T: AsRef<[u8]>>(key: &[u8], start: &Bound<T>, end: &Bound<T>) -> bool {
    let above_start = match start {
        Bound::Unbounded => true,
        Bound::Included(bound) => key >= bound.as_ref(),
        Bound::Excluded(bound) => key > bound.as_ref(),
    };
    let below_end = match end {
        Bound::Unbounded => true,
        Bound::Included(bound) => key <= bound.as_ref(),
        Bound::Excluded(bound) => key < bound.as_ref(),
    };
    above_start && below_end
}

#[derive(Clone, Debug)]
pub struct FoldSource {
    pub inner: Stream,
    pub accumulator: Datum,
    pub combine: Function,
    pub emit: Function,
    pub final_emit: Option<Function>,
}

/// A row-by-row transformation with no function of the user's.
#[derive(Clone, Debug)]
pub enum Transform {
    Pluck(Vec<Datum>),
    Without(Vec<Datum>),
    Merge(Vec<Callable>),
}

impl Transform {
    pub async fn apply(&self, context: &Context, row: Datum) -> Result<Datum, ReqlError> {
        match self {
            Transform::Pluck(selectors) => super::sequence::pluck(&row, selectors),
            Transform::Without(selectors) => super::sequence::without(&row, selectors),
            Transform::Merge(patches) => {
                if let Datum::Array(items) = row {
                    let mut merged = Vec::with_capacity(items.len());
                    for item in items {
                        merged.push(Box::pin(self.apply(context, item)).await?);
                    }
                    return Ok(Datum::Array(merged));
                }
                let mut row = row;
                for patch in patches {
                    let patch = patch.call(context, row.clone()).await?;
                    if super::sequence::as_literal(&patch).is_some() {
                        return Err(super::sequence::stray_literal());
                    }
                    if !matches!(patch, Datum::Object(_)) && !matches!(row, Datum::Object(_)) {
                        return Err(row.wrong_type("OBJECT"));
                    }
                    row = super::sequence::merge(row, patch);
                }
                Ok(row)
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Operation {
    /// `default` runs when the predicate meets a missing value.
    Filter {
        predicate: Callable,
        default: Option<Function>,
    },
    Map(Function),
    Transform(Transform),
    /// `with_fields`: rows with every selected field, plucked to them.
    WithFields(Vec<Datum>),
    /// `seq('field')`: the field of each row; rows without it are skipped.
    Field(String),
    Skip(usize),
    Limit(usize),
}

#[derive(Clone, Debug)]
pub struct Stream {
    pub source: Source,
    pub operations: Vec<Operation>,
    /// Rows pulled from the source and not yet passed through.
    pending: VecDeque<Datum>,
    /// Rows already produced, per `Skip`/`Limit` operation index.
    counters: Vec<usize>,
    exhausted: bool,
    budget: super::cooperate::Budget,
    /// Set for the rows of a `rethinkdb` table (see [`Stream::system_rows`]).
    system_table: Option<String>,
    /// For feeds: wait for changes in `next`, or return `None` at once.
    wait_for_changes: bool,
    /// A feed found nothing ready (with `wait_for_changes` off).
    idle: bool,
}

impl Stream {
    pub fn table(table: TableConfig, start: Bound<Bytes>, end: Bound<Bytes>) -> Stream {
        Stream::new(Source::Table(Box::new(TableRead {
            table,
            start,
            end,
            index: None,
            descending: false,
            ordered: false,
            sliced: false,
            batch_rows: FETCH_ROWS,
            finished: false,
            partitions: None,
        })))
    }

    /// Rows of a table through a secondary index, entry keys from `start`
    /// to `end`.
    pub fn index_range(
        table: TableConfig,
        index: IndexRead,
        start: Bound<Bytes>,
        end: Bound<Bytes>,
    ) -> Stream {
        Stream::new(Source::Table(Box::new(TableRead {
            table,
            start,
            end,
            index: Some(index),
            descending: false,
            ordered: false,
            sliced: false,
            batch_rows: FETCH_ROWS,
            finished: false,
            partitions: None,
        })))
    }

    /// `get_all` through a secondary index.
    pub fn index_keys(table: TableConfig, index: IndexConfig, keys: Vec<Datum>) -> Stream {
        Stream::new(Source::IndexKeys(Box::new(IndexKeys {
            table,
            index,
            keys: keys.into(),
            current: None,
        })))
    }

    /// The table read of a stream not started yet, whatever operations
    /// follow it.
    pub fn table_read_mut_any(&mut self) -> Option<&mut TableRead> {
        match &mut self.source {
            Source::Table(read) if read.partitions.is_none() => Some(read),
            _ => None,
        }
    }

    /// The table read of a table slice not started yet, to change its
    /// order (`order_by(index=…)`).
    pub fn table_read_mut(&mut self) -> Option<&mut TableRead> {
        match &mut self.source {
            Source::Table(read) if read.partitions.is_none() && self.operations.is_empty() => {
                Some(read)
            }
            _ => None,
        }
    }

    pub fn rows(rows: Vec<Datum>) -> Stream {
        Stream::new(Source::Rows(rows.into()))
    }

    /// The rows of a system table, remembered as its rows so a `delete`
    /// through `filter` knows what it deletes.
    pub fn system_rows(table: &str, rows: Vec<Datum>) -> Stream {
        let mut stream = Stream::new(Source::Rows(rows.into()));
        stream.system_table = Some(table.to_owned());
        stream
    }

    /// The system table these rows come from, if they do.
    pub fn system_table(&self) -> Option<&str> {
        self.system_table.as_deref()
    }

    pub fn keys(table: TableConfig, keys: Vec<Datum>) -> Stream {
        Stream::new(Source::Keys {
            table,
            keys: keys.into(),
        })
    }

    pub fn range(start: i64, end: Option<i64>) -> Stream {
        Stream::new(Source::Range { next: start, end })
    }

    pub fn zip(streams: Vec<Stream>, function: Function) -> Stream {
        Stream::new(Source::Zip(Box::new((streams, function))))
    }

    pub fn fold(fold: FoldSource) -> Stream {
        Stream::new(Source::Fold(Box::new(fold)))
    }

    /// Whether the stream never ends by itself.
    pub fn is_endless(&self) -> bool {
        let limited = self
            .operations
            .iter()
            .any(|operation| matches!(operation, Operation::Limit(_)));
        !limited
            && match &self.source {
                Source::Range { end: None, .. } | Source::Feed(_) | Source::FeedUnion(_) => true,
                Source::Fold(fold) => fold.inner.is_endless(),
                Source::Zip(zip) => zip.0.iter().all(Stream::is_endless),
                _ => false,
            }
    }

    /// An endless stream cannot be counted, reduced or made an array.
    pub fn check_finite(&self) -> Result<(), ReqlError> {
        if self.is_endless() && self.is_feed() {
            return Err(ReqlError::logic("Cannot call a terminal (`reduce`, `count`, etc.) on an infinite stream (such as a changefeed)."));
        }
        if self.is_endless() {
            return Err(ReqlError::logic(
                "Cannot use an infinite stream with an aggregation function (`reduce`, `count`, etc.) or coerce it to an array.",
            ));
        }
        Ok(())
    }

    fn new(source: Source) -> Stream {
        Stream {
            source,
            operations: Vec::new(),
            pending: VecDeque::new(),
            counters: Vec::new(),
            exhausted: false,
            budget: Default::default(),
            wait_for_changes: true,
            idle: false,
            system_table: None,
        }
    }

    pub fn from_source(source: Source) -> Stream {
        Stream::new(source)
    }

    /// Whether this is a changefeed.
    pub fn is_feed(&self) -> bool {
        matches!(self.source, Source::Feed(_) | Source::FeedUnion(_))
    }

    /// A changefeed's response notes.
    pub fn feed_notes(&self) -> Option<Vec<u64>> {
        match &self.source {
            Source::Feed(feed) => Some(feed.notes()),
            Source::FeedUnion(_) => Some(vec![super::feed::UNIONED_FEED]),
            _ => None,
        }
    }

    /// `union` of changefeeds.
    pub fn feed_union(feeds: Vec<Stream>) -> Stream {
        Stream::new(Source::FeedUnion(feeds))
    }

    /// Whether no row will come any more: the source ended, or a `limit`
    /// has let through all it will.
    pub fn has_ended(&self) -> bool {
        self.exhausted
            || self.operations.iter().zip(&self.counters).any(|(operation, counter)| matches!(operation, Operation::Limit(count) if counter >= count))
    }

    /// For a changefeed: whether `next` waits for a change (`true`) or
    /// returns `None` when none is ready (the stream has not ended then).
    pub fn set_wait_for_changes(&mut self, wait: bool) {
        self.wait_for_changes = wait;
    }

    pub fn with(mut self, operation: Operation) -> Stream {
        // `order_by(index=…).limit(10)` reads ten rows of each partition,
        // not a full batch.
        if let (Operation::Limit(count), Source::Table(read), true) =
            (&operation, &mut self.source, self.operations.is_empty())
        {
            read.batch_rows = (*count).clamp(1, FETCH_ROWS);
        }
        self.operations.push(operation);
        self.counters.push(0);
        self
    }

    /// The table this stream selects rows of, if writes can go through it
    /// (no `map` has changed the rows).
    pub fn selected_table(&self) -> Option<&TableConfig> {
        let changed = self.operations.iter().any(|operation| {
            matches!(
                operation,
                Operation::Map(_)
                    | Operation::Transform(_)
                    | Operation::WithFields(_)
                    | Operation::Field(_)
            )
        });
        if changed {
            return None;
        }
        match &self.source {
            Source::Table(read) => Some(&read.table),
            Source::Keys { table, .. } => Some(table),
            Source::IndexKeys(read) => Some(&read.table),
            _ => None,
        }
    }

    /// Whether rows come from a table (so results stream to the client
    /// rather than arriving as one array).
    pub fn is_table_source(&self) -> bool {
        matches!(
            self.source,
            Source::Table(_) | Source::Keys { .. } | Source::IndexKeys(_) | Source::Feed(_)
        )
    }

    /// A key range of a table with nothing applied yet: RethinkDB's
    /// TABLE_SLICE, what `between` and `order_by(index=)` give.
    pub fn is_table_slice(&self) -> bool {
        matches!(self.source, Source::Table(_)) && self.operations.is_empty()
    }

    async fn refill(&mut self, context: &Context) -> Result<(), ReqlError> {
        // Only table reads see stored documents.
        let rejects = match self.source {
            Source::Table(_) | Source::IndexKeys(_) => self.leading_predicates(),
            _ => Vec::new(),
        };
        // Rows worth decoding now: what a leading `limit` still lets through
        // (rows merged past it would be decoded for nothing).
        let wanted = match (self.operations.first(), self.counters.first()) {
            (Some(Operation::Limit(count)), Some(taken)) => count
                .saturating_sub(*taken + self.pending.len())
                .clamp(1, FETCH_ROWS),
            _ => FETCH_ROWS,
        };
        match &mut self.source {
            Source::Rows(rows) => {
                self.pending.extend(rows.drain(..));
                self.exhausted = true;
            }
            Source::Feed(feed) => {
                // Boxed: the initial read of a feed is a stream itself.
                Box::pin(feed.fill(context, &mut self.pending, self.wait_for_changes)).await?;
                if self.pending.is_empty() {
                    self.idle = true;
                }
            }
            Source::FeedUnion(feeds) => loop {
                // What each feed has ready, without waiting on any one.
                for feed in feeds.iter_mut() {
                    feed.set_wait_for_changes(false);
                    while self.pending.len() < FETCH_ROWS {
                        match Box::pin(feed.next(context)).await? {
                            Some(row) => self.pending.push_back(row),
                            None => break,
                        }
                    }
                }
                if !self.pending.is_empty() {
                    break;
                }
                if !self.wait_for_changes {
                    self.idle = true;
                    break;
                }
                // Nothing yet: look again shortly. (A subscription has no
                // way to wait on several channels at once; this bounds the
                // delay a union adds to a change.)
                photondb_runtime::network::sleep(FEED_UNION_POLL).await;
            },
            Source::Fold(fold) => {
                // Pull rows until one emits something or the input ends.
                loop {
                    match Box::pin(fold.inner.next(context)).await? {
                        Some(row) => {
                            let previous = fold.accumulator.clone();
                            fold.accumulator = fold
                                .combine
                                .call(context, vec![previous.clone(), row.clone()])
                                .await?;
                            match fold
                                .emit
                                .call(context, vec![previous, row, fold.accumulator.clone()])
                                .await?
                            {
                                Datum::Array(items) => {
                                    let emitted = !items.is_empty();
                                    self.pending.extend(items);
                                    if emitted {
                                        return Ok(());
                                    }
                                }
                                other => return Err(other.wrong_type("ARRAY")),
                            }
                        }
                        None => {
                            if let Some(final_emit) = &fold.final_emit {
                                match final_emit
                                    .call(context, vec![fold.accumulator.clone()])
                                    .await?
                                {
                                    Datum::Array(items) => self.pending.extend(items),
                                    other => return Err(other.wrong_type("ARRAY")),
                                }
                            }
                            self.exhausted = true;
                            return Ok(());
                        }
                    }
                }
            }
            Source::Keys { table, keys } => {
                context.require_on_table(Permission::Read, table)?;
                let batch: Vec<Datum> = keys.drain(..keys.len().min(FETCH_ROWS)).collect();
                for key in batch {
                    if let Some(row) = super::write::get(&context.engine, table, &key).await? {
                        self.pending.push_back(row);
                    }
                }
                if keys.is_empty() {
                    self.exhausted = true;
                }
            }
            Source::Zip(zip) => {
                let (streams, function) = &mut **zip;
                let mut items = Vec::with_capacity(streams.len());
                for stream in streams.iter_mut() {
                    match Box::pin(stream.next(context)).await? {
                        Some(item) => items.push(item),
                        None => {
                            self.exhausted = true;
                            return Ok(());
                        }
                    }
                }
                self.pending.push_back(function.call(context, items).await?);
            }
            Source::Range { next, end } => {
                let stop = end.map_or(*next + FETCH_ROWS as i64, |end| {
                    end.min(*next + FETCH_ROWS as i64)
                });
                while *next < stop {
                    self.pending.push_back(Datum::Number(*next as f64));
                    *next += 1;
                }
                if end.is_some_and(|end| *next >= end) {
                    self.exhausted = true;
                }
            }
            Source::Table(read) => {
                let rows = read.next_batch(context, &rejects, wanted).await?;
                if rows.is_empty() && read.finished {
                    self.exhausted = true;
                }
                self.pending.extend(rows);
            }
            Source::IndexKeys(read) => loop {
                if read.current.is_none() {
                    let Some(key) = read.keys.pop_front() else {
                        self.exhausted = true;
                        break;
                    };
                    let encoded = photondb_datum::key::encode(&key);
                    read.current = Some(index_read_between(
                        context,
                        &read.table,
                        &read.index,
                        Bound::Included(encoded.clone()),
                        Bound::Included(encoded),
                    )?);
                }
                let current = read.current.as_mut().expect("a current read");
                let Source::Table(table_read) = &mut current.source else {
                    unreachable!("an index read is a table read")
                };
                let rows = table_read.next_batch(context, &rejects, wanted).await?;
                if rows.is_empty() && table_read.finished {
                    read.current = None;
                    continue;
                }
                self.pending.extend(rows);
                break;
            },
        }
        Ok(())
    }

    /// The next row that passes every operation, or `None` at the end.
    pub async fn next(&mut self, context: &Context) -> Result<Option<Datum>, ReqlError> {
        'rows: loop {
            self.budget.tick().await;
            if self.limit_reached() {
                return Ok(None);
            }
            if let Source::Feed(feed) = &self.source {
                feed.check_overflow(&mut self.pending);
            }
            let mut row = match self.pending.pop_front() {
                Some(row) => row,
                None if self.exhausted => return Ok(None),
                None if self.idle => {
                    self.idle = false;
                    return Ok(None);
                }
                None => {
                    self.refill(context).await?;
                    continue;
                }
            };
            for index in 0..self.operations.len() {
                match &self.operations[index] {
                    Operation::Filter { predicate, default } => {
                        if !filter_accepts(context, predicate, default.as_ref(), &row).await? {
                            continue 'rows;
                        }
                    }
                    Operation::Map(function) => row = function.call(context, vec![row]).await?,
                    Operation::Transform(transform) => row = transform.apply(context, row).await?,
                    Operation::WithFields(selectors) => {
                        if !super::sequence::has_selectors(&row, selectors)? {
                            continue 'rows;
                        }
                        row = super::sequence::pluck(&row, selectors)?;
                    }
                    Operation::Field(name) => match field_of(row, name)? {
                        Some(value) => row = value,
                        None => continue 'rows,
                    },
                    Operation::Skip(count) => {
                        if self.counters[index] < *count {
                            self.counters[index] += 1;
                            continue 'rows;
                        }
                    }
                    Operation::Limit(count) => {
                        if self.counters[index] >= *count {
                            return Ok(None);
                        }
                        self.counters[index] += 1;
                    }
                }
            }
            return Ok(Some(row));
        }
    }

    /// The filters a table read may apply to stored rows before decoding
    /// them: the leading filters, up to the first one that does not compile
    /// to an in-place predicate (a later one must not drop a row an earlier
    /// one would have raised an error on). A row they reject is one the
    /// interpreter would drop; rows they accept still go through every
    /// operation.
    fn leading_predicates(&self) -> Vec<StoredPredicate> {
        let mut predicates = Vec::new();
        for operation in &self.operations {
            let Operation::Filter { predicate, .. } = operation else {
                break;
            };
            match StoredPredicate::compile(predicate) {
                Some(compiled) => predicates.push(compiled),
                None => break,
            }
        }
        predicates
    }

    /// The table, key range and filters of a stream that reads a table
    /// through filters only (and has not started), for work that runs on
    /// the partitions themselves.
    pub fn table_filters(
        &self,
    ) -> Option<(TableConfig, Bound<Bytes>, Bound<Bytes>, Vec<Operation>)> {
        let Source::Table(read) = &self.source else {
            return None;
        };
        let TableRead {
            table,
            start,
            end,
            index: None,
            finished: false,
            partitions: None,
            ..
        } = &**read
        else {
            return None;
        };
        let only_filters = self
            .operations
            .iter()
            .all(|operation| matches!(operation, Operation::Filter { .. }));
        (only_filters && self.pending.is_empty()).then(|| {
            (
                table.clone(),
                start.clone(),
                end.clone(),
                self.operations.clone(),
            )
        })
    }

    /// Whether a row passes every one of `filters` (filter operations).
    pub async fn passes(
        context: &Context,
        filters: &[Operation],
        row: &Datum,
    ) -> Result<bool, ReqlError> {
        for filter in filters {
            if let Operation::Filter { predicate, default } = filter {
                if !filter_accepts(context, predicate, default.as_ref(), row).await? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn limit_reached(&self) -> bool {
        // Only a limit before any filter or skip is known to be final
        // without pulling another row.
        match self.operations.first() {
            Some(Operation::Limit(count)) => self.counters[0] >= *count,
            _ => false,
        }
    }

    /// Every remaining row, checked against `array_limit`.
    pub async fn collect(mut self, context: &Context) -> Result<Vec<Datum>, ReqlError> {
        self.check_finite()?;
        let mut rows = Vec::new();
        while let Some(row) = self.next(context).await? {
            if rows.len() >= context.array_limit {
                return Err(ReqlError::array_limit(context.array_limit));
            }
            rows.push(row);
        }
        Ok(rows)
    }

    pub async fn count(mut self, context: &Context) -> Result<u64, ReqlError> {
        self.check_finite()?;
        if self.operations.is_empty() {
            if let Source::Table(read) = &self.source {
                // The counts below read no row; the other ways check as they read.
                context.require_on_table(Permission::Read, &read.table)?;
                match &**read {
                    TableRead {
                        table,
                        start: Bound::Unbounded,
                        end: Bound::Unbounded,
                        index: None,
                        partitions: None,
                        ..
                    } => {
                        return Ok(context.engine.count(table.id).await?);
                    }
                    // Entries of an index range, counted where they are,
                    // without reading a document.
                    TableRead {
                        index:
                            Some(IndexRead {
                                config,
                                exact: None,
                                ..
                            }),
                        start,
                        end,
                        partitions: None,
                        ..
                    } => {
                        return Ok(context
                            .engine
                            .count_index_range(config.id, start.clone(), end.clone())
                            .await?);
                    }
                    _ => {}
                }
            }
        }
        // A count of a table (range) through filters runs on every
        // partition's own core at once; only the counts travel.
        if let Some((table, start, end, filters)) = self.table_filters() {
            // One group for every row: the grouped count does the work.
            let everything = vec![Callable::Constant(Datum::Null)];
            let counted = super::aggregate::grouped_on_partitions(
                context,
                &table,
                start,
                end,
                filters,
                everything,
                false,
                super::aggregate::Reduction::Count,
            )
            .await?;
            return Ok(match counted.first() {
                Some((_, Datum::Number(count))) => *count as u64,
                _ => 0,
            });
        }
        let mut count = 0;
        while self.next(context).await?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

impl TableRead {
    /// The next rows in order (empty once `finished`). Every partition
    /// whose batch is used up is read again, all at once; rows are merged
    /// while every partition still reading has some here (so the next key
    /// in order is known).
    async fn next_batch(
        &mut self,
        context: &Context,
        rejects: &[StoredPredicate],
        wanted: usize,
    ) -> Result<Vec<Datum>, ReqlError> {
        let mut rows = Vec::new();
        if self.finished {
            return Ok(rows);
        }
        context.require_on_table(Permission::Read, &self.table)?;
        let count = context.engine.partitions();
        let (start, end) = (self.start.clone(), self.end.clone());
        let cursors = self.partitions.get_or_insert_with(|| {
            (0..count)
                .map(|_| PartitionCursor {
                    start: start.clone(),
                    end: end.clone(),
                    buffer: VecDeque::new(),
                    done: false,
                })
                .collect()
        });
        let direction = if self.descending {
            Direction::Descending
        } else {
            Direction::Ascending
        };
        let needed: Vec<usize> = (0..cursors.len())
            .filter(|&index| cursors[index].buffer.is_empty() && !cursors[index].done)
            .collect();
        // Under a small `limit`, each partition holds about its share of
        // the rows in order (keys are spread by hash): ask each for twice
        // its share and a few more, and read again only a partition whose
        // rows run out before the limit does.
        let per_partition = if self.batch_rows < FETCH_ROWS {
            (self.batch_rows * 2 / count.max(1) as usize + 8).min(self.batch_rows)
        } else {
            FETCH_ROWS
        };
        let fetches = needed.iter().map(|&index| {
            let range = ScanRange {
                start: cursors[index].start.clone(),
                end: cursors[index].end.clone(),
                direction,
                limit: Some(per_partition),
            };
            let (engine, table, index_id) = (
                &context.engine,
                self.table.id,
                self.index.as_ref().map(|index| index.config.id),
            );
            async move {
                match index_id {
                    None => engine
                        .scan_partition(table, index as u32, range)
                        .await
                        .map(|rows| {
                            let fetched = rows.len();
                            (
                                fetched,
                                rows.into_iter()
                                    .map(|(key, document)| (key, document, false))
                                    .collect::<Vec<_>>(),
                            )
                        }),
                    Some(index_id) => engine
                        .scan_index_partition(table, index_id, index as u32, range)
                        .await
                        .map(|rows| {
                            let fetched = rows.len();
                            let rows = rows
                                .into_iter()
                                .map(|row| {
                                    let cut = photondb_storage::index::is_truncated(
                                        &row.entry,
                                        &row.primary,
                                    );
                                    // A row gone since its entry was read: an empty document, skipped below.
                                    (row.entry, row.document.unwrap_or_default(), cut)
                                })
                                .collect();
                            (fetched, rows)
                        }),
                }
            }
        });
        let fetched = photondb_runtime::join_all(fetches).await;
        for (index, result) in needed.into_iter().zip(fetched) {
            let (scanned, batch) = result?;
            let cursor = &mut cursors[index];
            // Fewer entries than asked for: the partition's range is read.
            cursor.done = scanned < per_partition;
            if let Some((last, _, _)) = batch.last() {
                if self.descending {
                    cursor.end = Bound::Excluded(last.clone());
                } else {
                    cursor.start = Bound::Excluded(last.clone());
                }
            } else {
                cursor.done = true;
            }
            cursor.buffer.extend(batch);
        }
        while rows.len() < wanted {
            if cursors
                .iter()
                .any(|cursor| cursor.buffer.is_empty() && !cursor.done)
            {
                break;
            }
            let candidates = (0..cursors.len()).filter(|&index| !cursors[index].buffer.is_empty());
            let next = if self.descending {
                candidates.max_by(|&a, &b| cursors[a].buffer[0].0.cmp(&cursors[b].buffer[0].0))
            } else {
                candidates.min_by(|&a, &b| cursors[a].buffer[0].0.cmp(&cursors[b].buffer[0].0))
            };
            let Some(index) = next else {
                self.finished = true;
                break;
            };
            let (_, value, cut) = cursors[index].buffer.pop_front().expect("a row");
            if value.is_empty() {
                continue;
            }
            if rejected_in_place(rejects, &value) {
                continue;
            }
            let row = document::decode(&value).map_err(ReqlError::unreadable)?;
            if cut {
                if let Some((index, function)) = self
                    .index
                    .as_ref()
                    .and_then(|index| Some((index, index.exact.as_ref()?)))
                {
                    let keys = match function.call(context, vec![row.clone()]).await {
                        Ok(value) => super::index::secondary_keys(value, index.config.multi),
                        Err(_) => Vec::new(),
                    };
                    let (start, end) = &index.bounds;
                    if !keys.iter().any(|key| within(key, start, end)) {
                        continue;
                    }
                }
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// How often a `union` of changefeeds looks for changes while none came.
const FEED_UNION_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Whether the leading filters reject a stored row without decoding it.
/// They are asked in order, and the first that cannot decide ends the
/// asking: the interpreter may raise an error there, which a later filter's
/// "no" must not hide.
fn rejected_in_place(rejects: &[StoredPredicate], value: &[u8]) -> bool {
    let Ok(stored) = document::DocumentRef::new(value) else {
        return false;
    };
    for predicate in rejects {
        match predicate.accepts(stored) {
            Some(true) => {}
            Some(false) => return true,
            None => return false,
        }
    }
    false
}

/// A field of a row of a sequence (`None`: the row lacks it).
fn field_of(row: Datum, name: &str) -> Result<Option<Datum>, ReqlError> {
    match row {
        Datum::Object(mut fields) => Ok(fields.remove(name)),
        other => Err(ReqlError::logic(format!(
            "Cannot perform get_field on a non-object non-sequence `{}`.",
            super::eval::pretty(&other)
        ))),
    }
}

/// A row through row-by-row operations (`filter`, `map`, `pluck`…):
/// `None` when a filter drops it.
pub async fn apply_operations(
    context: &Context,
    operations: &[Operation],
    mut row: Datum,
) -> Result<Option<Datum>, ReqlError> {
    for operation in operations {
        match operation {
            Operation::Filter { predicate, default } => {
                if !filter_accepts(context, predicate, default.as_ref(), &row).await? {
                    return Ok(None);
                }
            }
            Operation::Map(function) => row = function.call(context, vec![row]).await?,
            Operation::Transform(transform) => row = transform.apply(context, row).await?,
            Operation::WithFields(selectors) => {
                if !super::sequence::has_selectors(&row, selectors)? {
                    return Ok(None);
                }
                row = super::sequence::pluck(&row, selectors)?;
            }
            Operation::Field(name) => match field_of(row, name)? {
                Some(value) => row = value,
                None => return Ok(None),
            },
            Operation::Skip(_) | Operation::Limit(_) => {}
        }
    }
    Ok(Some(row))
}

/// A read of the rows whose secondary key in `index` lies between `start`
/// and `end` (key encodings).
pub fn index_read_between(
    context: &Context,
    table: &TableConfig,
    index: &IndexConfig,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
) -> Result<Stream, ReqlError> {
    let (entry_start, entry_end, cut) = entry_bounds(start.clone(), end.clone());
    let exact = if cut {
        Some(Box::new(super::index::compile_function(
            &index.function,
            context,
        )?))
    } else {
        None
    };
    Ok(Stream::index_range(
        table.clone(),
        IndexRead {
            config: index.clone(),
            bounds: (start, end),
            exact,
        },
        entry_start,
        entry_end,
    ))
}

/// `filter(predicate, default=…)` on one row: a missing field counts as the
/// default (evaluated only then, and able to rethrow), or as false.
async fn filter_accepts(
    context: &Context,
    predicate: &Callable,
    default: Option<&Function>,
    row: &Datum,
) -> Result<bool, ReqlError> {
    match predicate.accepts(context, row).await {
        Ok(accepted) => Ok(accepted),
        Err(error) if error.class == ErrorClass::NonExistence => match default {
            Some(handler) => {
                let mut handler_context = context.child();
                handler_context.caught = Some(Some(error));
                Ok(super::eval::truthy(
                    &handler.call(&handler_context, Vec::new()).await?,
                ))
            }
            None => Ok(false),
        },
        Err(error) => Err(error),
    }
}
