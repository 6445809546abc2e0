//! The HTTP API: health probes, Prometheus metrics and a ReQL query
//! endpoint, served by axum on a small tokio runtime of its own.
//!
//! The shards stay on glommio. A query arriving over HTTP is parsed here
//! and evaluated on a shard (chosen in turn), reached through the engine's
//! cross-thread handle, exactly as a driver's query would be.
//!
//! Routes:
//! - `GET /health/live`: 200 while the process serves (no I/O).
//! - `GET /health/ready`: 200 once the engine has recovered and accepts
//!   queries; 503 with a JSON reason once shutdown has begun.
//! - `GET /_metrics`: Prometheus text format.
//! - `POST /api/v1/query`: `{"query": <term as drivers send it>, "optargs": {…}}`
//!   → `{"result": …}`, or `{"error": {"type", "message", "backtrace"}}`.
//! - Databases, tables and documents as REST resources (`rest.rs`).
//! - `GET /api/v1/ws`: queries, cursors and changefeeds over a WebSocket
//!   (`websocket.rs`).

mod auth;
mod openapi;
mod rest;
mod token;

pub use token::ServerKey;
mod websocket;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use photondb_datum::json::to_json;
use photondb_runtime::Engine;
use serde_json::{json, Value as Json};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::connection::{self, Drain, Evaluated};
use crate::metrics::metrics;
use crate::reql::error::{ErrorClass, ReqlError};

/// How long shutdown waits for WebSockets to close.
const SOCKETS_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The largest request body taken (RethinkDB's largest query is 64 MiB;
/// HTTP clients rarely need that much).
const MAX_BODY_BYTES: usize = 16 << 20;

pub(crate) struct Shared {
    engine: Engine,
    drain: Arc<Drain>,
    /// The partition whose shard runs the next query (round robin).
    next_partition: AtomicU32,
    credentials: auth::CheckedCredentials,
    /// WebSockets open now: at shutdown they get a moment to close.
    open_sockets: std::sync::atomic::AtomicUsize,
    token_key: token::ServerKey,
}

/// A running HTTP server.
pub struct HttpServer {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Stops accepting, lets requests in progress finish, and joins.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The partition whose shard runs the next query (round robin).
    fn pick_partition(&self) -> u32 {
        self.next_partition.fetch_add(1, Ordering::Relaxed) % self.engine.partitions()
    }
}

/// How the HTTP API treats requests beyond its routes.
#[derive(Clone, Debug)]
pub struct Options {
    /// Origins allowed to call from a browser (`*`: any); empty: none.
    pub cors_origins: Vec<String>,
    /// Longest a request may take before it is answered 408.
    pub timeout: std::time::Duration,
    /// What bearer tokens are signed with.
    pub token_key: token::ServerKey,
}

/// Cross-origin requests from `origins` only; no layer when it is empty
/// (the browser then refuses cross-origin calls, as no header allows them).
fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
        .expose_headers([REQUEST_ID]);
    if origins.iter().any(|origin| origin == "*") {
        return Ok(Some(layer.allow_origin(AllowOrigin::any())));
    }
    let origins = origins
        .iter()
        .map(|origin| {
            header::HeaderValue::from_str(origin.trim())
                .map_err(|_| anyhow::anyhow!("--cors-origin {origin:?} is not a valid origin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(layer.allow_origin(AllowOrigin::list(origins))))
}

/// Binds `address` (port 0: any free port) and serves on a thread of its
/// own.
pub fn start(
    engine: Engine,
    drain: Arc<Drain>,
    address: SocketAddr,
    options: Options,
) -> anyhow::Result<HttpServer> {
    let cors = cors(&options.cors_origins)?;
    let listener = std::net::TcpListener::bind(address)
        .map_err(|error| anyhow::anyhow!("binding the HTTP port {address}: {error}"))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let shared = Arc::new(Shared {
        engine,
        drain,
        next_partition: AtomicU32::new(0),
        credentials: Default::default(),
        open_sockets: Default::default(),
        token_key: options.token_key.clone(),
    });
    // Everything under /api/v1 but the OpenAPI document needs a user.
    let api = Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/ws", get(websocket::upgrade))
        .route("/api/v1/auth/token", post(auth::issue_token))
        .merge(rest::routes())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::require_user,
        ));
    let mut router = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/_metrics", get(prometheus_metrics))
        .route("/api/v1/openapi.json", get(openapi_document))
        .merge(api)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Innermost first: compressed bodies and CORS preflights are what
        // the timeout and the metrics see.
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.timeout,
        ));
    // Only when origins are allowed: the layer costs a third of the point-get
    // throughput (perf/http), and without origins it would allow nothing.
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    let router = router
        .layer(axum::middleware::from_fn(observe))
        .with_state(shared.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sockets = shared;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "HTTP listener");
                        return;
                    }
                };
                let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stopped.await;
                });
                if let Err(error) = serving.await {
                    tracing::error!(%error, "HTTP server stopped");
                }
                // Upgraded sockets outlive the server: let them send their
                // close frames (they watch for shutdown) before the runtime ends.
                let deadline = Instant::now() + SOCKETS_CLOSE_WAIT;
                while sockets.open_sockets.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            });
        })?;
    Ok(HttpServer {
        address,
        stop: Some(stop),
        thread: Some(thread),
    })
}

