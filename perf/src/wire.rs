#![allow(dead_code)] // Each benchmark uses part of the client.
//! Raw frames of the RethinkDB wire protocol for benchmarks that pipeline
//! many queries on one socket (which `photondb-client` does not expose),
//! and starting a server to measure.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A blocking V1_0 connection as user `admin` with an empty password.
pub struct Connection {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Connection {
    pub fn open(port: u16) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        photondb_client::handshake(&stream, &mut reader, "admin", "")
            .expect("authenticate as admin");
        Connection { stream, reader }
    }

    pub fn send(&mut self, token: u64, query: &Value) {
        let body = query.to_string();
        let mut frame = Vec::with_capacity(12 + body.len());
        frame.extend_from_slice(&token.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(body.as_bytes());
        self.stream.write_all(&frame).expect("send");
    }

    pub fn receive(&mut self) -> (u64, Value) {
        let mut header = [0u8; 12];
        self.reader
            .read_exact(&mut header)
            .expect("response header");
        let token = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).expect("response body");
        (token, serde_json::from_slice(&body).expect("response JSON"))
    }

    pub fn run(&mut self, query: Value) -> Value {
        self.send(1, &json!([1, query, {}]));
        let (_, response) = self.receive();
        assert!(
            response["t"] == 1 || response["t"] == 2,
            "query failed: {response}"
        );
        response["r"][0].clone()
    }
}

pub fn table(name: &str) -> Value {
    json!([15, [[14, ["test"]], name]])
}

/// Starts `photondb serve` on ports it picks itself; returns it and the
/// driver port it names in its log.
pub fn start_server(binary: &str, directory: &std::path::Path) -> (Child, u16) {
    start_server_with(binary, directory, &[])
}

/// `start_server` with more flags for `serve`.
pub fn start_server_with(
    binary: &str,
    directory: &std::path::Path,
    flags: &[&str],
) -> (Child, u16) {
    let log = directory.join("server.log");
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--data-dir",
            directory.join("data").to_str().expect("utf-8 path"),
            "--driver-port",
            "0",
            "--http-port",
            "0",
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start photondb");
    let deadline = Instant::now() + Duration::from_secs(60);
    const LISTENING: &str = "listening for RethinkDB drivers driver_address=";
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(start) = text.find(LISTENING) {
            let address = text[start + LISTENING.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            let port = address
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .expect("driver port in the log");
            return (child, port);
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "server exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `key=value` field of the server's log line that says it is ready
/// (`cache_mib`, `shards`), as the server printed it.
pub fn ready_field(directory: &std::path::Path, key: &str) -> Option<String> {
    let log = std::fs::read_to_string(directory.join("server.log")).ok()?;
    let line = log
        .lines()
        .find(|line| line.contains("PhotonDB is ready"))?;
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&prefix))
        .map(str::to_owned)
}

impl Connection {
    /// Runs a query whose result may be a cursor and reads it to its end;
    /// returns the number of rows (an atom counts as one).
    pub fn collect(&mut self, query: Value, global: Value) -> usize {
        self.send(1, &json!([1, query, global]));
        let mut rows = 0;
        loop {
            let (_, response) = self.receive();
            match response["t"].as_u64() {
                // An atom: an array counts its items.
                Some(1) => return response["r"][0].as_array().map_or(1, Vec::len),
                Some(2) => return rows + response["r"].as_array().map_or(0, Vec::len),
                Some(3) => {
                    rows += response["r"].as_array().map_or(0, Vec::len);
                    self.send(1, &json!([2]));
                }
                _ => panic!("query failed: {response}"),
            }
        }
    }
}
