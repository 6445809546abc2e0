//! ReQL values and their byte forms.
//!
//! - [`Datum`]: a ReQL value (null, bool, number, string, array, object and the
//!   pseudo-types binary and time), ordered by RethinkDB's total order
//!   ([`Datum::cmp_reql`]): values of different types sort by type name —
//!   arrays < booleans < null < numbers < objects < binary < geometry < times
//!   < strings.
//! - [`key`]: an order-preserving byte encoding of a datum: comparing two
//!   encodings byte by byte gives the same answer as [`Datum::cmp_reql`]. The
//!   storage engine keys its trees by it and never decodes a key to compare.
//! - [`document`]: the compact binary form documents are stored in. A field
//!   can be read from it without decoding the rest ([`document::DocumentRef`]).
//! - [`json`]: conversion to and from JSON, pseudo-types included.
//!
//! This crate knows nothing of storage, networks or runtimes.

pub mod document;
pub mod json;
pub mod key;
mod value;

pub use value::{Datum, Object};

/// A value that cannot be represented in one of this crate's byte forms.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DatumError {
    /// The bytes are not a valid encoding. Storage reports this as corruption.
    #[error("malformed {what} encoding at byte {offset}")]
    Malformed { what: &'static str, offset: usize },
    /// A JSON value that is not a valid ReQL datum (a bad pseudo-type, a
    /// non-finite number). A user error: report it to the client.
    #[error("{0}")]
    InvalidJson(String),
}
