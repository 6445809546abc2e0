//! `photondb-client` against a real `photondb serve`: the handshake,
//! cursors over many batches, STOP, queries multiplexed from threads on
//! one connection, a changefeed, and errors by class.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use photondb_client::{r, ClientError, ConnectOptions, Connection, ReqlErrorKind};
use serde_json::{json, Value};

struct Server {
    process: Child,
    port: u16,
    _directory: tempfile::TempDir,
}

impl Server {
    fn start(password: &str) -> Server {
        let directory = tempfile::tempdir().expect("scratch directory");
        let log = directory.path().join("server.log");
        let mut process = Command::new(env!("CARGO_BIN_EXE_photondb"))
            .args([
                "serve",
                "--driver-port",
                "0",
                "--http-port",
                "0",
                "--partitions",
                "4",
                "--wal-ring-size",
                "4MiB",
            ])
            .arg("--data-dir")
            .arg(directory.path().join("data"))
            .args(["--initial-password", password])
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
                    .expect("an address");
                let port = address
                    .rsplit(':')
                    .next()
                    .and_then(|port| port.parse().ok())
                    .expect("a port");
                return Server {
                    process,
                    port,
                    _directory: directory,
                };
            }
            if Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.wait();
                panic!("server did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&self, password: &str) -> Result<Connection, ClientError> {
        Connection::connect(&ConnectOptions {
            port: self.port,
            password: password.to_owned(),
            ..ConnectOptions::default()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn queries_cursors_and_errors_through_one_connection() {
    let server = Server::start("");
    let connection = server.connect("").expect("connect");
    let people = r::db("test").table("people");
    assert_eq!(
        connection
            .run(&r::db("test").table_create("people"))
            .unwrap()["tables_created"],
        json!(1)
    );

    // Enough rows for several batches: the cursor must CONTINUE.
    let documents: Vec<Value> = (0..3000)
        .map(|id| json!({"id": id, "group": id % 3, "tags": ["x", id]}))
        .collect();
    let inserted = connection
        .run(&people.insert(Value::Array(documents)))
        .unwrap();
    assert_eq!(inserted["inserted"], json!(3000));
    let mut seen: Vec<i64> = connection
        .cursor(&people)
        .unwrap()
        .map(|row| row.unwrap()["id"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..3000).collect::<Vec<_>>());

    // Dropping a cursor early stops its query; the connection goes on.
    let mut partial = connection.cursor(&people).unwrap();
    assert!(partial.next().unwrap().is_ok());
    drop(partial);
    assert_eq!(
        connection
            .run(
                &people
                    .filter(r::func(|row| row.field("group").eq(1)))
                    .count()
            )
            .unwrap(),
        json!(1000)
    );
    assert_eq!(
        connection.run(&people.get(7)).unwrap()["tags"],
        json!(["x", 7])
    );

    // Many threads, one connection: each answer reaches its own query,
    // whichever query happens to be reading the socket. Some threads read
    // whole tables (many batches, CONTINUE after CONTINUE) while others get
    // single documents, and one holds a cursor open half read throughout.
    let mut held = connection.cursor(&people).unwrap();
    assert!(held.next().unwrap().is_ok());
    std::thread::scope(|scope| {
        for thread in 0..8i64 {
            let (connection, people) = (&connection, &people);
            scope.spawn(move || {
                for id in (thread * 50)..(thread * 50 + 50) {
                    if thread % 4 == 3 && id % 25 == 0 {
                        let rows = connection.cursor(people).unwrap().count();
                        assert_eq!(rows, 3000);
                    }
                    let document = connection.run(&people.get(id)).unwrap();
                    assert_eq!(document["id"], json!(id));
                }
            });
        }
    });
    assert_eq!(held.count(), 2999);

    // Errors come back with RethinkDB's class and message.
    let error = connection.run(&r::expr(1).field("x")).unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Reql {
                kind: ReqlErrorKind::QueryLogic,
                ..
            }
        ),
        "{error}"
    );
    let error = connection.run(&r::db("nope").table("t")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "ReqlOpFailedError: Database `nope` does not exist."
    );
}

#[test]
fn a_changefeed_delivers_writes_from_another_connection() {
    let server = Server::start("");
    let connection = server.connect("").expect("connect");
    connection
        .run(&r::db("test").table_create("events"))
        .unwrap();
    let events = r::db("test").table("events");
    let mut feed = connection.cursor(&events.changes()).unwrap();
    let writer = server.connect("").expect("connect");
    writer
        .run(&events.insert(json!({"id": "a", "value": 1})))
        .unwrap();
    let change = feed.next().expect("a change").expect("not an error");
    assert_eq!(
        change,
        json!({"new_val": {"id": "a", "value": 1}, "old_val": null})
    );
    drop(feed);
    assert_eq!(connection.run(&events.count()).unwrap(), json!(1));
}

#[test]
fn a_server_that_goes_away_fails_the_waiting_queries() {
    let mut server = Server::start("");
    let connection = server.connect("").expect("connect");
    connection
        .run(&r::db("test").table_create("events"))
        .unwrap();
    let events = r::db("test").table("events");
    std::thread::scope(|scope| {
        // Two queries wait on the same socket (one reads it, one is handed
        // to) when the server dies: both must fail, not hang.
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let (connection, events) = (&connection, &events);
                scope.spawn(move || {
                    let mut feed = connection.cursor(&events.changes()).unwrap();
                    feed.next()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let _ = server.process.kill();
        for waiter in waiting {
            let ended = waiter.join().unwrap();
            assert!(matches!(ended, Some(Err(ClientError::Io(_)))), "{ended:?}");
        }
    });
    assert!(connection.run(&events.count()).is_err());
}

#[test]
fn passwords_are_checked() {
    let server = Server::start("s3cret");
    assert!(server.connect("s3cret").is_ok());
    let error = server
        .connect("wrong")
        .err()
        .expect("a wrong password is refused");
    assert!(matches!(error, ClientError::Authentication(_)), "{error}");
    let unknown = Connection::connect(&ConnectOptions {
        port: server.port,
        user: "nobody".to_owned(),
        ..ConnectOptions::default()
    });
    assert!(matches!(unknown, Err(ClientError::Authentication(_))));
}