pub(crate) fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every request, in one place: its id (the client's `x-request-id`, or a
/// new one), echoed on the response; its count and latency by route
/// template and status in the metrics; a debug log line. Routes are the
/// templates (`/api/v1/dbs/{db}`), never the paths, so a client cannot grow
/// the metrics without bound.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| value.len() <= 128)
        .cloned()
        .unwrap_or_else(new_request_id);
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let status = response.status();
    let elapsed = started.elapsed();
    metrics()
        .http_requests
        .with_label_values(&[&route, status.as_str()])
        .inc();
    metrics()
        .http_seconds
        .with_label_values(&[&route])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(
        request_id = request_id.to_str().unwrap_or("?"),
        %method,
        route,
        status = status.as_u16(),
        elapsed_us = elapsed.as_micros() as u64,
        "HTTP request"
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// A request id unique within this process and unlikely to repeat across
/// restarts: the start time and a counter.
fn new_request_id() -> header::HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
    });
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    header::HeaderValue::from_str(&format!("{epoch:x}-{number:x}")).expect("hex digits")
}

async fn live() -> Response {
    json_response(StatusCode::OK, json!({"status": "live"}))
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    // The engine has recovered every partition and loaded the catalog
    // before this server starts; what remains is shutdown, and partitions
    // a failed write or sync has stopped.
    let poisoned = if shared.drain.is_draining() {
        0
    } else {
        let engine = shared.engine.clone();
        shared
            .engine
            .run_on_partition_from_outside(0, move |_| async move {
                engine
                    .storage_stats()
                    .await
                    .map_or(0, |stats| stats.poisoned_partitions)
            })
            .await
            .unwrap_or(0)
    };
    if shared.drain.is_draining() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": "the server is shutting down"}),
        )
    } else if poisoned > 0 {
        let reason = format!(
            "{poisoned} partition(s) stopped after a failed write or sync; a restart recovers them"
        );
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": reason}),
        )
    } else {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    }
}

async fn openapi_document() -> Response {
    json_response(StatusCode::OK, openapi::document())
}

async fn prometheus_metrics(State(shared): State<Arc<Shared>>) -> Response {
    // Read on a shard: engine calls from there need no `Send` future.
    let engine = shared.engine.clone();
    let text = match shared
        .engine
        .run_on_partition_from_outside(0, move |_| async move { metrics().render(&engine).await })
        .await
    {
        Ok(text) => text,
        Err(error) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": error.to_string()}),
            )
        }
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) fn error_body(class: &str, message: &str, backtrace: Json) -> Json {
    json!({"error": {"type": class, "message": message, "backtrace": backtrace}})
}

/// The HTTP status of a query error: the query's fault (400: it cannot
/// run as written, a table it names is missing…), too big (422), or the
/// server's (500). A query refused at shutdown is answered 503 before it
/// runs.
pub(crate) fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::Compile
        | ErrorClass::Client
        | ErrorClass::QueryLogic
        | ErrorClass::NonExistence
        | ErrorClass::User
        | ErrorClass::OpFailed => StatusCode::BAD_REQUEST,
        ErrorClass::Permission => StatusCode::FORBIDDEN,
        ErrorClass::ResourceLimit => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorClass::OpIndeterminate | ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn query(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    answer_query(&shared, &headers, &body).await
}

