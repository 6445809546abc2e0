//! Terms as drivers send them: `[type, [args…], {optargs}]`, with literal
//! scalars and objects as plain JSON.

use std::collections::BTreeMap;

use photondb_datum::{json::from_json, Datum};
use serde_json::Value;

use super::error::{Frame, ReqlError};
use super::term_type;

#[derive(Clone, Debug)]
pub enum Term {
    Datum(Datum),
    Call {
        term_type: u64,
        args: Vec<Term>,
        optargs: BTreeMap<String, Term>,
    },
    /// An argument already evaluated by the caller (grouped data applies a
    /// term once per group this way); never sent by a client.
    Evaluated(Box<super::eval::Value>),
}

impl Term {
    pub fn parse(value: &Value) -> Result<Term, ReqlError> {
        match value {
            Value::Array(parts) => {
                let term_type = parts.first().and_then(Value::as_u64).ok_or_else(|| {
                    ReqlError::compile(format!(
                        "Expected a term type as the first element of {value}."
                    ))
                })?;
                if parts.len() > 3 {
                    return Err(ReqlError::compile(format!(
                        "Expected an array of 1 to 3 elements, but found {}.",
                        parts.len()
                    )));
                }
                if term_type == term_type::DATUM {
                    let datum = parts
                        .get(1)
                        .map(from_json)
                        .transpose()
                        .map_err(|error| ReqlError::logic(error.to_string()))?;
                    return Ok(Term::Datum(datum.unwrap_or(Datum::Null)));
                }
                let args = match parts.get(1) {
                    None => Vec::new(),
                    Some(Value::Array(args)) => args
                        .iter()
                        .enumerate()
                        .map(|(index, arg)| {
                            Term::parse(arg).map_err(|error| error.within(Frame::Position(index)))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(other) => {
                        return Err(ReqlError::compile(format!(
                            "Expected an array of arguments, but found {other}."
                        )))
                    }
                };
                let optargs = match parts.get(2) {
                    None => BTreeMap::new(),
                    Some(Value::Object(optargs)) => parse_optargs(optargs)?,
                    Some(other) => {
                        return Err(ReqlError::compile(format!(
                            "Expected an object of optional arguments, but found {other}."
                        )))
                    }
                };
                Ok(Term::Call {
                    term_type,
                    args,
                    optargs,
                })
            }
            // A literal object: its values may be terms.
            Value::Object(fields) => {
                if fields.contains_key("$reql_type$") {
                    return from_json(value)
                        .map(Term::Datum)
                        .map_err(|error| ReqlError::logic(error.to_string()));
                }
                let fields = parse_optargs(fields)?;
                // An object of datums is a datum: read once here rather than
                // rebuilt field by field every time it is evaluated (a bulk
                // insert's documents are such objects).
                if fields.values().all(|value| matches!(value, Term::Datum(_))) {
                    let fields = fields
                        .into_iter()
                        .map(|(name, value)| match value {
                            Term::Datum(datum) => (name, datum),
                            _ => unreachable!("checked above"),
                        })
                        .collect();
                    return Ok(Term::Datum(Datum::Object(fields)));
                }
                Ok(Term::Call {
                    term_type: term_type::MAKE_OBJ,
                    args: Vec::new(),
                    optargs: fields,
                })
            }
            scalar => from_json(scalar)
                .map(Term::Datum)
                .map_err(|error| ReqlError::logic(error.to_string())),
        }
    }
}

impl Term {
    /// RethinkDB's placement rules, checked before anything runs:
    /// - a write or meta operation may not sit in the function arguments of
    ///   a stream operation (`map(tbl.insert(…))`), where it would run once
    ///   per row; the sequence argument (position 0) is exempt, and so is
    ///   `for_each`;
    /// - `r.row` must belong to exactly one one-argument function: inside
    ///   two, it would be ambiguous;
    /// - `r.asc`/`r.desc` only mean something to `order_by` and `union`.
    pub fn check_placement(&self) -> Result<(), ReqlError> {
        self.check_within(true, 0, None)
    }

    /// `parent`: the nearest enclosing term that is not an array literal.
    fn check_within(
        &self,
        writes_legal: bool,
        single_argument_functions: usize,
        parent: Option<u64>,
    ) -> Result<(), ReqlError> {
        let Term::Call {
            term_type,
            args,
            optargs,
        } = self
        else {
            return Ok(());
        };
        if !writes_legal && is_write_or_meta(*term_type) {
            return Err(ReqlError::compile(
                "Cannot nest writes or meta ops in stream operations.  Use FOR_EACH instead.",
            ));
        }
        if matches!(*term_type, term_type::ASC | term_type::DESC)
            && !matches!(parent, Some(term_type::ORDER_BY | term_type::UNION))
        {
            let name = if *term_type == term_type::ASC {
                "ASC"
            } else {
                "DESC"
            };
            return Err(ReqlError::compile(format!(
                "{name} may only be used as an argument to ORDER_BY or UNION."
            )));
        }
        let parent = if *term_type == term_type::MAKE_ARRAY {
            parent
        } else {
            Some(*term_type)
        };
        if *term_type == term_type::IMPLICIT_VAR && single_argument_functions > 1 {
            return Err(ReqlError::compile(
                "Cannot use r.row in nested queries.  Use functions instead.",
            ));
        }
        let functions = single_argument_functions
            + usize::from(*term_type == term_type::FUNC && parameter_count(args) == Some(1));
        let forbids = forbids_writes(*term_type);
        for (index, arg) in args.iter().enumerate() {
            arg.check_within(writes_legal && (index == 0 || !forbids), functions, parent)
                .map_err(|error| error.within(Frame::Position(index)))?;
        }
        for (name, optarg) in optargs {
            optarg
                .check_within(writes_legal && !forbids, functions, parent)
                .map_err(|error| error.within(Frame::Optional(name.clone())))?;
        }
        Ok(())
    }
}

impl Term {
    /// Whether evaluating the term twice must give the same result: no
    /// table reads, no randomness, no JavaScript or HTTP. (`r.now()` is
    /// fixed per query, so it counts as deterministic, as in RethinkDB.)
    pub fn is_deterministic(&self) -> bool {
        use term_type::*;
        match self {
            Term::Datum(_) => true,
            Term::Evaluated(_) => false,
            Term::Call {
                term_type,
                args,
                optargs,
            } => {
                let this = match *term_type {
                    TABLE | DB | JAVASCRIPT | HTTP | RANDOM => false,
                    UUID => !args.is_empty(),
                    _ => true,
                };
                this && args.iter().all(Term::is_deterministic)
                    && optargs.values().all(Term::is_deterministic)
            }
        }
    }
}

/// How many parameters a `FUNC` term's arguments declare.
fn parameter_count(args: &[Term]) -> Option<usize> {
    match args.first()? {
        Term::Call {
            term_type: term_type::MAKE_ARRAY,
            args: parameters,
            ..
        } => Some(parameters.len()),
        Term::Datum(photondb_datum::Datum::Array(parameters)) => Some(parameters.len()),
        _ => None,
    }
}

fn is_write_or_meta(term_type: u64) -> bool {
    use term_type::*;
    matches!(
        term_type,
        UPDATE
            | DELETE
            | INSERT
            | REPLACE
            | DB_CREATE
            | DB_DROP
            | TABLE_CREATE
            | TABLE_DROP
            | WAIT
            | RECONFIGURE
            | REBALANCE
            | SYNC
            | INDEX_CREATE
            | INDEX_DROP
            | INDEX_WAIT
            | INDEX_RENAME
    )
}

/// Terms that call their function arguments once per row.
fn forbids_writes(term_type: u64) -> bool {
    use term_type::*;
    matches!(
        term_type,
        REDUCE
            | MAP
            | FILTER
            | CONCAT_MAP
            | GROUP
            | INNER_JOIN
            | OUTER_JOIN
            | EQ_JOIN
            | UPDATE
            | DELETE
            | REPLACE
            | INSERT
            | COUNT
            | SUM
            | AVG
            | MIN
            | MAX
    )
}

pub fn parse_optargs(
    fields: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, Term>, ReqlError> {
    fields
        .iter()
        .map(|(name, value)| {
            Ok((
                name.clone(),
                Term::parse(value).map_err(|error| error.within(Frame::Optional(name.clone())))?,
            ))
        })
        .collect()
}
