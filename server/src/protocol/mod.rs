//! The RethinkDB client protocol, version V1_0.
//!
//! - [`handshake`]: magic number, JSON messages ended by NUL, SCRAM-SHA-256.
//! - [`scram`]: the SCRAM computations (RFC 5802 / 7677).
//! - [`frame`]: query and response frames `[token u64][length u32][JSON]`.
//!
//! Byte formats are in `docs/design/protocol.md`.

pub mod frame;
pub mod handshake;
pub mod scram;
