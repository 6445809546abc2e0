//! The documents the crash torture writes, and how to check one.
//!
//! Each document carries its writer, its sequence number (increasing per
//! writer across every run) and a payload whose crc32c is stored beside it,
//! so a half-written document cannot pass as a whole one.

use bytes::Bytes;
use photondb_datum::{document, key, Datum, Object};

pub const DATABASE: &str = "test";
pub const TABLE: &str = "torture";

pub fn key_for(writer: u32, slot: u32) -> Bytes {
    Bytes::from(key::encode(&Datum::String(format!("w{writer:03}-k{slot:04}"))))
}

pub fn document_for(writer: u32, slot: u32, sequence: u64) -> Bytes {
    let payload: String = (0..(64 + sequence % 256)).map(|index| char::from(b'a' + ((sequence + index) % 26) as u8)).collect();
    let mut fields = Object::new();
    fields.insert("id".into(), Datum::String(format!("w{writer:03}-k{slot:04}")));
    fields.insert("writer".into(), Datum::Number(writer as f64));
    fields.insert("sequence".into(), Datum::Number(sequence as f64));
    fields.insert("checksum".into(), Datum::Number(crc32c::crc32c(payload.as_bytes()) as f64));
    fields.insert("payload".into(), Datum::String(payload));
    Bytes::from(document::encode(&Datum::Object(fields)))
}

/// Checks a stored document and returns its sequence number.
pub fn verify(bytes: &[u8]) -> Result<u64, String> {
    let Datum::Object(fields) = document::decode(bytes).map_err(|error| error.to_string())? else {
        return Err("not an object".into());
    };
    let (Some(Datum::Number(sequence)), Some(Datum::Number(checksum)), Some(Datum::String(payload))) =
        (fields.get("sequence"), fields.get("checksum"), fields.get("payload"))
    else {
        return Err(format!("missing fields: {fields:?}"));
    };
    if crc32c::crc32c(payload.as_bytes()) as f64 != *checksum {
        return Err("payload checksum mismatch".into());
    }
    Ok(*sequence as u64)
}
