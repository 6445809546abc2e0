//! JSON ⇄ [`Datum`], with RethinkDB's pseudo-types.
//!
//! Numbers: an integral double within ±2^53 is written as a JSON integer
//! (`1.0` → `1`), as RethinkDB does; `-0.0` stays `-0.0`.

use serde_json::{Map, Number, Value};

use crate::{Datum, DatumError, Object};

const REQL_TYPE: &str = "$reql_type$";

/// Converts parsed JSON into a datum, turning `$reql_type$` objects into
/// binary and time values.
pub fn from_json(value: &Value) -> Result<Datum, DatumError> {
    Ok(match value {
        Value::Null => Datum::Null,
        Value::Bool(value) => Datum::Bool(*value),
        Value::Number(number) => {
            let value = number
                .as_f64()
                .filter(|value| value.is_finite())
                .ok_or_else(|| DatumError::InvalidJson(format!("Non-finite number: {number}")))?;
            Datum::Number(value)
        }
        Value::String(text) => Datum::String(text.clone()),
        Value::Array(items) => Datum::Array(items.iter().map(from_json).collect::<Result<_, _>>()?),
        Value::Object(fields) => match fields.get(REQL_TYPE) {
            Some(Value::String(kind)) if kind == "BINARY" => binary_from_json(fields)?,
            Some(Value::String(kind)) if kind == "TIME" => time_from_json(fields)?,
            _ => {
                let mut object = Object::new();
                for (key, value) in fields {
                    object.insert(key.clone(), from_json(value)?);
                }
                Datum::Object(object)
            }
        },
    })
}

fn binary_from_json(fields: &Map<String, Value>) -> Result<Datum, DatumError> {
    let data = match fields.get("data") {
        Some(Value::String(data)) => data,
        _ => {
            return Err(DatumError::InvalidJson(
                "Invalid binary pseudotype: lacking `data` key.".into(),
            ))
        }
    };
    base64_decode(data)
        .map(Datum::Binary)
        .map_err(DatumError::InvalidJson)
}

fn time_from_json(fields: &Map<String, Value>) -> Result<Datum, DatumError> {
    let epoch_seconds = fields
        .get("epoch_time")
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            DatumError::InvalidJson(
                "Invalid time object: field `epoch_time` missing or not a number.".into(),
            )
        })?;
    let timezone = match fields.get("timezone") {
        Some(Value::String(timezone)) => timezone.clone(),
        None => "+00:00".to_owned(),
        Some(_) => {
            return Err(DatumError::InvalidJson(
                "Invalid time object: field `timezone` is not a string.".into(),
            ))
        }
    };
    Ok(Datum::Time {
        epoch_seconds: truncate_to_millis(epoch_seconds),
        timezone,
    })
}

/// Times are kept to the millisecond, as RethinkDB keeps them: truncated,
/// except that a value within a microsecond of a whole millisecond snaps to
/// it (1.001 is 1.000999… in binary and must stay 1.001). Idempotent.
pub fn truncate_to_millis(seconds: f64) -> f64 {
    let millis = seconds * 1e3;
    let nearest = millis.round();
    // The product carries rounding error that grows with the magnitude.
    let tolerance = (millis.abs() * 4.0 * f64::EPSILON).max(1e-3);
    let millis = if (millis - nearest).abs() < tolerance {
        nearest
    } else {
        millis.floor()
    };
    millis / 1e3
}

/// Converts a datum to JSON, pseudo-types in their raw `$reql_type$` form.
pub fn to_json(datum: &Datum) -> Value {
    match datum {
        Datum::Null => Value::Null,
        Datum::Bool(value) => Value::Bool(*value),
        Datum::Number(value) => number_to_json(*value),
        Datum::String(text) => Value::String(text.clone()),
        Datum::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Datum::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), to_json(value)))
                .collect(),
        ),
        Datum::Binary(bytes) => {
            let mut object = Map::new();
            object.insert(REQL_TYPE.into(), Value::String("BINARY".into()));
            object.insert("data".into(), Value::String(base64_encode(bytes)));
            Value::Object(object)
        }
        Datum::Time {
            epoch_seconds,
            timezone,
        } => {
            let mut object = Map::new();
            object.insert(REQL_TYPE.into(), Value::String("TIME".into()));
            object.insert("epoch_time".into(), number_to_json(*epoch_seconds));
            object.insert("timezone".into(), Value::String(timezone.clone()));
            Value::Object(object)
        }
    }
}

