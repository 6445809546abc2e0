//! One connection: the handshake, then token-multiplexed queries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use photondb_datum::json::{base64_decode, base64_encode};
use serde_json::{json, Map, Value};

use crate::error::{ClientError, ReqlErrorKind};
use crate::scram::{self, Keys};
use crate::term::Term;

const MAGIC_V1_0: u32 = 0x34c2_bdc3;

// Query and response types of `ql2.proto`.
const START: u64 = 1;
const CONTINUE: u64 = 2;
const STOP: u64 = 3;
const SUCCESS_ATOM: u64 = 1;
const SUCCESS_SEQUENCE: u64 = 2;
const SUCCESS_PARTIAL: u64 = 3;
const WAIT_COMPLETE: u64 = 4;

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            host: "127.0.0.1".to_owned(),
            port: 28015,
            user: "admin".to_owned(),
            password: String::new(),
            connect_timeout: Duration::from_secs(20),
        }
    }
}

/// What reaches a query waiting for its response.
enum Delivery {
    Response(Value),
    /// The connection ended, and why.
    Closed(String),
    /// The socket has no reader now: one of the waiting queries should take
    /// it over.
    ReadYourself,
}

/// The connection's state, shared by the threads that run queries on it.
///
/// There is no reader thread: a query waiting for its response reads the
/// socket itself when nobody else does, handing other queries' responses to
/// them, and passes the socket on when its own has come. A query alone on
/// its connection so reads its answer with no thread switch.
struct Shared {
    writer: Mutex<TcpStream>,
    reader: Mutex<BufReader<TcpStream>>,
    routes: Mutex<Routes>,
    next_token: AtomicU64,
}

#[derive(Default)]
struct Routes {
    /// Every open query's way back, by token.
    waiting: HashMap<u64, Sender<Delivery>>,
    /// Queries blocked waiting right now (not reading): told when the
    /// socket is free.
    blocked: HashSet<u64>,
    /// Set once the socket ended: why no more responses will come.
    closed: Option<String>,
}

/// An authenticated connection. Queries may run from many threads at once;
/// each gets its own token and its responses come back to it alone.
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    pub fn connect(options: &ConnectOptions) -> Result<Connection, ClientError> {
        let address = format!("{}:{}", options.host, options.port);
        let unreachable = |source| ClientError::Connect {
            address: address.clone(),
            source,
        };
        let mut last_error = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host name resolves to no address",
        );
        let mut stream = None;
        for candidate in (options.host.as_str(), options.port)
            .to_socket_addrs()
            .map_err(unreachable)?
        {
            match TcpStream::connect_timeout(&candidate, options.connect_timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = stream.ok_or_else(|| unreachable(last_error))?;
        stream.set_nodelay(true)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        // A server that never answers must not hang the handshake.
        stream.set_read_timeout(Some(options.connect_timeout))?;
        handshake(&stream, &mut reader, &options.user, &options.password)?;
        stream.set_read_timeout(None)?;
        let shared = Arc::new(Shared {
            writer: Mutex::new(stream),
            reader: Mutex::new(reader),
            routes: Mutex::new(Routes::default()),
            next_token: AtomicU64::new(1),
        });
        Ok(Connection { shared })
    }

    /// Runs `term` and returns its whole result: an atom as it is, a
    /// sequence as an array of every row (do not use it on a changefeed).
    pub fn run(&self, term: &Term) -> Result<Value, ClientError> {
        self.run_with(term, Map::new())
    }

    /// [`Connection::run`] with global optargs (`durability`, `db`, …);
    /// their values are terms in wire JSON.
    pub fn run_with(&self, term: &Term, optargs: Map<String, Value>) -> Result<Value, ClientError> {
        let mut cursor = self.cursor_with(term, optargs)?;
        if let Some(atom) = cursor.atom.take() {
            return Ok(atom);
        }
        let mut rows = Vec::new();
        for row in cursor {
            rows.push(row?);
        }
        Ok(Value::Array(rows))
    }

    /// Runs `term` and returns a cursor over its rows; an atom yields
    /// itself (an array, its items).
    pub fn cursor(&self, term: &Term) -> Result<Cursor<'_>, ClientError> {
        self.cursor_with(term, Map::new())
    }

    pub fn cursor_with(
        &self,
        term: &Term,
        optargs: Map<String, Value>,
    ) -> Result<Cursor<'_>, ClientError> {
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = channel();
        {
            let mut routes = self.shared.routes.lock().expect("routes lock");
            if let Some(reason) = &routes.closed {
                return Err(lost(reason));
            }
            routes.waiting.insert(token, sender);
        }
        let mut cursor = Cursor {
            connection: self,
            token,
            receiver,
            buffer: VecDeque::new(),
            more: true,
            atom: None,
        };
        if let Err(error) = self.send(token, &json!([START, term.wire(), optargs])) {
            cursor.more = false;
            return Err(error);
        }
        cursor.receive()?;
        Ok(cursor)
    }

    fn send(&self, token: u64, query: &Value) -> Result<(), ClientError> {
        let body = query.to_string();
        let mut frame = Vec::with_capacity(12 + body.len());
        frame.extend_from_slice(&token.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(body.as_bytes());
        self.shared
            .writer
            .lock()
            .expect("writer lock")
            .write_all(&frame)?;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self
            .shared
            .writer
            .lock()
            .map(|stream| stream.shutdown(Shutdown::Both));
    }
}

