//! The compact binary form of a document.
//!
//! Stored documents are read far more often than they are written, and most
//! reads want a few fields (a primary key, a filter field), so the form keeps
//! offset tables that let [`DocumentRef`] reach a field by binary search
//! without decoding anything else.
//!
//! ```text
//! value   := tag body                       all integers little-endian
//! null    := 0x00        false := 0x01       true := 0x02
//! number  := 0x03 f64
//! string  := 0x04 u32:len bytes
//! binary  := 0x07 u32:len bytes
//! time    := 0x08 f64:epoch_seconds u8:len timezone
//! array   := 0x05 u32:count u32:body_len u32:offset[count] element*
//! object  := 0x06 u32:count u32:body_len (u32:key_offset u32:key_len u32:value_offset)[count]
//!                 key-bytes* value*     (written so; read by offset, any order)
//! ```
//! Offsets count from the first byte after the offset table. Object entries
//! are sorted by key bytes. Every offset is bounds-checked on read, so bad
//! bytes give [`DatumError::Malformed`], never a panic.

use std::cell::Cell;
use std::cmp::Ordering;

use crate::value::TypeRank;
use crate::{Datum, DatumError, Object};

const NULL: u8 = 0x00;
const FALSE: u8 = 0x01;
const TRUE: u8 = 0x02;
const NUMBER: u8 = 0x03;
const STRING: u8 = 0x04;
const ARRAY: u8 = 0x05;
const OBJECT: u8 = 0x06;
const BINARY: u8 = 0x07;
const TIME: u8 = 0x08;

/// Encodes `datum` in the compact form, in an allocation of exactly its
/// size.
///
/// Stored documents stay in memory as these allocations until a checkpoint
/// writes them. Grown by doubling, a 1.3 KiB document took five
/// reallocations and then sat in a 2 KiB block.
pub fn encode(datum: &Datum) -> Vec<u8> {
    let size = encoded_size(datum);
    let mut out = Vec::with_capacity(size);
    encode_into(datum, &mut out);
    debug_assert_eq!(out.len(), size);
    out
}

/// The bytes [`encode`] writes for `datum`.
pub fn encoded_size(datum: &Datum) -> usize {
    match datum {
        Datum::Null | Datum::Bool(_) => 1,
        Datum::Number(_) => 1 + 8,
        Datum::String(text) => 1 + 4 + text.len(),
        Datum::Binary(bytes) => 1 + 4 + bytes.len(),
        Datum::Time { timezone, .. } => 1 + 8 + 1 + timezone.len().min(255),
        Datum::Array(items) => {
            1 + 4
                + 4
                + items
                    .iter()
                    .map(|item| 4 + encoded_size(item))
                    .sum::<usize>()
        }
        Datum::Object(fields) => {
            1 + 4
                + 4
                + fields
                    .iter()
                    .map(|(key, value)| 12 + key.len() + encoded_size(value))
                    .sum::<usize>()
        }
    }
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).expect("documents are far below 4 GiB");
    out.extend_from_slice(&value.to_le_bytes());
}