async fn answer_query(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let json_content = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !json_content {
        return json_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            error_body(
                "ReqlClientError",
                "Expected a JSON body (Content-Type: application/json).",
                json!([]),
            ),
        );
    }
    let request: Json = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            let message = format!(
                "Malformed JSON at line {}, column {}: {error}",
                error.line(),
                error.column()
            );
            return json_response(
                StatusCode::BAD_REQUEST,
                error_body("ReqlClientError", &message, json!([])),
            );
        }
    };
    let Some(term) = request.get("query").cloned() else {
        return json_response(
            StatusCode::BAD_REQUEST,
            error_body(
                "ReqlClientError",
                "Expected an object with a `query` field.",
                json!([]),
            ),
        );
    };
    let optargs = match request.get("optargs") {
        None => serde_json::Map::new(),
        Some(Json::Object(optargs)) => optargs.clone(),
        Some(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_body(
                    "ReqlClientError",
                    "Expected `optargs` to be an object.",
                    json!([]),
                ),
            )
        }
    };
    if shared.drain.is_draining() {
        let error = ReqlError::op_failed("The server is shutting down; the query was not run.");
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            error_body(error.class.driver_name(), &error.message, json!([])),
        );
    }
    if wants_ndjson(headers) {
        return stream_query(shared, term, optargs).await;
    }
    match run_on_shard(shared, term, optargs).await {
        Ok(result) => json_response(StatusCode::OK, json!({"result": result})),
        Err((class, message, backtrace)) => json_response(
            status_of(class),
            error_body(class.driver_name(), &message, backtrace),
        ),
    }
}

/// A query's error as it crosses threads: class, message, backtrace.
pub(crate) type QueryFailure = (ErrorClass, String, Json);

/// Runs a query on a shard (each in turn) and reads its whole result.
pub(crate) async fn run_on_shard(
    shared: &Shared,
    term: Json,
    optargs: serde_json::Map<String, Json>,
) -> Result<Json, QueryFailure> {
    let partition = shared.pick_partition();
    let engine = shared.engine.clone();
    let user = auth::current_user();
    let started = Instant::now();
    let evaluated = shared
        .engine
        .run_on_partition_from_outside(partition, move |_| async move {
            let result = run(&engine, user, term, optargs).await;
            result.map_err(|error| (error.class, error.message.clone(), error.backtrace_json()))
        })
        .await;
    let outcome = match evaluated {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => Err(error),
        Err(error) => {
            let error = ReqlError::from(error);
            Err((error.class, error.message.clone(), error.backtrace_json()))
        }
    };
    let label = outcome
        .as_ref()
        .map_or_else(|(class, _, _)| class.driver_name(), |_| "success");
    metrics().query_answered("http", label, started.elapsed().as_secs_f64());
    outcome
}

/// Rows of a streamed answer cross to the HTTP thread in chunks of about
/// this many bytes…
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// …with at most this many chunks waiting for a slow client (the query
/// waits with them: memory stays bounded whatever the result's size).
const STREAM_CHUNKS_QUEUED: usize = 4;

const NDJSON: &str = "application/x-ndjson";

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.split(',').any(|kind| kind.trim().starts_with(NDJSON)))
}

/// Answers a query as NDJSON, one result row per line, streamed while the
/// query runs on its shard. The status is decided by the first row: an
/// error before it is an ordinary JSON error answer; an error after it
/// (the status is sent by then) is the last line, `{"error": …}`.
async fn stream_query(
    shared: &Shared,
    term: Json,
    optargs: serde_json::Map<String, Json>,
) -> Response {
    let user = auth::current_user();
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(STREAM_CHUNKS_QUEUED);
    let (started, start) = tokio::sync::oneshot::channel::<Result<(), QueryFailure>>();
    let partition = shared.pick_partition();
    let engine = shared.engine.clone();
    let running = shared
        .engine
        .run_on_partition_from_outside(partition, move |_| async move {
            let began = Instant::now();
            let outcome = produce_ndjson(&engine, user, term, optargs, started, chunks).await;
            metrics().query_answered("http", outcome, began.elapsed().as_secs_f64());
        });
    // The query outlives this handler: it feeds the body until the last
    // row, or until the client goes away and the body is dropped.
    tokio::spawn(running);
    match start.await {
        Ok(Ok(())) => {
            let rows = futures_lite::stream::unfold(receiver, |mut receiver| async move {
                let chunk = receiver.recv().await?;
                Some((Ok::<_, std::convert::Infallible>(chunk), receiver))
            });
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, NDJSON)],
                axum::body::Body::from_stream(rows),
            )
                .into_response()
        }
        Ok(Err((class, message, backtrace))) => json_response(
            status_of(class),
            error_body(class.driver_name(), &message, backtrace),
        ),
        Err(_) => {
            let error = ReqlError::op_failed("The server is shutting down; the query was not run.");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                error_body(error.class.driver_name(), &error.message, json!([])),
            )
        }
    }
}