fn lost(reason: &str) -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        reason.to_owned(),
    ))
}

impl Shared {
    /// Waits for the next response to `token`, reading the socket when no
    /// other query does.
    fn wait(&self, token: u64, receiver: &Receiver<Delivery>) -> Result<Value, String> {
        loop {
            if let Some(settled) = handed_over(receiver) {
                return settled;
            }
            if let Ok(mut reader) = self.reader.try_lock() {
                // Ours may have been handed over just before the socket was.
                let answer = match handed_over(receiver) {
                    Some(settled) => settled,
                    None => self.read_until(token, &mut reader),
                };
                drop(reader);
                self.offer_the_socket();
                return answer;
            }
            // Someone else reads: block until they hand us our response or
            // the socket. Registered first, so a reader that lets go after
            // our `try_lock` failed is sure to tell us; if it let go in
            // between, try again at once.
            self.set_blocked(token, true);
            let free = self.reader.try_lock().is_ok();
            let delivery = (!free).then(|| receiver.recv());
            self.set_blocked(token, false);
            match delivery {
                None => continue,
                Some(Ok(delivery)) => {
                    if let Some(settled) = delivery.settled() {
                        return settled;
                    }
                }
                Some(Err(_)) => return Err("the connection closed".into()),
            }
        }
    }

    fn set_blocked(&self, token: u64, blocked: bool) {
        let mut routes = self.routes.lock().expect("routes lock");
        if blocked {
            routes.blocked.insert(token);
        } else {
            routes.blocked.remove(&token);
        }
    }

    /// Reads responses, handing each to its query, until `token`'s comes.
    fn read_until(&self, token: u64, reader: &mut BufReader<TcpStream>) -> Result<Value, String> {
        loop {
            let (from, response) = match read_response(reader) {
                Ok(read) => read,
                Err(reason) => {
                    let mut routes = self.routes.lock().expect("routes lock");
                    for (_, route) in routes.waiting.drain() {
                        let _ = route.send(Delivery::Closed(reason.clone()));
                    }
                    routes.closed = Some(reason.clone());
                    return Err(reason);
                }
            };
            let last = response["t"].as_u64() != Some(SUCCESS_PARTIAL);
            let mut routes = self.routes.lock().expect("routes lock");
            let route = if last {
                routes.waiting.remove(&from)
            } else {
                routes.waiting.get(&from).cloned()
            };
            drop(routes);
            if from == token {
                return Ok(response);
            }
            // Nobody waiting: a cursor dropped before its STOP was answered.
            if let Some(route) = route {
                let _ = route.send(Delivery::Response(response));
            }
        }
    }

