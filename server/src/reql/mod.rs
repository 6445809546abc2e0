//! ReQL: terms as drivers send them, and their evaluation.
//!
//! - [`term`]: wire JSON → [`term::Term`] (compile errors for malformed terms).
//! - [`error`]: [`error::ReqlError`], the one error type of this layer, with
//!   RethinkDB's error classes and backtraces.
//! - [`eval`]: evaluation against the engine, on the connection's shard.
//! - [`function`]: functions, variables and `r.row`.
//! - [`stream`]: lazy sequences over tables and arrays.
//! - [`sequence`]: `pluck`, `merge`, `order_by`, aggregation and other
//!   sequence terms.
//! - [`admin`]: databases and tables (`db_create`, `table_list`, …).
//! - [`index`]: secondary indexes (`index_create`, …) and the index
//!   functions the engine runs on writes.
//! - [`datum_terms`]: terms on datums alone (`coerce_to`, `object`, `uuid`, …).
//! - [`write`]: writes, and `get_all`/`between`.
//! - [`feed`]: changefeeds (`changes`).
//! - [`system`]: the `rethinkdb` system database.
//! - [`time`]: time terms and calendar arithmetic.
//! - [`term_type`]: term numbers from `ql2.proto`.

pub mod admin;
pub mod aggregate;
pub mod cooperate;
pub mod datum_terms;
pub mod error;
pub mod eval;
pub mod feed;
pub mod function;
pub mod in_place;
pub mod index;
pub mod permission;
pub mod reconfigure;
pub mod sequence;
pub mod stream;
pub mod system;
pub mod term;
pub use photondb_client::term_type;
pub mod time;
pub mod write;