/// Writes a datum as JSON text, exactly as serializing [`to_json`]'s value
/// would, without building that value: one pass, no allocation per field.
pub fn write_json(datum: &Datum, out: &mut Vec<u8>) {
    match datum {
        Datum::Null => out.extend_from_slice(b"null"),
        Datum::Bool(true) => out.extend_from_slice(b"true"),
        Datum::Bool(false) => out.extend_from_slice(b"false"),
        Datum::Number(value) => write_number(*value, out),
        Datum::String(text) => write_string(text, out),
        Datum::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Datum::Object(fields) => {
            out.push(b'{');
            for (index, (key, value)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_json(value, out);
            }
            out.push(b'}');
        }
        Datum::Binary(bytes) => write_binary(bytes, out),
        Datum::Time {
            epoch_seconds,
            timezone,
        } => write_time(*epoch_seconds, timezone, out),
    }
}

/// A number as [`to_json`] renders it (integral values as integers).
pub(crate) fn write_number(value: f64, out: &mut Vec<u8>) {
    write_value(&number_to_json(value), out);
}

/// Binary data as its pseudo-type: keys in sorted order, as `to_json`'s
/// map has them.
pub(crate) fn write_binary(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"$reql_type$\":\"BINARY\",\"data\":");
    write_string(&base64_encode(bytes), out);
    out.push(b'}');
}

/// A time as its pseudo-type, keys in sorted order.
pub(crate) fn write_time(epoch_seconds: f64, timezone: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"$reql_type$\":\"TIME\",\"epoch_time\":");
    write_number(epoch_seconds, out);
    out.extend_from_slice(b",\"timezone\":");
    write_string(timezone, out);
    out.push(b'}');
}

/// A JSON string, escaped as serde_json escapes it (`\"`, `\\`, the short
/// forms of `\b \f \n \r \t`, other control characters as `\u00xx`,
/// everything else as it is), but eight bytes at a time where none needs
/// escaping: serializing strings was a tenth of a short scan's CPU.
pub(crate) fn write_string(text: &str, out: &mut Vec<u8>) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Exact tests on the eight bytes of a word: does one equal zero, or
    // lie below 0x20 (bytes of 0x80 and over never count)?
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let has_control = |word: u64| word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut copied, mut index) = (0, 0);
    while index < bytes.len() {
        if let Some(chunk) = bytes.get(index..index + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let plain = !has_control(word)
                && !has_zero(word ^ (ONES * u64::from(b'"')))
                && !has_zero(word ^ (ONES * u64::from(b'\\')));
            if plain {
                index += 8;
                continue;
            }
        }
        let byte = bytes[index];
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => {
                index += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[copied..index]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        index += 1;
        copied = index;
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, value).expect("writing to a Vec cannot fail");
}

/// Largest magnitude at which every integer is exactly representable.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0;

fn number_to_json(value: f64) -> Value {
    let is_negative_zero = value == 0.0 && value.is_sign_negative();
    if value.fract() == 0.0 && value.abs() <= EXACT_INTEGER_LIMIT && !is_negative_zero {
        Value::Number(Number::from(value as i64))
    } else {
        Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as RethinkDB sends binary data.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(BASE64_ALPHABET[((group >> (18 - 6 * index)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; whitespace is ignored. Anything else that is
/// not base64 is an error worded as RethinkDB words it.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut group = 0u32;
    let mut count: usize = 0;
    let mut padding: usize = 0;
    for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace()) {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                0
            }
            other => {
                return Err(format!(
                    "Invalid base64 character found: '{}'.",
                    other as char
                ))
            }
        };
        if padding > 0 && byte != b'=' {
            return Err("Invalid base64 format, data found after padding character '='.".into());
        }
        group = (group << 6) | u32::from(sextet);
        count += 1;
        if count == 4 {
            let decoded = [(group >> 16) as u8, (group >> 8) as u8, group as u8];
            out.extend_from_slice(&decoded[..3 - padding.min(2)]);
            group = 0;
            count = 0;
        }
    }
    if count == 1 {
        return Err(
            "Invalid base64 length: 1 character remaining, cannot decode a full byte.".into(),
        );
    }
    if count != 0 {
        // Unpadded tail: keep the whole bytes it carries.
        group <<= 6 * (4 - count);
        let decoded = [(group >> 16) as u8, (group >> 8) as u8, group as u8];
        out.extend_from_slice(&decoded[..count.saturating_sub(1)]);
    }
    Ok(out)
}