fn patch_u32(out: &mut [u8], at: usize, value: usize) {
    let value = u32::try_from(value).expect("documents are far below 4 GiB");
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub fn encode_into(datum: &Datum, out: &mut Vec<u8>) {
    match datum {
        Datum::Null => out.push(NULL),
        Datum::Bool(false) => out.push(FALSE),
        Datum::Bool(true) => out.push(TRUE),
        Datum::Number(value) => {
            out.push(NUMBER);
            out.extend_from_slice(&value.to_le_bytes());
        }
        Datum::String(text) => {
            out.push(STRING);
            put_u32(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Datum::Binary(bytes) => {
            out.push(BINARY);
            put_u32(out, bytes.len());
            out.extend_from_slice(bytes);
        }
        Datum::Time {
            epoch_seconds,
            timezone,
        } => {
            out.push(TIME);
            out.extend_from_slice(&epoch_seconds.to_le_bytes());
            let timezone = &timezone.as_bytes()[..timezone.len().min(255)];
            out.push(timezone.len() as u8);
            out.extend_from_slice(timezone);
        }
        Datum::Array(items) => {
            out.push(ARRAY);
            put_u32(out, items.len());
            let body_len_at = out.len();
            put_u32(out, 0);
            let table_at = out.len();
            out.resize(table_at + 4 * items.len(), 0);
            let body_at = out.len();
            for (index, item) in items.iter().enumerate() {
                let offset = out.len() - body_at;
                patch_u32(out, table_at + 4 * index, offset);
                encode_into(item, out);
            }
            let body_len = out.len() - body_at;
            patch_u32(out, body_len_at, body_len);
        }
        Datum::Object(fields) => {
            out.push(OBJECT);
            put_u32(out, fields.len());
            let body_len_at = out.len();
            put_u32(out, 0);
            let table_at = out.len();
            out.resize(table_at + 12 * fields.len(), 0);
            let body_at = out.len();
            // BTreeMap iterates in key byte order: the table comes out sorted.
            // Every key is written before any value, so a field lookup's
            // binary search reads one or two cache lines of keys instead of
            // a line per probe spread over the document (readers follow the
            // offsets and accept either placement).
            for (index, key) in fields.keys().enumerate() {
                let entry = table_at + 12 * index;
                let key_offset = out.len() - body_at;
                patch_u32(out, entry, key_offset);
                patch_u32(out, entry + 4, key.len());
                out.extend_from_slice(key.as_bytes());
            }
            for (index, value) in fields.values().enumerate() {
                let value_offset = out.len() - body_at;
                patch_u32(out, table_at + 12 * index + 8, value_offset);
                encode_into(value, out);
            }
            let body_len = out.len() - body_at;
            patch_u32(out, body_len_at, body_len);
        }
    }
}

/// Decodes a whole document, checking that nothing trails it.
pub fn decode(bytes: &[u8]) -> Result<Datum, DatumError> {
    let document = DocumentRef::new(bytes)?;
    if document.encoded_len()? != bytes.len() {
        return Err(malformed(document.encoded_len()?));
    }
    document.to_datum()
}

/// Writes a whole stored document as JSON text, exactly as decoding it
/// and writing the datum with [`crate::json::write_json`] would, with no
/// datum in between (a point read's answer is its stored document).
/// Malformed bytes are an error, as [`decode`] finds them, and leave `out`
/// as it was; so is an object whose keys are not in strictly ascending
/// order, which [`encode`] never writes.
pub fn write_json(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), DatumError> {
    let start = out.len();
    let written = DocumentRef::new(bytes).and_then(|document| {
        if document.encoded_len()? != bytes.len() {
            return Err(malformed(document.encoded_len()?));
        }
        document.write_json(out)
    });
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn malformed(offset: usize) -> DatumError {
    DatumError::Malformed {
        what: "document",
        offset,
    }
}

/// Byte order of two short strings (field names). A plain loop: the
/// library comparison calls `memcmp`, whose call costs more than comparing
/// a few bytes, and field lookups are the inner loop of every scan.
#[inline]
fn compare_short(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// A view of one encoded value, read in place.
#[derive(Clone, Copy, Debug)]
pub struct DocumentRef<'a> {
    bytes: &'a [u8],
}

impl<'a> DocumentRef<'a> {
    /// A view of the value at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<Self, DatumError> {
        if bytes.is_empty() {
            return Err(malformed(0));
        }
        Ok(DocumentRef { bytes })
    }

    fn u32_at(&self, at: usize) -> Result<usize, DatumError> {
        let chunk = self.bytes.get(at..at + 4).ok_or_else(|| malformed(at))?;
        Ok(u32::from_le_bytes(chunk.try_into().expect("4 bytes")) as usize)
    }

    fn f64_at(&self, at: usize) -> Result<f64, DatumError> {
        let chunk = self.bytes.get(at..at + 8).ok_or_else(|| malformed(at))?;
        let value = f64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if value.is_finite() {
            Ok(value)
        } else {
            Err(malformed(at))
        }
    }

    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], DatumError> {
        self.bytes
            .get(at..at.checked_add(len).ok_or_else(|| malformed(at))?)
            .ok_or_else(|| malformed(at))
    }

    /// Length in bytes of this value's encoding.
    pub fn encoded_len(&self) -> Result<usize, DatumError> {
        Ok(match self.bytes[0] {
            NULL | FALSE | TRUE => 1,
            NUMBER => 9,
            STRING | BINARY => 5 + self.u32_at(1)?,
            TIME => 10 + *self.bytes.get(9).ok_or_else(|| malformed(9))? as usize,
            ARRAY => 9 + 4 * self.u32_at(1)? + self.u32_at(5)?,
            OBJECT => 9 + 12 * self.u32_at(1)? + self.u32_at(5)?,
            _ => return Err(malformed(0)),
        })
    }

    /// Asks the processor to bring this value's first bytes into its
    /// cache, so that reading them later does not wait on memory.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; it never faults, and the address
        // is this value's first byte.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.bytes.as_ptr().cast());
        }
    }

    /// This value's encoding, without what follows it.
    pub fn encoded(&self) -> Result<&'a [u8], DatumError> {
        let length = self.encoded_len()?;
        self.bytes.get(..length).ok_or_else(|| malformed(length))
    }

    /// Whether this value is an object.
    pub fn is_object(&self) -> bool {
        self.bytes[0] == OBJECT
    }

    /// The field `name` of an object, found by binary search; `None` when the
    /// value is not an object or has no such field.
    pub fn field(&self, name: &str) -> Result<Option<DocumentRef<'a>>, DatumError> {
        self.field_near(name, &Cell::new(u32::MAX))
    }

    /// [`DocumentRef::field`], trying first the entry `near` names, and
    /// setting `near` to where the field was found: documents of one shape
    /// have each field at the same entry.
    pub fn field_near(
        &self,
        name: &str,
        near: &Cell<u32>,
    ) -> Result<Option<DocumentRef<'a>>, DatumError> {
        if self.bytes[0] != OBJECT {
            return Ok(None);
        }
        let count = self.u32_at(1)?;
        let body_at = 9 + 12 * count;
        let guess = near.get() as usize;
        let (mut low, mut high) = (0, count);
        let mut middle = if guess < count { guess } else { count / 2 };
        while low < high {
            let entry = 9 + 12 * middle;
            let key = self.slice(body_at + self.u32_at(entry)?, self.u32_at(entry + 4)?)?;
            match compare_short(key, name.as_bytes()) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    near.set(middle as u32);
                    let value_at = body_at + self.u32_at(entry + 8)?;
                    return DocumentRef::new(
                        self.bytes
                            .get(value_at..)
                            .ok_or_else(|| malformed(value_at))?,
                    )
                    .map(Some);
                }
            }
            middle = (low + high) / 2;
        }
        Ok(None)
    }

    /// Whether ReQL counts this value as true: everything but `null` and
    /// `false`.
    pub fn truthy(&self) -> bool {
        !matches!(self.bytes[0], NULL | FALSE)
    }

    /// The number this value is, if it is one.
    pub fn number(&self) -> Option<f64> {
        match self.bytes[0] {
            NUMBER => self.f64_at(1).ok(),
            _ => None,
        }
    }

    /// The type rank of this value in RethinkDB's cross-type order.
    fn rank(&self) -> Result<TypeRank, DatumError> {
        Ok(match self.bytes[0] {
            NULL => TypeRank::Null,
            FALSE | TRUE => TypeRank::Bool,
            NUMBER => TypeRank::Number,
            STRING => TypeRank::String,
            ARRAY => TypeRank::Array,
            OBJECT => TypeRank::Object,
            BINARY => TypeRank::Binary,
            TIME => TypeRank::Time,
            _ => return Err(malformed(0)),
        })
    }

    /// Orders this value against `other` exactly as [`Datum::cmp_reql`]
    /// would after decoding it. Scalars (and values of different types) are
    /// compared in place; arrays, objects, binary and times are decoded
    /// first, which is rare in predicates and keeps one definition of their
    /// order.
    pub fn cmp_datum(&self, other: &Datum) -> Result<Ordering, DatumError> {
        let by_rank = self.rank()?.cmp(&other.rank());
        if by_rank != Ordering::Equal {
            return Ok(by_rank);
        }
        Ok(match (self.bytes[0], other) {
            (NULL, Datum::Null) => Ordering::Equal,
            (tag, Datum::Bool(value)) => (tag == TRUE).cmp(value),
            (NUMBER, Datum::Number(value)) => crate::value::cmp_numbers(self.f64_at(1)?, *value),
            (STRING, Datum::String(value)) => self.string_bytes()?.cmp(value.as_bytes()),
            _ => self.to_datum()?.cmp_reql(other),
        })
    }

    /// Orders two stored values as [`Datum::cmp_reql`] orders them decoded.
    pub fn cmp_document(&self, other: &DocumentRef<'_>) -> Result<Ordering, DatumError> {
        let by_rank = self.rank()?.cmp(&other.rank()?);
        if by_rank != Ordering::Equal {
            return Ok(by_rank);
        }
        Ok(match (self.bytes[0], other.bytes[0]) {
            (NULL, NULL) => Ordering::Equal,
            (FALSE | TRUE, FALSE | TRUE) => (self.bytes[0] == TRUE).cmp(&(other.bytes[0] == TRUE)),
            (NUMBER, NUMBER) => crate::value::cmp_numbers(self.f64_at(1)?, other.f64_at(1)?),
            (STRING, STRING) => self.string_bytes()?.cmp(other.string_bytes()?),
            _ => self.to_datum()?.cmp_reql(&other.to_datum()?),
        })
    }

    fn string_bytes(&self) -> Result<&'a [u8], DatumError> {
        self.slice(5, self.u32_at(1)?)
    }

    /// Writes this value as JSON text, as [`crate::json::write_json`] writes
    /// its datum; on an error `out` holds a part of it.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), DatumError> {
        use crate::json;
        fn text(bytes: &[u8], at: usize) -> Result<&str, DatumError> {
            std::str::from_utf8(bytes).map_err(|_| malformed(at))
        }
        match self.bytes[0] {
            NULL => out.extend_from_slice(b"null"),
            FALSE => out.extend_from_slice(b"false"),
            TRUE => out.extend_from_slice(b"true"),
            NUMBER => json::write_number(self.f64_at(1)?, out),
            STRING => json::write_string(text(self.slice(5, self.u32_at(1)?)?, 5)?, out),
            BINARY => json::write_binary(self.slice(5, self.u32_at(1)?)?, out),
            TIME => {
                let len = *self.bytes.get(9).ok_or_else(|| malformed(9))? as usize;
                json::write_time(self.f64_at(1)?, text(self.slice(10, len)?, 10)?, out);
            }
            ARRAY => {
                let count = self.u32_at(1)?;
                let body_at = 9 + 4 * count;
                out.push(b'[');
                for index in 0..count {
                    if index > 0 {
                        out.push(b',');
                    }
                    let at = body_at + self.u32_at(9 + 4 * index)?;
                    DocumentRef::new(self.bytes.get(at..).ok_or_else(|| malformed(at))?)?
                        .write_json(out)?;
                }
                out.push(b']');
            }
            OBJECT => {
                let count = self.u32_at(1)?;
                let body_at = 9 + 12 * count;
                let mut previous: Option<&[u8]> = None;
                out.push(b'{');
                for index in 0..count {
                    let entry = 9 + 12 * index;
                    let key = self.slice(body_at + self.u32_at(entry)?, self.u32_at(entry + 4)?)?;
                    // A decoded object is a sorted map: keys out of order
                    // (or repeated) would be written differently here.
                    if previous.is_some_and(|previous| previous >= key) {
                        return Err(malformed(entry));
                    }
                    previous = Some(key);
                    if index > 0 {
                        out.push(b',');
                    }
                    json::write_string(text(key, entry)?, out);
                    out.push(b':');
                    let at = body_at + self.u32_at(entry + 8)?;
                    DocumentRef::new(self.bytes.get(at..).ok_or_else(|| malformed(at))?)?
                        .write_json(out)?;
                }
                out.push(b'}');
            }
            _ => return Err(malformed(0)),
        }
        Ok(())
    }

    /// Decodes this value (and everything inside it).
    pub fn to_datum(&self) -> Result<Datum, DatumError> {
        Ok(match self.bytes[0] {
            NULL => Datum::Null,
            FALSE => Datum::Bool(false),
            TRUE => Datum::Bool(true),
            NUMBER => Datum::Number(self.f64_at(1)?),
            STRING => {
                let bytes = self.slice(5, self.u32_at(1)?)?;
                Datum::String(String::from_utf8(bytes.to_vec()).map_err(|_| malformed(5))?)
            }
            BINARY => Datum::Binary(self.slice(5, self.u32_at(1)?)?.to_vec()),
            TIME => {
                let epoch_seconds = self.f64_at(1)?;
                let len = *self.bytes.get(9).ok_or_else(|| malformed(9))? as usize;
                let timezone =
                    String::from_utf8(self.slice(10, len)?.to_vec()).map_err(|_| malformed(10))?;
                Datum::Time {
                    epoch_seconds,
                    timezone,
                }
            }
            ARRAY => {
                let count = self.u32_at(1)?;
                let body_at = 9 + 4 * count;
                let mut items = Vec::with_capacity(count.min(1 << 16));
                for index in 0..count {
                    let at = body_at + self.u32_at(9 + 4 * index)?;
                    items.push(
                        DocumentRef::new(self.bytes.get(at..).ok_or_else(|| malformed(at))?)?
                            .to_datum()?,
                    );
                }
                Datum::Array(items)
            }
            OBJECT => {
                let count = self.u32_at(1)?;
                let body_at = 9 + 12 * count;
                let mut fields = Object::new();
                for index in 0..count {
                    let entry = 9 + 12 * index;
                    let key = self.slice(body_at + self.u32_at(entry)?, self.u32_at(entry + 4)?)?;
                    let key = String::from_utf8(key.to_vec()).map_err(|_| malformed(entry))?;
                    let at = body_at + self.u32_at(entry + 8)?;
                    let value =
                        DocumentRef::new(self.bytes.get(at..).ok_or_else(|| malformed(at))?)?
                            .to_datum()?;
                    fields.insert(key, value);
                }
                Datum::Object(fields)
            }
            _ => return Err(malformed(0)),
        })
    }
}
