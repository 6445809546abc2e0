//! Changefeeds: `changes()` on a table, a document (`get`), a range
//! (`between`), keys (`get_all`), and those through `filter`/`map`/`pluck`.
//!
//! A feed subscribes to its table's changes on every shard before it reads
//! anything (so no change between the initial read and the first change is
//! lost), then turns each row change into RethinkDB's change document:
//! `{old_val, new_val}`, where each side is the row as the selection and
//! the operations before `changes()` make it, or null when the row is not
//! (or no longer) selected. Changes that select nothing on either side are
//! not sent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use photondb_datum::{document, key, Datum, Object};
use photondb_runtime::{FeedEvent, Subscription};
use photondb_storage::catalog::TableConfig;

use super::error::{Frame, ReqlError};
use super::eval::{arity, Context, TypeMismatch, Value};
use super::function::Function;
use super::stream::{within, Operation, Source, Stream};
use super::term::Term;
use super::term_type as kind;

/// The longest a squashing feed holds a batch back: RethinkDB's default
/// `max_batch_seconds`, which ends a batch whatever `squash` says.
const SQUASH_WAIT_CAP_SECONDS: f64 = 0.5;

/// RethinkDB's default `changefeed_queue_size`.
pub const DEFAULT_QUEUE_SIZE: usize = 100_000;

/// Response notes (`ql2.proto` `Response.ResponseNote`): they pick the
/// driver's cursor class.
pub const SEQUENCE_FEED: u64 = 1;
pub const ATOM_FEED: u64 = 2;
pub const ORDER_BY_LIMIT_FEED: u64 = 3;
pub const UNIONED_FEED: u64 = 4;
pub const INCLUDES_STATES: u64 = 5;

/// Which rows of the table a feed follows.
#[derive(Clone, Debug)]
enum Selection {
    All,
    /// One document, by encoded primary key.
    Point(Vec<u8>),
    /// A primary key range.
    PrimaryRange(Bound<Bytes>, Bound<Bytes>),
    /// Primary keys (`get_all`).
    PrimaryKeys(BTreeSet<Vec<u8>>),
    /// Rows with a secondary key in a range, or among keys.
    Index {
        function: Function,
        multi: bool,
        range: Option<(Bound<Vec<u8>>, Bound<Vec<u8>>)>,
        keys: BTreeSet<Vec<u8>>,
    },
}

impl Selection {
    async fn selects(&self, context: &Context, primary: &[u8], row: &Datum) -> bool {
        match self {
            Selection::All => true,
            Selection::Point(key) => key.as_slice() == primary,
            Selection::PrimaryRange(start, end) => within(primary, start, end),
            Selection::PrimaryKeys(keys) => keys.contains(primary),
            Selection::Index {
                function,
                multi,
                range,
                keys,
            } => {
                let secondary = match function.call(context, vec![row.clone()]).await {
                    Ok(value) => super::index::secondary_keys(value, *multi),
                    Err(_) => return false,
                };
                secondary.iter().any(|key| match range {
                    Some((start, end)) => within(key, start, end),
                    None => keys.contains(key),
                })
            }
        }
    }
}

/// How changes that arrive together are sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Squash {
    /// Every change, as it happened.
    No,
    /// Changes to one row waiting together become one.
    Yes,
    /// Wait this long after a change for more, then squash.
    Seconds(f64),
}

/// A running changefeed: the source of a feed stream.
#[derive(Clone, Debug)]
pub struct FeedSource {
    subscription: Arc<Subscription>,
    selection: Selection,
    /// The operations written before `changes()`, applied to each side.
    operations: Vec<Operation>,
    /// The initial values still to send (`include_initial`), read lazily.
    initial: Option<Stream>,
    point_initial: Option<Datum>,
    include_states: bool,
    include_types: bool,
    /// `include_offsets`: positions in an `order_by.limit` feed's rows.
    include_offsets: bool,
    squash: Squash,
    /// Not yet sent: `{state: 'initializing'}` / `{state: 'ready'}`.
    initializing_due: bool,
    ready_due: bool,
    atom: bool,
    /// Changes held unread (in the subscription's queue and read from it
    /// but not sent) before later ones are dropped.
    queue_size: usize,
    /// `order_by(index=…).limit(n).changes()`: the rows in the limit now.
    top: Option<Box<TopRows>>,
}