    /// The socket is free: every blocked query is told, and the first to
    /// take it reads. (Telling just one could tell a query that has its
    /// response already and is about to leave, and leave the rest waiting.)
    fn offer_the_socket(&self) {
        let routes = self.routes.lock().expect("routes lock");
        for token in &routes.blocked {
            if let Some(route) = routes.waiting.get(token) {
                let _ = route.send(Delivery::ReadYourself);
            }
        }
    }
}

impl Delivery {
    /// What the wait ends with; `None` for `ReadYourself` (try the socket).
    fn settled(self) -> Option<Result<Value, String>> {
        match self {
            Delivery::Response(response) => Some(Ok(response)),
            Delivery::Closed(reason) => Some(Err(reason)),
            Delivery::ReadYourself => None,
        }
    }
}

/// A response (or the end) already handed to this query, if any.
fn handed_over(receiver: &Receiver<Delivery>) -> Option<Result<Value, String>> {
    loop {
        match receiver.try_recv() {
            Ok(delivery) => {
                if let Some(settled) = delivery.settled() {
                    return Some(settled);
                }
            }
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => return Some(Err("the connection closed".into())),
        }
    }
}

/// One response frame: its token and its JSON body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u64, Value), String> {
    let mut header = [0u8; 12];
    reader
        .read_exact(&mut header)
        .map_err(|error| format!("the server closed the connection ({error})"))?;
    let token = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
    let length = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|error| format!("the server closed the connection mid-response ({error})"))?;
    let response = serde_json::from_slice(&body)
        .map_err(|error| format!("the server sent a response that is not JSON ({error})"))?;
    Ok((token, response))
}

/// The rows of one query, fetched a batch at a time. Dropping a cursor
/// whose query has more to send stops it on the server.
pub struct Cursor<'a> {
    connection: &'a Connection,
    token: u64,
    receiver: Receiver<Delivery>,
    buffer: VecDeque<Value>,
    /// The server holds more (a partial batch came last).
    more: bool,
    /// The query's result was an atom not yet taken by `run`.
    atom: Option<Value>,
}

impl Cursor<'_> {
    /// The query's result when it was an atom rather than a sequence
    /// (until the cursor is iterated).
    pub fn atom(&self) -> Option<&Value> {
        self.atom.as_ref()
    }

    /// Reads the next response into the buffer.
    fn receive(&mut self) -> Result<(), ClientError> {
        let response = match self.connection.shared.wait(self.token, &self.receiver) {
            Ok(response) => response,
            Err(reason) => {
                self.more = false;
                return Err(lost(&reason));
            }
        };
        let mut response = response;
        let response_type = response["t"].as_u64().unwrap_or_default();
        self.more = response_type == SUCCESS_PARTIAL;
        // Rows are moved out of the response, never copied: an atom is kept
        // whole (for `run`) and only spread into rows if iterated.
        let mut rows = match response.get_mut("r").map(Value::take) {
            Some(Value::Array(rows)) => rows,
            _ => Vec::new(),
        };
        match response_type {
            SUCCESS_ATOM => self.atom = Some(rows.pop().unwrap_or(Value::Null)),
            SUCCESS_SEQUENCE | SUCCESS_PARTIAL => self.buffer.extend(rows),
            WAIT_COMPLETE => {}
            _ => {
                let kind = ReqlErrorKind::from_response(response_type, response["e"].as_u64());
                let message = rows
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("the server gave no message")
                    .to_owned();
                self.more = false;
                return Err(ClientError::Reql { kind, message });
            }
        }
        Ok(())
    }
}

