//! `GET /api/v1/ws`: the driver protocol's queries, cursors and changefeeds
//! over a WebSocket, in JSON.
//!
//! Client → server, one JSON text message each:
//! - `{"token": n, "query": <term>, "optargs": {…}}` starts a query;
//! - `{"token": n, "type": "CONTINUE"}` asks for the next batch;
//! - `{"token": n, "type": "STOP"}` ends a cursor or changefeed.
//!
//! Server → client: `{"token": n, "t": …, "r": […], "n": […]}` with the
//! driver protocol's response types (1 atom, 2 last batch, 3 partial batch
//! — CONTINUE for more, 16–18 errors with `"b"` backtrace and `"e"` error
//! type), so a socket carries many queries at once.
//!
//! Each query runs on a shard as a task of its own that keeps its cursor,
//! answers CONTINUE and STOP, and sends its batches through a bounded
//! channel: a client that does not read holds its queries back instead of
//! growing buffers. Closing the socket stops every query it started.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value as Json};

use super::Shared;
use crate::connection::{self, Evaluated};
use crate::protocol::frame::response_type;
use crate::reql::error::ReqlError;

/// How often an open socket checks whether shutdown has begun.
const SHUTDOWN_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Answers waiting to be written to one socket before its queries wait.
const OUTBOX_MESSAGES: usize = 64;

/// What a query's task hears from the socket.
enum Control {
    Continue,
    Stop,
}

pub(super) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The socket's task outlives this request: it keeps the request's user.
    let user = super::auth::current_user();
    upgrade.on_upgrade(move |socket| super::auth::as_user(user, serve(shared, socket)))
}

fn client_error(token: Json, message: &str) -> Json {
    json!({"token": token, "t": response_type::CLIENT_ERROR, "r": [message], "b": []})
}

