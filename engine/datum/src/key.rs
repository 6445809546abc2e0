//! Order-preserving key encoding.
//!
//! `encode(a) < encode(b)` byte-wise exactly when `a.cmp_reql(b)` is `Less`.
//! The storage engine compares keys as plain bytes and hashes them to pick a
//! partition, so two equal datums (`0` and `-0`, objects written in another
//! field order) must encode to the same bytes — and they do.
//!
//! ```text
//! value    := tag payload
//! array    := 0x01 value* 0x00              (0x00 sorts below every tag: prefix first)
//! bool     := 0x02 (0x00 | 0x01)
//! null     := 0x03
//! number   := 0x04 u64-be(order_bits(f64))
//! object   := 0x05 (0x01 escaped(key) value)* 0x00   (pairs in key order)
//! binary   := 0x06 escaped(bytes)
//! time     := 0x08 u64-be(order_bits(epoch seconds))
//! string   := 0x09 escaped(utf-8 bytes)
//! escaped  := each 0x00 written 0x00 0xFF, then the terminator 0x00 0x00
//! ```
//!
//! The timezone of a time is not part of its key: RethinkDB orders and
//! compares times by instant alone.

use crate::{Datum, DatumError, Object};

const TAG_ARRAY: u8 = 0x01;
const TAG_BOOL: u8 = 0x02;
const TAG_NULL: u8 = 0x03;
const TAG_NUMBER: u8 = 0x04;
const TAG_OBJECT: u8 = 0x05;
const TAG_BINARY: u8 = 0x06;
const TAG_TIME: u8 = 0x08;
const TAG_STRING: u8 = 0x09;
const END: u8 = 0x00;
const PAIR: u8 = 0x01;

/// Encodes `datum` as a byte-comparable key.
pub fn encode(datum: &Datum) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_into(datum, &mut out);
    out
}

/// Appends the key encoding of `datum` to `out`.
pub fn encode_into(datum: &Datum, out: &mut Vec<u8>) {
    match datum {
        Datum::Array(items) => {
            out.push(TAG_ARRAY);
            for item in items {
                encode_into(item, out);
            }
            out.push(END);
        }
        Datum::Bool(value) => {
            out.push(TAG_BOOL);
            out.push(u8::from(*value));
        }
        Datum::Null => out.push(TAG_NULL),
        Datum::Number(value) => {
            out.push(TAG_NUMBER);
            out.extend_from_slice(&order_bits(*value).to_be_bytes());
        }
        Datum::Object(fields) => {
            out.push(TAG_OBJECT);
            for (key, value) in fields {
                out.push(PAIR);
                escape_into(key.as_bytes(), out);
                encode_into(value, out);
            }
            out.push(END);
        }
        Datum::Binary(bytes) => {
            out.push(TAG_BINARY);
            escape_into(bytes, out);
        }
        Datum::Time { epoch_seconds, .. } => {
            out.push(TAG_TIME);
            out.extend_from_slice(&order_bits(*epoch_seconds).to_be_bytes());
        }
        Datum::String(text) => {
            out.push(TAG_STRING);
            escape_into(text.as_bytes(), out);
        }
    }
}

/// Decodes a whole key. Times come back in UTC (`+00:00`): the key does not
/// keep the timezone.
pub fn decode(bytes: &[u8]) -> Result<Datum, DatumError> {
    let mut reader = Reader { bytes, position: 0 };
    let datum = reader.value()?;
    if reader.position != bytes.len() {
        return Err(reader.malformed());
    }
    Ok(datum)
}

/// Maps an f64 to a u64 whose unsigned order is the numeric order, with
/// `-0.0` folded onto `0.0`.
fn order_bits(value: f64) -> u64 {
    let value = if value == 0.0 { 0.0 } else { value };
    let bits = value.to_bits();
    if bits & (1 << 63) != 0 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn from_order_bits(bits: u64) -> f64 {
    if bits & (1 << 63) != 0 {
        f64::from_bits(bits & !(1 << 63))
    } else {
        f64::from_bits(!bits)
    }
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn malformed(&self) -> DatumError {
        DatumError::Malformed {
            what: "key",
            offset: self.position,
        }
    }

    fn byte(&mut self) -> Result<u8, DatumError> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or_else(|| self.malformed())?;
        self.position += 1;
        Ok(byte)
    }

    fn peek(&self) -> Result<u8, DatumError> {
        self.bytes
            .get(self.position)
            .copied()
            .ok_or_else(|| self.malformed())
    }

    fn float(&mut self) -> Result<f64, DatumError> {
        let end = self.position + 8;
        let chunk = self
            .bytes
            .get(self.position..end)
            .ok_or_else(|| self.malformed())?;
        self.position = end;
        let value = from_order_bits(u64::from_be_bytes(chunk.try_into().expect("8 bytes")));
        if value.is_finite() {
            Ok(value)
        } else {
            Err(self.malformed())
        }
    }

    fn escaped(&mut self) -> Result<Vec<u8>, DatumError> {
        let mut out = Vec::new();
        loop {
            let byte = self.byte()?;
            if byte != 0 {
                out.push(byte);
                continue;
            }
            match self.byte()? {
                0x00 => return Ok(out),
                0xFF => out.push(0),
                _ => return Err(self.malformed()),
            }
        }
    }

    fn string(&mut self) -> Result<String, DatumError> {
        let bytes = self.escaped()?;
        String::from_utf8(bytes).map_err(|_| self.malformed())
    }

    fn value(&mut self) -> Result<Datum, DatumError> {
        Ok(match self.byte()? {
            TAG_ARRAY => {
                let mut items = Vec::new();
                while self.peek()? != END {
                    items.push(self.value()?);
                }
                self.position += 1;
                Datum::Array(items)
            }
            TAG_BOOL => match self.byte()? {
                0 => Datum::Bool(false),
                1 => Datum::Bool(true),
                _ => return Err(self.malformed()),
            },
            TAG_NULL => Datum::Null,
            TAG_NUMBER => Datum::Number(self.float()?),
            TAG_OBJECT => {
                let mut fields = Object::new();
                loop {
                    match self.byte()? {
                        END => break,
                        PAIR => {
                            let key = self.string()?;
                            let value = self.value()?;
                            fields.insert(key, value);
                        }
                        _ => return Err(self.malformed()),
                    }
                }
                Datum::Object(fields)
            }
            TAG_BINARY => Datum::Binary(self.escaped()?),
            TAG_TIME => Datum::Time {
                epoch_seconds: self.float()?,
                timezone: "+00:00".into(),
            },
            TAG_STRING => Datum::String(self.string()?),
            _ => {
                self.position -= 1;
                return Err(self.malformed());
            }
        })
    }
}