/// The rows of an `order_by(index=…).limit(n)` feed: after changes to the
/// table, the query runs again and the difference is sent (a row that
/// leaves and one that enters the limit together form one change).
#[derive(Clone, Debug)]
struct TopRows {
    query: Stream,
    primary_key: String,
    rows: Vec<Datum>,
    /// The initial rows still to send (`include_initial`).
    initial_due: bool,
}

impl TopRows {
    async fn read(&self, context: &Context) -> Result<Vec<Datum>, ReqlError> {
        Box::pin(self.query.clone().collect(context)).await
    }

    fn key_of(&self, row: &Datum) -> Option<Datum> {
        match row {
            Datum::Object(fields) => fields.get(&self.primary_key).cloned(),
            _ => None,
        }
    }

    /// The changes that take the limit from its rows to `now`, each with
    /// the old row's position among the rows before and the new row's
    /// among the rows now (`include_offsets`).
    fn difference(
        &self,
        now: &[Datum],
    ) -> Vec<(Option<Datum>, Option<Datum>, Option<usize>, Option<usize>)> {
        let position = |rows: &[Datum], row: &Option<Datum>| {
            let key = row.as_ref().and_then(|row| self.key_of(row))?;
            rows.iter()
                .position(|candidate| self.key_of(candidate).as_ref() == Some(&key))
        };
        self.pairs(now)
            .into_iter()
            .map(|(old, new)| {
                let (old_offset, new_offset) = (position(&self.rows, &old), position(now, &new));
                (old, new, old_offset, new_offset)
            })
            .collect()
    }

    fn pairs(&self, now: &[Datum]) -> Vec<(Option<Datum>, Option<Datum>)> {
        let before: BTreeMap<Vec<u8>, &Datum> = self
            .rows
            .iter()
            .filter_map(|row| self.key_of(row).map(|key| (key::encode(&key), row)))
            .collect();
        let after: BTreeMap<Vec<u8>, &Datum> = now
            .iter()
            .filter_map(|row| self.key_of(row).map(|key| (key::encode(&key), row)))
            .collect();
        let mut changed = Vec::new();
        let mut left: Vec<&Datum> = Vec::new();
        let mut entered: Vec<&Datum> = Vec::new();
        for (key, row) in &before {
            match after.get(key) {
                Some(now_row) if now_row != row => {
                    changed.push((Some((*row).clone()), Some((*now_row).clone())))
                }
                Some(_) => {}
                None => left.push(row),
            }
        }
        for row in now {
            if let Some(key) = self.key_of(row) {
                if !before.contains_key(&key::encode(&key)) {
                    entered.push(row);
                }
            }
        }
        let pairs = left.len().max(entered.len());
        for index in 0..pairs {
            changed.push((
                left.get(index).map(|row| (*row).clone()),
                entered.get(index).map(|row| (*row).clone()),
            ));
        }
        changed
    }
}

impl FeedSource {
    fn new(subscription: Subscription, selection: Selection, options: &Options) -> FeedSource {
        FeedSource {
            subscription: Arc::new(subscription),
            selection,
            operations: Vec::new(),
            initial: None,
            point_initial: None,
            include_states: options.include_states,
            include_types: options.include_types,
            include_offsets: options.include_offsets,
            squash: options.squash,
            initializing_due: options.include_states && options.include_initial,
            ready_due: options.include_states,
            atom: false,
            queue_size: options.queue_size,
            top: None,
        }
    }

    /// When changes were dropped because the queue was full: what the
    /// subscriber holds unsent goes too, and the error comes first (as
    /// RethinkDB clears a full changefeed queue).
    pub fn check_overflow(&self, pending: &mut VecDeque<Datum>) {
        let skipped = self.subscription.take_overflow();
        if skipped == 0 {
            return;
        }
        let dropped = pending.len() as u64;
        pending.clear();
        pending.push_back(overflow_error(skipped + dropped));
    }