/// Counts an open socket until dropped.
struct OpenSocket(Arc<Shared>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(shared: Arc<Shared>, mut socket: WebSocket) {
    shared.open_sockets.fetch_add(1, Ordering::SeqCst);
    let _open = OpenSocket(shared.clone());
    let (outbox, answers) = flume::bounded::<Json>(OUTBOX_MESSAGES);
    let mut queries: HashMap<u64, flume::Sender<Control>> = HashMap::new();
    let mut shutdown_check = tokio::time::interval(SHUTDOWN_CHECK);
    loop {
        tokio::select! {
            _ = shutdown_check.tick() => {
                if shared.drain.is_draining() {
                    // Shutting down: say so, then close (the client may
                    // reconnect elsewhere).
                    let close = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::AWAY, reason: "the server is shutting down".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
            }
            answer = answers.recv_async() => {
                let Ok(answer) = answer else { break };
                if socket.send(Message::Text(answer.to_string().into())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = outbox.try_send(client_error(Json::Null, "Expected JSON text messages."));
                        continue;
                    }
                    // Closed, or broken: end every query of this socket.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                receive(&shared, &text, &outbox, &mut queries);
            }
        }
        queries.retain(|_, control| !control.is_disconnected());
    }
    // Dropping the control senders stops every query task.
    drop(queries);
}

/// Handles one client message.
fn receive(
    shared: &Arc<Shared>,
    text: &str,
    outbox: &flume::Sender<Json>,
    queries: &mut HashMap<u64, flume::Sender<Control>>,
) {
    let message: Json = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(error) => {
            let _ = outbox.try_send(client_error(
                Json::Null,
                &format!(
                    "Malformed JSON at line {}, column {}: {error}",
                    error.line(),
                    error.column()
                ),
            ));
            return;
        }
    };
    let Some(token) = message.get("token").and_then(Json::as_u64) else {
        let _ = outbox.try_send(client_error(
            Json::Null,
            "Expected a message with a numeric `token`.",
        ));
        return;
    };
    match message.get("type").and_then(Json::as_str) {
        Some("CONTINUE") | Some("STOP") => {
            let control = if message["type"] == "STOP" {
                Control::Stop
            } else {
                Control::Continue
            };
            match queries.get(&token) {
                Some(sender) => {
                    let _ = sender.send(control);
                }
                None => {
                    let _ = outbox.try_send(client_error(
                        json!(token),
                        &format!("Token {token} not in stream cache."),
                    ));
                }
            }
        }
        None | Some("START") => {
            if queries.contains_key(&token) {
                let _ = outbox.try_send(client_error(
                    json!(token),
                    &format!("Token {token} is already in use."),
                ));
                return;
            }
            let Some(term) = message.get("query").cloned() else {
                let _ = outbox.try_send(client_error(json!(token), "Expected a `query`."));
                return;
            };
            let optargs = match message.get("optargs") {
                None => serde_json::Map::new(),
                Some(Json::Object(optargs)) => optargs.clone(),
                Some(_) => {
                    let _ = outbox.try_send(client_error(
                        json!(token),
                        "Expected `optargs` to be an object.",
                    ));
                    return;
                }
            };
            let (control, controls) = flume::unbounded();
            queries.insert(token, control);
            start(shared, token, term, optargs, outbox.clone(), controls);
        }
        Some(other) => {
            let _ = outbox.try_send(client_error(
                json!(token),
                &format!("Unknown message type `{other}`."),
            ));
        }
    }
}

/// Runs one query on a shard until its last batch, a STOP, or the socket
/// going away.
fn start(
    shared: &Arc<Shared>,
    token: u64,
    term: Json,
    optargs: serde_json::Map<String, Json>,
    outbox: flume::Sender<Json>,
    controls: flume::Receiver<Control>,
) {
    if shared.drain.is_draining() {
        let error = ReqlError::op_failed("The server is shutting down; the query was not run.");
        let _ = outbox.try_send(tagged(token, error.to_response()));
        return;
    }
    let partition = shared.pick_partition();
    let engine = shared.engine.clone();
    let user = super::auth::current_user();
    let job = shared
        .engine
        .run_on_partition_from_outside(partition, move |_| async move {
            let evaluated = connection::evaluate(&engine, user, Some(&term), &optargs).await;
            let (mut stream, context, limits) = match evaluated {
                Ok(Evaluated::Atom(atom)) => {
                    let _ = outbox.send_async(tagged(token, atom.into_response())).await;
                    return;
                }
                Ok(Evaluated::Stream(stream, context, limits)) => (stream, context, limits),
                Err(error) => {
                    let _ = outbox.send_async(tagged(token, error.to_response())).await;
                    return;
                }
            };
            let mut first = true;
            // A CONTINUE that came while a batch was being made counts for
            // the next one.
            let continued_early = std::cell::Cell::new(false);
            loop {
                // A batch (which for a changefeed may wait long), unless the
                // client stops or leaves first.
                let batch = futures_lite::future::or(
                    async {
                        Some(
                            connection::next_batch(&mut stream, &context, limits, first)
                                .await
                                .into_value(),
                        )
                    },
                    async {
                        loop {
                            match controls.recv_async().await {
                                Ok(Control::Continue) => continued_early.set(true),
                                Ok(Control::Stop) | Err(_) => return None,
                            }
                        }
                    },
                )
                .await;
                first = false;
                let Some(batch) = batch else {
                    let _ = outbox
                        .send_async(tagged(
                            token,
                            json!({"t": response_type::SUCCESS_SEQUENCE, "r": [], "n": []}),
                        ))
                        .await;
                    return;
                };
                let more = batch["t"] == response_type::SUCCESS_PARTIAL;
                if outbox.send_async(tagged(token, batch)).await.is_err() || !more {
                    return;
                }
                if continued_early.replace(false) {
                    continue;
                }
                match controls.recv_async().await {
                    Ok(Control::Continue) => {}
                    Ok(Control::Stop) => {
                        let _ = outbox
                            .send_async(tagged(
                                token,
                                json!({"t": response_type::SUCCESS_SEQUENCE, "r": [], "n": []}),
                            ))
                            .await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
    tokio::spawn(async move {
        if let Err(error) = job.await {
            tracing::warn!(%error, "a WebSocket query could not run on its shard");
        }
    });
}

/// A response with its token.
fn tagged(token: u64, mut response: Json) -> Json {
    response["token"] = json!(token);
    response
}
