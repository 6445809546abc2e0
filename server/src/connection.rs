//! One client connection: handshake, then queries answered by token.
//!
//! After the handshake the connection is split: this task reads query
//! frames and runs each query as a task of its own on the connection's
//! shard; a writer task sends the answers in the order they finish. At most
//! `MAX_QUERIES_IN_FLIGHT` run at once; past that, reading waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use photondb_datum::json::{to_json, write_json};
use photondb_datum::Datum;
use photondb_runtime::network::{spawn_local, Connection, ConnectionWriter};
use photondb_runtime::Engine;
use photondb_storage::Durability;
use serde_json::{json, Value as Json};

use crate::protocol::frame::{self, query_type, response_type, MAX_QUERY_BYTES};
use crate::protocol::handshake;
use crate::reql::error::{ErrorClass, ReqlError};
use crate::reql::eval::{Context, TypeMismatch, Value};
use crate::reql::stream::Stream;
use crate::reql::term::Term;
use crate::transport::Transport;

/// RethinkDB's global optional arguments; anything else is refused.
const GLOBAL_OPTARGS: &[&str] = &[
    "db",
    "noreply",
    "durability",
    "read_mode",
    "profile",
    "array_limit",
    "time_format",
    "binary_format",
    "group_format",
    "max_batch_rows",
    "max_batch_bytes",
    "max_batch_seconds",
    "min_batch_rows",
    "first_batch_scaledown_factor",
    "use_outdated",
    "right_bound",
    "left_bound",
    "return_changes",
    "changefeed_queue_size",
];

/// Queries of one connection running at once (RethinkDB allows 1,024).
const MAX_QUERIES_IN_FLIGHT: usize = 1024;

/// When a batch of a stream is full, from the query's global optargs; the
/// defaults are RethinkDB's.
#[derive(Clone, Copy)]
pub struct BatchLimits {
    rows: usize,
    bytes: usize,
    /// A batch is sent once it has one row and this much time has passed,
    /// so a slow filter does not keep the client waiting for a full batch.
    time: std::time::Duration,
    /// The first batch is this many times smaller, so the first rows come
    /// back fast.
    first_scaledown: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            rows: usize::MAX,
            bytes: 1 << 20,
            time: std::time::Duration::from_millis(500),
            first_scaledown: 4,
        }
    }
}

impl BatchLimits {
    async fn from_optargs(
        context: &Context,
        global: &std::collections::BTreeMap<String, Term>,
    ) -> Result<BatchLimits, ReqlError> {
        let mut limits = BatchLimits::default();
        let positive = |name: &'static str, value: Datum| match value {
            Datum::Number(number) if number > 0.0 => Ok(number),
            Datum::Number(_) => Err(ReqlError::logic(format!("`{name}` must be positive."))),
            other => Err(other.wrong_type("NUMBER")),
        };
        if let Some(value) = context.optional_datum(global, "max_batch_rows").await? {
            limits.rows = positive("max_batch_rows", value)?.max(1.0) as usize;
        }
        if let Some(value) = context.optional_datum(global, "max_batch_bytes").await? {
            limits.bytes = positive("max_batch_bytes", value)?.max(1.0) as usize;
        }
        if let Some(value) = context.optional_datum(global, "max_batch_seconds").await? {
            limits.time = std::time::Duration::from_secs_f64(
                positive("max_batch_seconds", value)?.min(86_400.0),
            );
        }
        if let Some(value) = context
            .optional_datum(global, "first_batch_scaledown_factor")
            .await?
        {
            limits.first_scaledown =
                positive("first_batch_scaledown_factor", value)?.max(1.0) as usize;
        }
        Ok(limits)
    }
}

/// A stream answered in batches; it keeps the query's context so that
/// functions in it can run on CONTINUE.
struct Cursor {
    stream: Stream,
    context: Context,
    limits: BatchLimits,
}