    /// The response notes of this feed.
    pub fn notes(&self) -> Vec<u64> {
        let kind = if self.atom {
            ATOM_FEED
        } else if self.top.is_some() {
            ORDER_BY_LIMIT_FEED
        } else {
            SEQUENCE_FEED
        };
        let mut notes = vec![kind];
        if self.include_states {
            notes.push(INCLUDES_STATES);
        }
        notes
    }

    fn state(&self, state: &str) -> Datum {
        let mut fields = Object::new();
        fields.insert("state".into(), Datum::String(state.into()));
        if self.include_types {
            fields.insert("type".into(), Datum::String("state".into()));
        }
        Datum::Object(fields)
    }

    fn initial_document(&self, row: Datum) -> Datum {
        let mut fields = Object::new();
        fields.insert("new_val".into(), row);
        if self.include_types {
            fields.insert("type".into(), Datum::String("initial".into()));
        }
        Datum::Object(fields)
    }

    /// Moves what is ready into `out`. With `wait`, waits until at least
    /// one row is there; without, returns what is ready now (maybe none).
    pub async fn fill(
        &mut self,
        context: &Context,
        out: &mut VecDeque<Datum>,
        wait: bool,
    ) -> Result<(), ReqlError> {
        if self.initializing_due {
            self.initializing_due = false;
            out.push_back(self.state("initializing"));
        }
        if let Some(top) = self.top.as_mut().filter(|top| top.initial_due) {
            top.initial_due = false;
            let rows = top.rows.clone();
            for (position, row) in rows.into_iter().enumerate() {
                let mut document = self.initial_document(row);
                if let (true, Datum::Object(fields)) = (self.include_offsets, &mut document) {
                    fields.insert("new_offset".into(), Datum::Number(position as f64));
                }
                out.push_back(document);
            }
        }
        if let Some(row) = self.point_initial.take() {
            let document = self.initial_document(row);
            out.push_back(document);
        }
        if let Some(mut initial) = self.initial.take() {
            // A batch of initial values at a time: the table may be large.
            let mut ended = false;
            while out.len() < 256 {
                match initial.next(context).await? {
                    Some(row) => {
                        let document = self.initial_document(row);
                        out.push_back(document);
                    }
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if !ended {
                self.initial = Some(initial);
                return Ok(());
            }
        }
        if self.ready_due {
            self.ready_due = false;
            out.push_back(self.state("ready"));
        }
        let before = out.len();
        loop {
            let mut events = Vec::new();
            if wait && out.len() == before {
                events.push(self.subscription.next().await);
                if let Squash::Seconds(seconds) = self.squash {
                    // RethinkDB ends a batch by its deadline even while
                    // squashing: the wait is capped by the batch time.
                    photondb_runtime::network::sleep(std::time::Duration::from_secs_f64(
                        seconds.min(SQUASH_WAIT_CAP_SECONDS),
                    ))
                    .await;
                }
            }
            // Rows read but not yet sent count against the queue too: a
            // slow client cannot make the server buffer without bound.
            let room = self.queue_size.saturating_sub(out.len()).clamp(1, 1024);
            while events.len() < room {
                match self.subscription.try_next() {
                    Some(event) => events.push(event),
                    None => break,
                }
            }
            if events.is_empty() {
                return Ok(());
            }
            if self.top.is_some() {
                self.top_changes(context, events, out).await?;
                if !wait || out.len() > before {
                    return Ok(());
                }
                continue;
            }
            let events = if self.squash == Squash::No {
                events
            } else {
                squash(events)
            };
            for event in events {
                match event {
                    FeedEvent::Skipped(count) => out.push_back(overflow_error(count)),
                    FeedEvent::Change(change) => {
                        if let Some(document) = self
                            .change_document(
                                context,
                                &change.key,
                                change.old.as_ref(),
                                change.new.as_ref(),
                            )
                            .await?
                        {
                            out.push_back(document);
                        }
                    }
                }
            }
            if !wait || out.len() > before {
                return Ok(());
            }
        }
    }

    /// An `order_by.limit` feed after `events`: the query again, and what
    /// changed in the limit.
    async fn top_changes(
        &mut self,
        context: &Context,
        events: Vec<FeedEvent>,
        out: &mut VecDeque<Datum>,
    ) -> Result<(), ReqlError> {
        let mut changed = false;
        for event in events {
            match event {
                FeedEvent::Skipped(count) => out.push_back(overflow_error(count)),
                FeedEvent::Change(_) => changed = true,
            }
        }
        if !changed {
            return Ok(());
        }
        let top = self.top.as_mut().expect("an order_by.limit feed");
        let now = top.read(context).await?;
        let differences = top.difference(&now);
        top.rows = now;
        for (old, new, old_offset, new_offset) in differences {
            let mut document = self.change(old, new);
            if self.include_offsets {
                let offset = |position: Option<usize>| {
                    position.map_or(Datum::Null, |position| Datum::Number(position as f64))
                };
                if let Datum::Object(fields) = &mut document {
                    fields.insert("old_offset".into(), offset(old_offset));
                    fields.insert("new_offset".into(), offset(new_offset));
                }
            }
            out.push_back(document);
        }
        Ok(())
    }

    /// RethinkDB's change document: `{old_val, new_val}` (null for a side
    /// that is absent), with its `type` when asked for.
    fn change(&self, old: Option<Datum>, new: Option<Datum>) -> Datum {
        let kind = match (&old, &new) {
            (None, _) => "add",
            (_, None) => "remove",
            _ => "change",
        };
        let mut fields = Object::new();
        fields.insert("old_val".into(), old.unwrap_or(Datum::Null));
        fields.insert("new_val".into(), new.unwrap_or(Datum::Null));
        if self.include_types {
            fields.insert("type".into(), Datum::String(kind.into()));
        }
        Datum::Object(fields)
    }

    /// One side of a change: the row as the feed shows it, if selected.
    async fn side(
        &self,
        context: &Context,
        primary: &[u8],
        stored: Option<&Bytes>,
    ) -> Result<Option<Datum>, ReqlError> {
        let Some(stored) = stored else {
            return Ok(None);
        };
        let row = document::decode(stored).map_err(ReqlError::unreadable)?;
        if !self.selection.selects(context, primary, &row).await {
            return Ok(None);
        }
        // A row the operations before `changes()` fail on is not in the
        // feed's selection (RethinkDB drops the change, it does not end
        // the feed).
        Ok(
            super::stream::apply_operations(context, &self.operations, row)
                .await
                .unwrap_or(None),
        )
    }

    async fn change_document(
        &self,
        context: &Context,
        primary: &[u8],
        old: Option<&Bytes>,
        new: Option<&Bytes>,
    ) -> Result<Option<Datum>, ReqlError> {
        let old = self.side(context, primary, old).await?;
        let new = self.side(context, primary, new).await?;
        if old.is_none() && new.is_none() {
            return Ok(None);
        }
        Ok(Some(self.change(old, new)))
    }
}

fn overflow_error(skipped: u64) -> Datum {
    let mut fields = Object::new();
    fields.insert(
        "error".into(),
        Datum::String(format!(
            "Changefeed cache over array size limit, skipped {skipped} elements."
        )),
    );
    Datum::Object(fields)
}

/// Changes to one row that arrived together become one: the first old
/// value and the last new value, at the row's first place. A row back
/// where it started has no change left.
fn squash(events: Vec<FeedEvent>) -> Vec<FeedEvent> {
    let mut squashed: Vec<FeedEvent> = Vec::with_capacity(events.len());
    let mut position: BTreeMap<(photondb_storage::TableId, Bytes), usize> = BTreeMap::new();
    for event in events {
        match event {
            FeedEvent::Change(change) => match position.get(&(change.table, change.key.clone())) {
                Some(&at) => {
                    if let FeedEvent::Change(earlier) = &mut squashed[at] {
                        earlier.new = change.new;
                    }
                }
                None => {
                    position.insert((change.table, change.key.clone()), squashed.len());
                    squashed.push(FeedEvent::Change(change));
                }
            },
            skipped => squashed.push(skipped),
        }
    }
    squashed
        .retain(|event| !matches!(event, FeedEvent::Change(change) if change.old == change.new));
    squashed
}

struct Options {
    squash: Squash,
    include_initial: bool,
    include_states: bool,
    include_types: bool,
    include_offsets: bool,
    queue_size: usize,
}

async fn options(
    context: &Context,
    optargs: &BTreeMap<String, Term>,
) -> Result<Options, ReqlError> {
    let flag = |name: &'static str| async move {
        match context.optional_datum(optargs, name).await? {
            None => Ok(false),
            Some(Datum::Bool(flag)) => Ok(flag),
            Some(other) => Err(other
                .wrong_type("BOOL")
                .within(Frame::Optional(name.into()))),
        }
    };
    let squash = match context.optional_datum(optargs, "squash").await? {
        None | Some(Datum::Bool(false)) => Squash::No,
        Some(Datum::Bool(true)) => Squash::Yes,
        Some(Datum::Number(seconds)) if seconds < 0.0 => {
            return Err(ReqlError::logic(
                "Expected BOOL or a positive NUMBER but found a negative NUMBER.",
            ))
        }
        Some(Datum::Number(seconds)) if seconds == 0.0 => Squash::Yes,
        Some(Datum::Number(seconds)) => Squash::Seconds(seconds.min(3600.0)),
        Some(other) => {
            return Err(ReqlError::logic(format!(
                "Expected BOOL or NUMBER but found {}.",
                other.type_name()
            )))
        }
    };
    let queue_size = match context
        .optional_datum(optargs, "changefeed_queue_size")
        .await?
    {
        None => context.changefeed_queue_size,
        Some(Datum::Number(size)) if size >= 1.0 => size as usize,
        Some(Datum::Number(size)) => {
            return Err(ReqlError::logic(format!(
                "Illegal changefeed queue size `{size}`."
            )))
        }
        Some(other) => return Err(other.wrong_type("NUMBER")),
    };
    Ok(Options {
        squash,
        include_initial: flag("include_initial").await?,
        include_states: flag("include_states").await?,
        include_types: flag("include_types").await?,
        include_offsets: flag("include_offsets").await?,
        queue_size,
    })
}

/// `changes()`.
pub async fn evaluate(
    context: &Context,
    args: &[Term],
    optargs: &BTreeMap<String, Term>,
) -> Result<Value, ReqlError> {
    arity(args, 1, 1)?;
    let options = options(context, optargs).await?;
    if !reads_table_only(&args[0]) {
        return Err(ReqlError::logic(
            "Cannot call `changes` after a non-deterministic function.",
        ));
    }
    // `get(key).changes()`: a point feed, whether or not the row exists.
    if let Term::Call {
        term_type: kind::GET,
        args: get_args,
        ..
    } = &args[0]
    {
        if get_args.len() == 2 {
            if options.include_offsets {
                return Err(ReqlError::logic(
                    "Cannot include offsets for point subscriptions.",
                ));
            }
            let table = context
                .table_argument(get_args, 0)
                .await
                .map_err(|error| error.within(Frame::Position(0)))?;
            context.require_on_table(super::permission::Permission::Read, &table)?;
            let key = context
                .datum_argument(get_args, 1)
                .await
                .map_err(|error| error.within(Frame::Position(0)))?;
            let encoded = super::eval::primary_key_bytes(&key)?;
            let subscription = context
                .engine
                .subscribe(table.id, options.queue_size)
                .await?;
            let current = super::write::get(&context.engine, &table, &key).await?;
            let point_initial = options
                .include_initial
                .then(|| current.unwrap_or(Datum::Null));
            return Ok(feed_value(FeedSource {
                point_initial,
                atom: true,
                ..FeedSource::new(subscription, Selection::Point(encoded), &options)
            }));
        }
    }
    let stream = match context.argument(args, 0).await? {
        Value::Table(table) => Stream::table(table, Bound::Unbounded, Bound::Unbounded),
        Value::Stream(stream) => stream,
        other => {
            return Err(ReqlError::logic(format!(
                "Cannot call `changes` on a value of type {}.",
                other.type_name()
            ))
            .within(Frame::Position(0)))
        }
    };
    let (table, selection) = selection_of(context, &stream)?;
    context.require_on_table(super::permission::Permission::Read, &table)?;
    if let ([Operation::Limit(_)], Source::Table(read)) =
        (stream.operations.as_slice(), &stream.source)
    {
        if read.ordered {
            // `order_by(index=…).limit(n)`: follow the rows in the limit.
            let subscription = context
                .engine
                .subscribe(table.id, options.queue_size)
                .await?;
            let mut top = TopRows {
                query: stream.clone(),
                primary_key: table.primary_key.clone(),
                rows: Vec::new(),
                initial_due: options.include_initial,
            };
            top.rows = top.read(context).await?;
            return Ok(feed_value(FeedSource {
                top: Some(Box::new(top)),
                ..FeedSource::new(subscription, Selection::All, &options)
            }));
        }
    }
    if stream
        .operations
        .iter()
        .any(|operation| matches!(operation, Operation::Skip(_) | Operation::Limit(_)))
    {
        return Err(ReqlError::logic("Cannot call `changes` on a `skip` or `limit` (only `order_by(index=…).limit(n)` has a changefeed)."));
    }
    if options.include_offsets {
        // Only an `order_by.limit` feed has positions.
        return Err(ReqlError::logic(
            "Cannot include offsets for range subscriptions.",
        ));
    }
    let subscription = context
        .engine
        .subscribe(table.id, options.queue_size)
        .await?;
    let operations = stream.operations.clone();
    let initial = options.include_initial.then_some(stream);
    Ok(feed_value(FeedSource {
        operations,
        initial,
        ..FeedSource::new(subscription, selection, &options)
    }))
}

/// Whether a term only reads a table (`table`, `between`, `get_all`,
/// `filter` with deterministic functions…): `r.table` itself is not
/// deterministic for writes, but a feed may follow it.
fn reads_table_only(term: &Term) -> bool {
    match term {
        Term::Call {
            term_type: kind::TABLE | kind::DB,
            ..
        } => true,
        Term::Call { args, optargs, .. } => {
            let this_ok = !matches!(
                term,
                Term::Call {
                    term_type: kind::JAVASCRIPT | kind::HTTP | kind::RANDOM,
                    ..
                }
            ) && !matches!(term, Term::Call { term_type: kind::UUID, args, .. } if args.is_empty());
            this_ok && args.iter().all(reads_table_only) && optargs.values().all(reads_table_only)
        }
        _ => true,
    }
}

fn feed_value(source: FeedSource) -> Value {
    Value::Stream(Stream::from_source(Source::Feed(Box::new(source))))
}

/// The table and rows a stream reads, as a feed follows them.
fn selection_of(context: &Context, stream: &Stream) -> Result<(TableConfig, Selection), ReqlError> {
    match &stream.source {
        Source::Table(read) => {
            let selection = match &read.index {
                None if matches!((&read.start, &read.end), (Bound::Unbounded, Bound::Unbounded)) => Selection::All,
                None => Selection::PrimaryRange(read.start.clone(), read.end.clone()),
                Some(index) => Selection::Index {
                    function: super::index::compile_function(&index.config.function, context)?,
                    multi: index.config.multi,
                    range: Some(index.bounds.clone()),
                    keys: BTreeSet::new(),
                },
            };
            Ok((read.table.clone(), selection))
        }
        Source::Keys { table, keys } => {
            let keys = keys.iter().map(super::eval::primary_key_bytes).collect::<Result<_, _>>()?;
            Ok((table.clone(), Selection::PrimaryKeys(keys)))
        }
        Source::IndexKeys(read) => Ok((
            read.table.clone(),
            Selection::Index {
                function: super::index::compile_function(&read.index.function, context)?,
                multi: read.index.multi,
                range: None,
                keys: read.keys.iter().map(key::encode).collect(),
            },
        )),
        _ => Err(ReqlError::logic("Cannot call `changes` on this sequence: only tables, `get`, `between`, `get_all` and their `filter`, `map` and `pluck` have changefeeds.")),
    }
}
