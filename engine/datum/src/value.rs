use std::cmp::Ordering;
use std::collections::BTreeMap;

/// An object's fields. Sorted by key so that equality and order never depend
/// on the order fields were written in.
pub type Object = BTreeMap<String, Datum>;

/// A ReQL value.
///
/// Numbers are IEEE doubles as in RethinkDB; they are never NaN or infinite
/// (the JSON and ReQL layers refuse those before a `Datum` is built).
#[derive(Debug, Clone)]
pub enum Datum {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Datum>),
    Object(Object),
    /// `$reql_type$: BINARY`.
    Binary(Vec<u8>),
    /// `$reql_type$: TIME`: seconds since the epoch and an offset such as
    /// `+00:00`. Times compare by instant only, as in RethinkDB.
    Time {
        epoch_seconds: f64,
        timezone: String,
    },
}

/// Rank of each type in RethinkDB's cross-type order (by type name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TypeRank {
    Array = 1,
    Bool = 2,
    Null = 3,
    Number = 4,
    Object = 5,
    Binary = 6,
    // Geometry = 7 arrives with the geo terms.
    Time = 8,
    String = 9,
}

impl Datum {
    pub(crate) fn rank(&self) -> TypeRank {
        match self {
            Datum::Array(_) => TypeRank::Array,
            Datum::Bool(_) => TypeRank::Bool,
            Datum::Null => TypeRank::Null,
            Datum::Number(_) => TypeRank::Number,
            Datum::Object(_) => TypeRank::Object,
            Datum::Binary(_) => TypeRank::Binary,
            Datum::Time { .. } => TypeRank::Time,
            Datum::String(_) => TypeRank::String,
        }
    }

    /// RethinkDB's total order over values.
    ///
    /// Across types: by type name. Numbers numerically (`-0 == 0`); strings
    /// and binary by bytes (UTF-8 byte order is code point order); arrays
    /// element-wise, a prefix first; objects as their sorted `(key, value)`
    /// pairs compared pair by pair; times by instant.
    pub fn cmp_reql(&self, other: &Datum) -> Ordering {
        let by_rank = self.rank().cmp(&other.rank());
        if by_rank != Ordering::Equal {
            return by_rank;
        }
        match (self, other) {
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Number(a), Datum::Number(b)) => cmp_numbers(*a, *b),
            (Datum::String(a), Datum::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Datum::Binary(a), Datum::Binary(b)) => a.cmp(b),
            (
                Datum::Time {
                    epoch_seconds: a, ..
                },
                Datum::Time {
                    epoch_seconds: b, ..
                },
            ) => cmp_numbers(*a, *b),
            (Datum::Array(a), Datum::Array(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    let ordering = x.cmp_reql(y);
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Datum::Object(a), Datum::Object(b)) => {
                for ((key_a, value_a), (key_b, value_b)) in a.iter().zip(b.iter()) {
                    let ordering = key_a
                        .as_bytes()
                        .cmp(key_b.as_bytes())
                        .then_with(|| value_a.cmp_reql(value_b));
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => unreachable!("equal ranks imply equal variants"),
        }
    }

    /// The type name ReQL's `type_of` reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Datum::Null => "NULL",
            Datum::Bool(_) => "BOOL",
            Datum::Number(_) => "NUMBER",
            Datum::String(_) => "STRING",
            Datum::Array(_) => "ARRAY",
            Datum::Object(_) => "OBJECT",
            Datum::Binary(_) => "PTYPE<BINARY>",
            Datum::Time { .. } => "PTYPE<TIME>",
        }
    }
}

pub(crate) fn cmp_numbers(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).expect("datums never hold NaN")
}

impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        self.cmp_reql(other) == Ordering::Equal
    }
}

impl Eq for Datum {}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Datum) -> Option<Ordering> {
        Some(self.cmp_reql(other))
    }
}

impl Ord for Datum {
    fn cmp(&self, other: &Datum) -> Ordering {
        self.cmp_reql(other)
    }
}

impl From<&str> for Datum {
    fn from(value: &str) -> Datum {
        Datum::String(value.to_owned())
    }
}

impl From<f64> for Datum {
    fn from(value: f64) -> Datum {
        Datum::Number(value)
    }
}

impl From<bool> for Datum {
    fn from(value: bool) -> Datum {
        Datum::Bool(value)
    }
}
