//! A blocking client of the RethinkDB V1_0 wire protocol.
//!
//! - [`Connection`]: the SCRAM-SHA-256 handshake, then queries multiplexed
//!   by token over one socket; whichever waiting query reads the socket
//!   routes each response to the query that waits for it, so many threads
//!   may share a connection.
//! - [`Cursor`]: the rows of a sequence or changefeed, fetched batch by
//!   batch with CONTINUE; dropping it early sends STOP.
//! - [`Term`] and [`r`]: a small typed builder for the terms the CLI and
//!   the benchmarks use, with [`Term::raw`] for any other wire JSON.
//! - [`scram`]: the SCRAM arithmetic, shared with the server.
//!
//! Blocking on purpose: the CLI and the benchmark workers are threads, and
//! a benchmark should measure the server, not an async runtime.

mod connection;
mod error;
pub mod scram;
mod term;
pub mod term_type;

pub use connection::{handshake, ConnectOptions, Connection, Cursor};
pub use error::{ClientError, ReqlErrorKind};
pub use term::{r, Term};
