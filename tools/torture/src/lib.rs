//! The documents the crash torture writes, and how to check one.
//!
//! Each document carries its writer, its sequence number (increasing per
//! writer across every run) and a payload whose crc32c is stored beside it,
//! so a half-written document cannot pass as a whole one. A secondary index
//! on its `bucket` (the sequence modulo 13) changes with every write, so
//! index entries and documents can be checked against each other.

use std::rc::Rc;

use bytes::Bytes;
use photondb_datum::{document, key, Datum, Object};
use photondb_runtime::{Engine, IndexCompiler};
use photondb_storage::catalog::IndexConfig;
use photondb_storage::index::entry_key;
use photondb_storage::IndexFunction;

pub const DATABASE: &str = "test";
pub const TABLE: &str = "torture";
/// A secondary index on the documents' `bucket` field.
pub const INDEX: &str = "by_bucket";
const BUCKETS: u64 = 13;

/// The index functions of the torture's table: the stored "function" is
/// the name of the field to index (the harness has no query language; the
/// server compiles ReQL here instead).
pub struct FieldIndexes;

struct FieldIndex(String);

impl IndexFunction for FieldIndex {
    fn secondary_keys(&self, stored: &[u8]) -> Vec<Vec<u8>> {
        match document::decode(stored) {
            Ok(Datum::Object(fields)) => fields
                .get(&self.0)
                .map(|value| vec![key::encode(value)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl IndexCompiler for FieldIndexes {
    fn compile(
        &self,
        _engine: &Engine,
        index: &IndexConfig,
    ) -> Result<Rc<dyn IndexFunction>, String> {
        Ok(Rc::new(FieldIndex(index.function.clone())))
    }
}

/// The entries an index on `bucket` must hold for these rows.
pub fn expected_entries(rows: &[(Bytes, Bytes)]) -> std::collections::BTreeSet<Bytes> {
    let index = FieldIndex("bucket".into());
    rows.iter()
        .flat_map(|(key, stored)| {
            index
                .secondary_keys(stored)
                .into_iter()
                .map(move |secondary| entry_key(&secondary, key))
        })
        .collect()
}

pub fn key_for(writer: u32, slot: u32) -> Bytes {
    Bytes::from(key::encode(&Datum::String(format!(
        "w{writer:03}-k{slot:04}"
    ))))
}

pub fn document_for(writer: u32, slot: u32, sequence: u64) -> Bytes {
    let payload: String = (0..(64 + sequence % 256))
        .map(|index| char::from(b'a' + ((sequence + index) % 26) as u8))
        .collect();
    let mut fields = Object::new();
    fields.insert(
        "id".into(),
        Datum::String(format!("w{writer:03}-k{slot:04}")),
    );
    fields.insert("writer".into(), Datum::Number(writer as f64));
    fields.insert("sequence".into(), Datum::Number(sequence as f64));
    fields.insert("bucket".into(), Datum::Number((sequence % BUCKETS) as f64));
    fields.insert(
        "checksum".into(),
        Datum::Number(crc32c::crc32c(payload.as_bytes()) as f64),
    );
    fields.insert("payload".into(), Datum::String(payload));
    Bytes::from(document::encode(&Datum::Object(fields)))
}

/// Checks a stored document and returns its sequence number.
pub fn verify(bytes: &[u8]) -> Result<u64, String> {
    let Datum::Object(fields) = document::decode(bytes).map_err(|error| error.to_string())? else {
        return Err("not an object".into());
    };
    let (
        Some(Datum::Number(sequence)),
        Some(Datum::Number(checksum)),
        Some(Datum::String(payload)),
    ) = (
        fields.get("sequence"),
        fields.get("checksum"),
        fields.get("payload"),
    )
    else {
        return Err(format!("missing fields: {fields:?}"));
    };
    if crc32c::crc32c(payload.as_bytes()) as f64 != *checksum {
        return Err("payload checksum mismatch".into());
    }
    Ok(*sequence as u64)
}