/// What every connection shares with the shutdown path: whether the server
/// is draining, and how many queries are running.
#[derive(Default)]
pub struct Drain {
    draining: AtomicBool,
    running: AtomicUsize,
}

impl Drain {
    /// From now on, queries that arrive are refused; those running finish.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Counts an open driver connection in the metrics until dropped.
struct ConnectionCount;

impl ConnectionCount {
    fn new() -> ConnectionCount {
        crate::metrics::metrics().driver_connections.inc();
        ConnectionCount
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        crate::metrics::metrics().driver_connections.dec();
    }
}

/// Counts a query as running until dropped.
struct Running(Arc<Drain>);

impl Running {
    fn new(drain: &Arc<Drain>) -> Running {
        drain.running.fetch_add(1, Ordering::SeqCst);
        Running(drain.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

pub async fn serve(connection: Connection, engine: Engine, drain: Arc<Drain>) {
    let peer = connection.peer_address();
    let mut transport = Transport::new(connection);
    let user = match handshake::run(&mut transport, &engine).await {
        Ok(user) => user,
        Err(failure) => {
            tracing::debug!(?peer, ?failure, "handshake failed");
            return;
        }
    };
    tracing::debug!(?peer, user, "client connected");
    let _connected = ConnectionCount::new();
    let (mut reader, writer) = transport.split();
    let (answers, outbox) = flume::unbounded::<Vec<u8>>();
    spawn_local(write_answers(writer, outbox));
    // A bounded channel as a semaphore: a slot per query in flight.
    let (slots, freed) = flume::bounded::<()>(MAX_QUERIES_IN_FLIGHT);
    let session = Rc::new(Session {
        engine,
        cursors: RefCell::new(HashMap::new()),
        waiting_feeds: RefCell::new(HashMap::new()),
        drain: drain.clone(),
        user: Arc::from(user.as_str()),
    });
    loop {
        let Ok(header) = reader.read_exact(frame::HEADER_BYTES).await else {
            break;
        };
        let (token, length) = frame::parse_header(&header.try_into().expect("12 bytes"));
        if length >= MAX_QUERY_BYTES {
            let message = format!(
                "Query size ({length}) greater than maximum ({}).",
                MAX_QUERY_BYTES - 1
            );
            let _ = answers.send(frame::encode_response(token, &client_error(&message)));
            break;
        }
        let Ok(body) = reader.read_exact(length).await else {
            break;
        };
        // Parsed once, here: the reader must see NOREPLY_WAIT itself.
        let query = parse_query(body);
        if is_noreply_wait(&query) {
            // Every query read before this one has finished once all slots
            // can be taken; then give them back.
            for _ in 0..MAX_QUERIES_IN_FLIGHT {
                let _ = slots.send_async(()).await;
            }
            for _ in 0..MAX_QUERIES_IN_FLIGHT {
                let _ = freed.try_recv();
            }
            let _ = answers.send(frame::encode_response(
                token,
                &json!({ "t": response_type::WAIT_COMPLETE, "r": [] }),
            ));
            continue;
        }
        if drain.draining.load(Ordering::SeqCst) {
            // Shutting down: what runs finishes, nothing new starts. The
            // query did not run, so it is safe for the client to retry it
            // elsewhere (RethinkDB's OpFailed).
            let refused =
                ReqlError::op_failed("The server is shutting down; the query was not run.");
            let _ = answers.send(frame::encode_response(token, &refused.to_response()));
            continue;
        }
        // A CONTINUE takes no slot: it is bounded by the cursors open, and
        // NOREPLY_WAIT must not wait for a changefeed waiting for changes.
        let continuing = is_continue(&query);
        if !continuing && slots.send_async(()).await.is_err() {
            break;
        }
        let running = Running::new(&drain);
        let (session, answers, freed) = (session.clone(), answers.clone(), freed.clone());
        spawn_local(async move {
            if let Some(answer) = session.handle(token, query).await {
                let _ = answers.send(answer.encode(token));
            }
            if !continuing {
                let _ = freed.try_recv();
            }
            drop(running);
        });
    }
    // Feeds waiting for changes answer no one now: end their waits, and
    // drop every cursor (and with them their subscriptions).
    for (_, stop) in session.waiting_feeds.borrow_mut().drain() {
        let _ = stop.try_send(());
    }
    session.cursors.borrow_mut().clear();
    tracing::debug!(?peer, "client disconnected");
}

/// How deep a query may nest arrays and objects. Deeper JSON is refused
/// before it is parsed, so neither the parser nor the evaluator can recurse
/// their way through a shard's stack on a hostile query.
const MAX_QUERY_DEPTH: usize = 1024;

/// A query frame, read once: its JSON, and for a START the term, read
/// straight from simd-json's tape (in the JSON its place holds `null`).
#[derive(Debug)]
struct Query {
    json: Json,
    term: Option<Result<Term, ReqlError>>,
}

/// Parses a query frame's JSON with simd-json.
fn parse_query(mut body: Vec<u8>) -> Result<Query, String> {
    if nesting_depth(&body) > MAX_QUERY_DEPTH {
        return Err(format!("Query is nested too deeply (more than {MAX_QUERY_DEPTH} levels of arrays and objects)."));
    }
    PARSE_BUFFERS.with(|buffers| {
        let mut buffers = buffers.borrow_mut();
        let parsed = simd_json::to_tape_with_buffers(&mut body, &mut buffers)
            .map(|tape| read_query(&tape.0))
            .map_err(|error| format!("Failed to parse query: {error}."));
        // Kept for the next query (a bulk insert's megabytes would otherwise
        // be fresh, page-faulting memory every time), unless one huge query
        // grew them.
        if body.len() > MAX_KEPT_PARSE_INPUT {
            *buffers = simd_json::Buffers::default();
        }
        parsed
    })
}

/// A query from its tape: the term of a START is read as a term, the rest
/// (small: the query type, token options) as JSON.
fn read_query(nodes: &[simd_json::Node]) -> Query {
    use crate::reql::term::tape;
    let is_start = matches!(nodes[0], simd_json::Node::Array { .. })
        && tape::children(nodes).next().is_some_and(|kind| {
            matches!(kind[0], simd_json::Node::Static(simd_json::StaticNode::U64(kind))
                if kind == query_type::START)
        });
    if !is_start {
        return Query {
            json: tape::to_json(nodes),
            term: None,
        };
    }
    let mut parts = Vec::new();
    let mut term = None;
    for (index, part) in tape::children(nodes).enumerate() {
        if index == 1 {
            term = Some(tape::term(part));
            parts.push(Json::Null);
        } else {
            parts.push(tape::to_json(part));
        }
    }
    Query {
        json: Json::Array(parts),
        term,
    }
}

/// The largest query whose parse buffers a thread keeps for the next one.
const MAX_KEPT_PARSE_INPUT: usize = 8 << 20;

thread_local! {
    /// simd-json's working memory, one set per thread that parses queries.
    static PARSE_BUFFERS: std::cell::RefCell<simd_json::Buffers> =
        std::cell::RefCell::new(simd_json::Buffers::default());
}

/// The deepest nesting of `[`/`{` outside strings (a linear scan).
fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn is_continue(query: &Result<Query, String>) -> bool {
    matches!(query, Ok(Query { json: Json::Array(parts), .. }) if parts.first().and_then(Json::as_u64) == Some(query_type::CONTINUE))
}

fn is_noreply_wait(query: &Result<Query, String>) -> bool {
    query
        .as_ref()
        .ok()
        .and_then(|query| query.json.get(0).and_then(Json::as_u64))
        .is_some_and(|kind| kind == query_type::NOREPLY_WAIT)
}

/// Sends answers until every sender (the reader and running queries) is gone.
async fn write_answers(mut writer: ConnectionWriter, outbox: flume::Receiver<Vec<u8>>) {
    while let Ok(answer) = outbox.recv_async().await {
        if writer.write_all(&answer).await.is_err() {
            break;
        }
    }
}

fn client_error(message: &str) -> Json {
    json!({ "t": response_type::CLIENT_ERROR, "r": [message], "b": [] })
}

struct Session {
    engine: Engine,
    cursors: RefCell<HashMap<u64, Cursor>>,
    /// Changefeed CONTINUEs waiting for changes, by token: a STOP, the
    /// client going away or shutdown ends the wait.
    waiting_feeds: RefCell<HashMap<u64, flume::Sender<()>>>,
    drain: Arc<Drain>,
    /// Who authenticated: every query runs with this user's permissions.
    user: Arc<str>,
}

/// How often a changefeed waiting for changes checks for shutdown.
const FEED_SHUTDOWN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Session {
    /// Answers one query; `None` when nothing is to be sent (noreply).
    async fn handle(&self, token: u64, query: Result<Query, String>) -> Option<Answer> {
        let Query { json: query, term } = match query {
            Ok(query) => query,
            Err(message) => return Some(Answer::Value(client_error(&message))),
        };
        let Some(parts) = query.as_array() else {
            return Some(Answer::Value(client_error(
                "Expected a query to be an array.",
            )));
        };
        match parts.first().and_then(Json::as_u64) {
            Some(query_type::START) => self.start(token, parts, term).await,
            Some(query_type::CONTINUE) => Some(match self.take_cursor(token) {
                Some(cursor) if cursor.stream.is_feed() => self.continue_feed(token, cursor).await,
                Some(cursor) => self.next_batch(token, cursor, false).await,
                None => Answer::Value(client_error(&format!("Token {token} not in stream cache."))),
            }),
            Some(query_type::STOP) => {
                self.take_cursor(token);
                if let Some(stop) = self.waiting_feeds.borrow_mut().remove(&token) {
                    let _ = stop.try_send(());
                }
                Some(Answer::Value(
                    json!({ "t": response_type::SUCCESS_SEQUENCE, "r": [], "n": [] }),
                ))
            }
            Some(query_type::SERVER_INFO) => Some(Answer::Value(json!({
                "t": response_type::SERVER_INFO,
                "r": [{ "id": "00000000-0000-4000-8000-000000000001", "name": crate::reql::admin::SERVER_NAME, "proxy": false }],
            }))),
            _ => Some(Answer::Value(client_error(&format!(
                "Unrecognized query type in {query}."
            )))),
        }
    }

    /// A changefeed's next batch, which may wait long for a change: a STOP,
    /// the client leaving or shutdown ends the feed instead.
    async fn continue_feed(&self, token: u64, cursor: Cursor) -> Answer {
        let (stop, stopped) = flume::bounded::<()>(1);
        self.waiting_feeds.borrow_mut().insert(token, stop);
        let drain = self.drain.clone();
        let ended = async move {
            loop {
                let signalled =
                    futures_lite::future::or(async { stopped.recv_async().await.is_ok() }, async {
                        photondb_runtime::network::sleep(FEED_SHUTDOWN_CHECK).await;
                        false
                    })
                    .await;
                if signalled || drain.draining.load(Ordering::SeqCst) {
                    return Answer::Value(
                        json!({ "t": response_type::SUCCESS_SEQUENCE, "r": [], "n": [] }),
                    );
                }
            }
        };
        let answer = futures_lite::future::or(self.next_batch(token, cursor, false), ended).await;
        self.waiting_feeds.borrow_mut().remove(&token);
        answer
    }

    fn take_cursor(&self, token: u64) -> Option<Cursor> {
        self.cursors.borrow_mut().remove(&token)
    }

    async fn start(
        &self,
        token: u64,
        parts: &[Json],
        term: Option<Result<Term, ReqlError>>,
    ) -> Option<Answer> {
        let optargs = match parts.get(2) {
            None => serde_json::Map::new(),
            Some(Json::Object(optargs)) => optargs.clone(),
            Some(_) => {
                return Some(Answer::Value(client_error(
                    "Expected global optional arguments to be an object.",
                )))
            }
        };
        let noreply = optargs
            .get("noreply")
            .is_some_and(|value| value == &Json::Bool(true));
        let profile = optargs
            .get("profile")
            .is_some_and(|value| value == &Json::Bool(true));
        let started = std::time::Instant::now();
        let response = match self.run(token, term, &optargs).await {
            Ok(response) => {
                crate::metrics::metrics().query_answered(
                    "driver",
                    "success",
                    started.elapsed().as_secs_f64(),
                );
                response
            }
            Err(error) => {
                crate::metrics::metrics().query_answered(
                    "driver",
                    error.class.driver_name(),
                    started.elapsed().as_secs_f64(),
                );
                Answer::Value(error.to_response())
            }
        };
        // `profile=True`: how long the query took on the server, in
        // RethinkDB's shape (drivers hand it back beside the value).
        if profile {
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut response = response.into_value();
            response["p"] = json!([{ "description": "Evaluating the query.", "duration(ms)": elapsed_ms, "sub_tasks": [] }]);
            return (!noreply).then_some(Answer::Value(response));
        }
        (!noreply).then_some(response)
    }

    async fn run(
        &self,
        token: u64,
        term: Option<Result<Term, ReqlError>>,
        optargs: &serde_json::Map<String, Json>,
    ) -> Result<Answer, ReqlError> {
        if let (Some(Ok(term)), true) = (&term, optargs.is_empty()) {
            if let Some(answer) = self.point_read(term).await {
                return Ok(answer);
            }
        }
        match evaluate_term(&self.engine, Some(self.user.clone()), term, optargs).await? {
            Evaluated::Atom(atom) => Ok(atom.into_answer()),
            Evaluated::Stream(stream, context, limits) => Ok(self
                .next_batch(
                    token,
                    Cursor {
                        stream,
                        context,
                        limits,
                    },
                    true,
                )
                .await),
        }
    }

    /// The commonest query, `r.table(name).get(key)` (or with its
    /// `r.db(name)`), answered without evaluating a term: the stored
    /// document goes from the shard that owns it straight into the answer
    /// as JSON, never decoded into a datum (YCSB's point reads spent a
    /// seventh of the server's user time decoding, then writing, each
    /// document).
    /// `None` for anything else, and for whatever the general path must
    /// answer because it is not a plain success there: a missing database
    /// or table, a user without `read`, a key that is not one, a shard that
    /// fails, a stored document that does not read. So errors read the same
    /// either way.
    async fn point_read(&self, term: &Term) -> Option<Answer> {
        use crate::reql::term_type as kind;
        let Term::Call {
            term_type: kind::GET,
            args,
            optargs,
        } = term
        else {
            return None;
        };
        let [Term::Call {
            term_type: kind::TABLE,
            args: table_args,
            optargs: table_optargs,
        }, Term::Datum(key)] = args.as_slice()
        else {
            return None;
        };
        if !optargs.is_empty() || !table_optargs.is_empty() {
            return None;
        }
        let (database, name) = match table_args.as_slice() {
            [Term::Datum(Datum::String(name))] => ("test", name),
            [Term::Call {
                term_type: kind::DB,
                args: database_args,
                optargs: database_optargs,
            }, Term::Datum(Datum::String(name))]
                if database_optargs.is_empty() =>
            {
                match database_args.as_slice() {
                    [Term::Datum(Datum::String(database))] => (database.as_str(), name),
                    _ => return None,
                }
            }
            _ => return None,
        };
        if database == crate::reql::system::DATABASE {
            return None;
        }
        let table = self.engine.table(database, name)?;
        let scope = crate::reql::permission::Scope::table(&table);
        if !crate::reql::permission::allows(
            &self.engine,
            &self.user,
            crate::reql::permission::Permission::Read,
            scope,
        ) {
            return None;
        }
        let key = crate::reql::eval::primary_key_bytes(key).ok()?;
        let stored = self
            .engine
            .get(table.id, bytes::Bytes::from(key))
            .await
            .ok()?;
        let mut written = Ok(());
        let body = response_text(
            response_type::SUCCESS_ATOM,
            |out| match &stored {
                Some(document) => written = photondb_datum::document::write_json(document, out),
                None => out.extend_from_slice(b"null"),
            },
            None,
        );
        written.ok()?;
        Some(Answer::Text {
            body,
            partial: false,
        })
    }

    /// The next batch of a stream. A partial batch keeps the cursor for
    /// CONTINUE; the last batch drops it.
    async fn next_batch(&self, token: u64, mut cursor: Cursor, first: bool) -> Answer {
        let response = next_batch(&mut cursor.stream, &cursor.context, cursor.limits, first).await;
        if response.is_partial() {
            self.cursors.borrow_mut().insert(token, cursor);
        }
        response
    }
}

/// The next batch of a stream as a response: SUCCESS_PARTIAL when more
/// may follow (the caller keeps the stream for CONTINUE), SUCCESS_SEQUENCE
/// for the last, or the error. Batches end at RethinkDB's limits (rows,
/// bytes, time; the first one smaller). A changefeed answers its first
/// request at once (the driver needs its cursor) and later ones as soon
/// as a change is there.
pub async fn next_batch(
    stream: &mut Stream,
    context: &Context,
    limits: BatchLimits,
    first: bool,
) -> Answer {
    let (rows_limit, bytes_limit) = if first {
        (
            limits.rows.div_ceil(limits.first_scaledown).max(1),
            (limits.bytes / limits.first_scaledown).max(1),
        )
    } else {
        (limits.rows, limits.bytes)
    };
    let started = std::time::Instant::now();
    // Rows are written as JSON text as they come (comma-separated); their
    // size in that text is what the byte limit counts, as RethinkDB's does.
    let mut rows = Vec::new();
    let mut count = 0;
    let mut more = true;
    let notes = stream.feed_notes();
    let feed = notes.is_some();
    while count < rows_limit
        && rows.len() - count.saturating_sub(1) < bytes_limit
        && (count == 0 || started.elapsed() < limits.time)
    {
        if feed {
            stream.set_wait_for_changes(!first && count == 0);
        }
        match stream.next(context).await {
            Ok(Some(row)) => {
                if count > 0 {
                    rows.push(b',');
                }
                write_json(&row, &mut rows);
                count += 1;
            }
            Ok(None) if feed && !stream.has_ended() => break,
            Ok(None) => {
                more = false;
                break;
            }
            Err(error) => return Answer::Value(error.to_response()),
        }
    }
    let response_kind = if more {
        response_type::SUCCESS_PARTIAL
    } else {
        response_type::SUCCESS_SEQUENCE
    };
    Answer::Text {
        body: response_text(
            response_kind,
            |out| out.extend_from_slice(&rows),
            Some(notes.unwrap_or_default()),
        ),
        partial: more,
    }
}

/// A response's JSON text, `{"t": kind, "r": [rows], "n": notes}` (no
/// `n` for `None`), the rows written by `write_rows` (comma-separated).
fn response_text(
    kind: u64,
    write_rows: impl FnOnce(&mut Vec<u8>),
    notes: Option<Vec<u64>>,
) -> Vec<u8> {
    use std::io::Write;
    let mut body = Vec::with_capacity(64);
    let _ = write!(body, "{{\"t\":{kind},\"r\":[");
    write_rows(&mut body);
    body.push(b']');
    if let Some(notes) = notes {
        body.extend_from_slice(b",\"n\":");
        serde_json::to_writer(&mut body, &notes).expect("numbers serialize");
    }
    body.push(b'}');
    body
}

/// What a START query evaluated to: a whole answer, or a stream to send
/// in batches.
pub enum Evaluated {
    Atom(Atom),
    Stream(Stream, Context, BatchLimits),
}

/// A START query's whole answer, when it is not a stream.
pub enum Atom {
    /// A value, kept as a datum until whoever answers writes it out.
    Datum(Datum),
    /// A response shaped already (grouped data).
    Response(Json),
}

impl Atom {
    /// The driver protocol's response object.
    pub fn into_response(self) -> Json {
        match self {
            Atom::Datum(datum) => {
                json!({ "t": response_type::SUCCESS_ATOM, "r": [to_json(&datum)] })
            }
            Atom::Response(response) => response,
        }
    }

    /// The value itself (the response's `r[0]`).
    pub fn into_value(self) -> Json {
        match self {
            Atom::Datum(datum) => to_json(&datum),
            Atom::Response(mut response) => response["r"][0].take(),
        }
    }

    /// The response for the driver port, written straight from the datum.
    fn into_answer(self) -> Answer {
        match self {
            Atom::Datum(datum) => Answer::Text {
                body: response_text(
                    response_type::SUCCESS_ATOM,
                    |out| write_json(&datum, out),
                    None,
                ),
                partial: false,
            },
            Atom::Response(response) => Answer::Value(response),
        }
    }
}

/// A response to a query: a JSON value, or JSON text written already (rows
/// go straight from datums to text, with no JSON value in between).
pub enum Answer {
    Value(Json),
    /// `partial`: more rows follow on CONTINUE.
    Text {
        body: Vec<u8>,
        partial: bool,
    },
}

impl Answer {
    pub fn is_partial(&self) -> bool {
        match self {
            Answer::Value(response) => response["t"] == response_type::SUCCESS_PARTIAL,
            Answer::Text { partial, .. } => *partial,
        }
    }

    pub fn into_value(self) -> Json {
        match self {
            Answer::Value(response) => response,
            Answer::Text { body, .. } => {
                serde_json::from_slice(&body).expect("answers are written as valid JSON")
            }
        }
    }

    pub fn encode(&self, token: u64) -> Vec<u8> {
        match self {
            Answer::Value(response) => frame::encode_response(token, response),
            Answer::Text { body, .. } => frame::encode_body(token, body),
        }
    }
}

/// Evaluates a query's term with its global optional arguments, as the
/// HTTP API does.
pub async fn evaluate(
    engine: &Engine,
    user: Option<Arc<str>>,
    term: Option<&Json>,
    optargs: &serde_json::Map<String, Json>,
) -> Result<Evaluated, ReqlError> {
    evaluate_term(engine, user, term.map(Term::parse), optargs).await
}

/// [`evaluate`] of a term already read (the driver port reads it from the
/// query's tape); a term that could not be read is reported here, after
/// the global optional arguments are checked, as RethinkDB orders them.
async fn evaluate_term(
    engine: &Engine,
    user: Option<Arc<str>>,
    term: Option<Result<Term, ReqlError>>,
    optargs: &serde_json::Map<String, Json>,
) -> Result<Evaluated, ReqlError> {
    for name in optargs.keys() {
        if !GLOBAL_OPTARGS.contains(&name.as_str()) {
            return Err(ReqlError::compile(format!(
                "Unrecognized global optional argument `{name}`."
            )));
        }
    }
    let term =
        term.ok_or_else(|| ReqlError::new(ErrorClass::Client, "START query without a term."))??;
    term.check_placement()?;
    let global = crate::reql::term::parse_optargs(optargs)?;
    let mut context = Context::new(engine.clone());
    context.user = user;
    if let Some(database) = global.get("db") {
        match context.eval(database).await? {
            Value::Database(database) => context.default_database = database.name,
            other => {
                return Err(ReqlError::logic(format!(
                    "Expected type DATABASE but found {}.",
                    other.type_name()
                )))
            }
        }
    }
    match context.optional_datum(&global, "durability").await? {
        None => {}
        Some(Datum::String(text)) if text == "hard" => context.durability = Some(Durability::Hard),
        Some(Datum::String(text)) if text == "soft" => context.durability = Some(Durability::Soft),
        Some(_) => {
            return Err(ReqlError::logic(
                "Durability option must be \"hard\" or \"soft\".",
            ))
        }
    }
    let limits = BatchLimits::from_optargs(&context, &global).await?;
    match context
        .optional_datum(&global, "changefeed_queue_size")
        .await?
    {
        None => {}
        Some(Datum::Number(size)) if size >= 1.0 => context.changefeed_queue_size = size as usize,
        Some(Datum::Number(size)) => {
            return Err(ReqlError::logic(format!(
                "Illegal changefeed queue size `{size}`."
            )))
        }
        Some(other) => return Err(other.wrong_type("NUMBER")),
    }
    match context.optional_datum(&global, "array_limit").await? {
        None => {}
        Some(Datum::Number(limit)) if limit >= 1.0 => context.array_limit = limit as usize,
        Some(Datum::Number(limit)) => {
            return Err(ReqlError::logic(format!(
                "Illegal array size limit `{}`.  (Must be >= 1.)",
                to_json(&Datum::Number(limit))
            )))
        }
        Some(other) => return Err(other.wrong_type("NUMBER")),
    }
    let stream = match context.eval(&term).await? {
        Value::Datum(datum) => {
            if crate::reql::sequence::contains_literal(&datum) {
                return Err(crate::reql::sequence::stray_literal());
            }
            return Ok(Evaluated::Atom(Atom::Datum(datum)));
        }
        Value::SingleSelection { row, .. } | Value::SystemSelection { row, .. } => {
            return Ok(Evaluated::Atom(Atom::Datum(row.unwrap_or(Datum::Null))))
        }
        Value::Table(table) => Stream::table(
            table,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
        ),
        Value::Stream(stream) => stream,
        Value::SystemTable(name) => Stream::rows(crate::reql::system::rows(&context, &name)?),
        Value::Grouped { groups, .. } => {
            let data: Vec<Json> = groups
                .iter()
                .map(|(group, value)| json!([to_json(group), to_json(value)]))
                .collect();
            return Ok(Evaluated::Atom(Atom::Response(
                json!({ "t": response_type::SUCCESS_ATOM, "r": [{ "$reql_type$": "GROUPED_DATA", "data": data }] }),
            )));
        }
        Value::MinValue => return Err(ReqlError::logic("Cannot convert `r.minval` to JSON.")),
        Value::MaxValue => return Err(ReqlError::logic("Cannot convert `r.maxval` to JSON.")),
        other => {
            return Err(ReqlError::logic(format!(
                "Query result must be of type DATUM, GROUPED_DATA, or STREAM (got {}).",
                other.type_name()
            )))
        }
    };
    Ok(Evaluated::Stream(stream, context, limits))
}

#[cfg(test)]
mod tests {
    use super::{nesting_depth, parse_query};

    #[test]
    fn nesting_depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(br#"[1, [2, {"a": [3]}]]"#), 4);
        assert_eq!(nesting_depth(br#"["[[[", "\"[[", {"k\\": "{"}]"#), 2);
        assert_eq!(nesting_depth(b"42"), 0);
    }

    #[test]
    fn queries_nested_too_deeply_are_refused_before_parsing() {
        let deep = format!("{}1{}", "[".repeat(2000), "]".repeat(2000));
        let refused = parse_query(deep.into_bytes()).unwrap_err();
        assert!(refused.contains("nested too deeply"), "{refused}");
        let fine = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_query(fine.into_bytes()).is_ok());
        assert!(parse_query(b"[1, [".to_vec())
            .unwrap_err()
            .starts_with("Failed to parse query"));
    }
}