impl Iterator for Cursor<'_> {
    type Item = Result<Value, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        // An atom iterates as its items (an array) or as itself.
        match self.atom.take() {
            Some(Value::Array(items)) => self.buffer.extend(items),
            Some(other) => self.buffer.push_back(other),
            None => {}
        }
        loop {
            if let Some(row) = self.buffer.pop_front() {
                return Some(Ok(row));
            }
            if !self.more {
                return None;
            }
            if let Err(error) = self.connection.send(self.token, &json!([CONTINUE])) {
                self.more = false;
                return Some(Err(error));
            }
            if let Err(error) = self.receive() {
                return Some(Err(error));
            }
        }
    }
}

impl Drop for Cursor<'_> {
    fn drop(&mut self) {
        if self.more {
            let _ = self.connection.send(self.token, &json!([STOP]));
        }
    }
}

/// The V1_0 handshake as `user` with `password` on a socket the caller
/// speaks the protocol on itself (the benchmarks pipeline raw frames).
pub fn handshake(
    mut stream: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    user: &str,
    password: &str,
) -> Result<(), ClientError> {
    let client_nonce = base64_encode(&scram::random_bytes(18));
    let first_bare = format!("n={},r={client_nonce}", scram::escape_name(user));
    let mut hello = MAGIC_V1_0.to_le_bytes().to_vec();
    let first = json!({"protocol_version": 0, "authentication_method": "SCRAM-SHA-256", "authentication": format!("n,,{first_bare}")});
    hello.extend_from_slice(first.to_string().as_bytes());
    hello.push(0);
    stream.write_all(&hello)?;
    read_message(reader)?; // the server's version and protocol range
    let server_first = authentication(&read_message(reader)?)?;
    let nonce =
        scram::attribute(&server_first, "r").filter(|nonce| nonce.starts_with(&client_nonce));
    let salt = scram::attribute(&server_first, "s").and_then(|salt| base64_decode(salt).ok());
    let iterations =
        scram::attribute(&server_first, "i").and_then(|count| count.parse::<u32>().ok());
    let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
        return Err(ClientError::Protocol(format!(
            "unexpected SCRAM server-first message `{server_first}`"
        )));
    };
    let keys = Keys::derive(password, &salt, iterations);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let proof = base64_encode(&keys.client_proof(&auth_message));
    let mut last = json!({"authentication": format!("{without_proof},p={proof}")})
        .to_string()
        .into_bytes();
    last.push(0);
    stream.write_all(&last)?;
    let server_final = authentication(&read_message(reader)?)?;
    let expected = base64_encode(&keys.server_signature(&auth_message));
    if scram::attribute(&server_final, "v") != Some(expected.as_str()) {
        return Err(ClientError::Authentication(
            "the server's signature is wrong: it does not know this password".to_owned(),
        ));
    }
    Ok(())
}

/// One NUL-terminated handshake message; a refusal becomes its error.
fn read_message(reader: &mut BufReader<TcpStream>) -> Result<Value, ClientError> {
    let mut bytes = Vec::new();
    reader.read_until(0, &mut bytes)?;
    if bytes.pop() != Some(0) {
        return Err(lost(
            "the server closed the connection during the handshake",
        ));
    }
    let message: Value = serde_json::from_slice(&bytes).map_err(|_| {
        ClientError::Protocol(format!(
            "the server answered `{}`, not a handshake message",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    if message["success"] == Value::Bool(false) {
        let text = message["error"].as_str().unwrap_or("refused").to_owned();
        // Error codes 10–20 are authentication failures (PROTOCOL.md).
        return Err(match message["error_code"].as_u64() {
            Some(10..=20) => ClientError::Authentication(text),
            _ => ClientError::Protocol(text),
        });
    }
    Ok(message)
}

fn authentication(message: &Value) -> Result<String, ClientError> {
    message["authentication"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Protocol(format!("expected a SCRAM message, got {message}")))
}