fn push_line(buffer: &mut Vec<u8>, value: &Json) {
    serde_json::to_writer(&mut *buffer, value).expect("JSON values serialize");
    buffer.push(b'\n');
}

/// Runs the query on this shard and sends its rows as NDJSON chunks;
/// returns the outcome label for the metrics.
async fn produce_ndjson(
    engine: &Engine,
    user: Option<Arc<str>>,
    term: Json,
    optargs: serde_json::Map<String, Json>,
    started: tokio::sync::oneshot::Sender<Result<(), QueryFailure>>,
    chunks: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> &'static str {
    let failure = |error: &ReqlError| (error.class, error.message.clone(), error.backtrace_json());
    let refuse = |started: tokio::sync::oneshot::Sender<_>, error: ReqlError| {
        let _ = started.send(Err(failure(&error)));
        error.class.driver_name()
    };
    let (mut stream, context) = match connection::evaluate(engine, user, Some(&term), &optargs)
        .await
    {
        Err(error) => return refuse(started, error),
        Ok(Evaluated::Atom(atom)) => {
            // An array answer is its elements, one per line, as a stream's.
            let mut buffer = Vec::new();
            match &atom.into_value() {
                Json::Array(items) => items.iter().for_each(|item| push_line(&mut buffer, item)),
                other => push_line(&mut buffer, other),
            }
            let _ = started.send(Ok(()));
            let _ = chunks.send(buffer).await;
            return "success";
        }
        Ok(Evaluated::Stream(stream, context, _)) => (stream, context),
    };
    if stream.is_feed() {
        return refuse(
            started,
            ReqlError::logic(
                "Changefeeds are not served by `/api/v1/query`; use the WebSocket or a RethinkDB driver.",
            ),
        );
    }
    let mut next = match stream.next(&context).await {
        Ok(row) => row,
        Err(error) => return refuse(started, error),
    };
    let _ = started.send(Ok(()));
    let mut buffer = Vec::with_capacity(STREAM_CHUNK_BYTES);
    while let Some(row) = next {
        push_line(&mut buffer, &to_json(&row));
        if buffer.len() >= STREAM_CHUNK_BYTES {
            let full = std::mem::replace(&mut buffer, Vec::with_capacity(STREAM_CHUNK_BYTES));
            if chunks.send(full).await.is_err() {
                // The client went away: stop reading.
                return "success";
            }
        }
        next = match stream.next(&context).await {
            Ok(row) => row,
            Err(error) => {
                let (class, message, backtrace) = failure(&error);
                push_line(
                    &mut buffer,
                    &error_body(class.driver_name(), &message, backtrace),
                );
                let _ = chunks.send(buffer).await;
                return class.driver_name();
            }
        };
    }
    if !buffer.is_empty() {
        let _ = chunks.send(buffer).await;
    }
    "success"
}

/// Evaluates a query on the current shard and reads its whole result.
async fn run(
    engine: &Engine,
    user: Option<Arc<str>>,
    term: Json,
    optargs: serde_json::Map<String, Json>,
) -> Result<Json, ReqlError> {
    match connection::evaluate(engine, user, Some(&term), &optargs).await? {
        Evaluated::Atom(atom) => Ok(atom.into_value()),
        Evaluated::Stream(stream, context, _) => {
            if stream.is_feed() {
                return Err(ReqlError::logic(
                    "Changefeeds are not served by `/api/v1/query`; use a RethinkDB driver.",
                ));
            }
            let rows = stream.collect(&context).await?;
            Ok(Json::Array(rows.iter().map(to_json).collect()))
        }
    }
}
