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
                Ok(Term::object(parse_optargs(fields)?))
            }
            scalar => from_json(scalar)
                .map(Term::Datum)
                .map_err(|error| ReqlError::logic(error.to_string())),
        }
    }
}

impl Term {
    /// A literal object of these fields. An object of datums is a datum:
    /// read once here rather than rebuilt field by field every time it is
    /// evaluated (a bulk insert's documents are such objects).
    fn object(fields: BTreeMap<String, Term>) -> Term {
        if fields.values().all(|value| matches!(value, Term::Datum(_))) {
            let fields = fields
                .into_iter()
                .map(|(name, value)| match value {
                    Term::Datum(datum) => (name, datum),
                    _ => unreachable!("checked above"),
                })
                .collect();
            return Term::Datum(Datum::Object(fields));
        }
        Term::Call {
            term_type: term_type::MAKE_OBJ,
            args: Vec::new(),
            optargs: fields,
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

/// Terms read straight from simd-json's tape of a query, with no JSON tree
/// in between: a bulk insert's documents become datums in one pass. What
/// this fast path does not expect (a malformed term, a pseudo-type) is
/// handed to [`Term::parse`] as JSON, so errors read exactly as there.
pub mod tape {
    use std::collections::BTreeMap;

    use photondb_datum::Datum;
    use serde_json::Value;
    use simd_json::{Node, StaticNode};

    use super::{term_type, Frame, ReqlError, Term};

    /// Nodes a value takes on the tape, itself included.
    fn size(node: &Node) -> usize {
        match node {
            Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
            _ => 1,
        }
    }

    /// The values of the array or object (keys and values in turn) that
    /// starts `nodes`.
    pub fn children<'tape, 'input>(
        nodes: &'tape [Node<'input>],
    ) -> impl Iterator<Item = &'tape [Node<'input>]> {
        let mut rest = &nodes[1..size(&nodes[0])];
        std::iter::from_fn(move || {
            let (first, tail) = rest.split_at_checked(size(rest.first()?))?;
            rest = tail;
            Some(first)
        })
    }

    /// The value as JSON (for errors, and what is not read here).
    pub fn to_json(nodes: &[Node]) -> Value {
        match &nodes[0] {
            Node::String(text) => Value::String((*text).to_owned()),
            Node::Static(scalar) => scalar_json(scalar),
            Node::Array { .. } => Value::Array(children(nodes).map(to_json).collect()),
            Node::Object { .. } => {
                let mut object = serde_json::Map::new();
                let mut parts = children(nodes);
                while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
                    object.insert(key_of(key).to_owned(), to_json(value));
                }
                Value::Object(object)
            }
        }
    }

    fn scalar_json(scalar: &StaticNode) -> Value {
        match *scalar {
            StaticNode::Null => Value::Null,
            StaticNode::Bool(value) => Value::Bool(value),
            StaticNode::I64(number) => Value::from(number),
            StaticNode::U64(number) => Value::from(number),
            StaticNode::F64(number) => {
                serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
            }
        }
    }

    fn key_of<'input>(nodes: &[Node<'input>]) -> &'input str {
        match nodes[0] {
            Node::String(key) => key,
            _ => unreachable!("simd-json's object keys are strings"),
        }
    }

    /// Whether an object's nodes name a pseudo-type.
    fn has_reql_type(nodes: &[Node]) -> bool {
        children(nodes)
            .step_by(2)
            .any(|key| key_of(key) == "$reql_type$")
    }

    /// The term that starts `nodes`.
    pub fn term(nodes: &[Node]) -> Result<Term, ReqlError> {
        match &nodes[0] {
            Node::Array { len, .. } => {
                let mut parts = children(nodes);
                // simd-json reads non-negative integers as U64, negative
                // ones as I64 (never a term type).
                let term_type = match parts.next().map(|first| &first[0]) {
                    Some(Node::Static(StaticNode::U64(kind))) if *len <= 3 => *kind,
                    _ => return Term::parse(&to_json(nodes)),
                };
                let (arguments, optional) = (parts.next(), parts.next());
                if term_type == term_type::DATUM {
                    return arguments
                        .map_or(Ok(Datum::Null), datum)
                        .map(Term::Datum)
                        .map_err(|error| ReqlError::logic(error.to_string()));
                }
                let args = match arguments {
                    None => Vec::new(),
                    Some(arguments) if matches!(arguments[0], Node::Array { .. }) => {
                        children(arguments)
                            .enumerate()
                            .map(|(index, argument)| {
                                term(argument).map_err(|error| error.within(Frame::Position(index)))
                            })
                            .collect::<Result<_, _>>()?
                    }
                    Some(_) => return Term::parse(&to_json(nodes)),
                };
                let optargs = match optional {
                    None => BTreeMap::new(),
                    Some(optional) if matches!(optional[0], Node::Object { .. }) => {
                        optargs(optional)?
                    }
                    Some(_) => return Term::parse(&to_json(nodes)),
                };
                Ok(Term::Call {
                    term_type,
                    args,
                    optargs,
                })
            }
            Node::Object { .. } => {
                if has_reql_type(nodes) {
                    return Term::parse(&to_json(nodes));
                }
                let fields = optargs(nodes)?;
                Ok(Term::object(fields))
            }
            Node::String(text) => Ok(Term::Datum(Datum::String((*text).to_owned()))),
            Node::Static(scalar) => Ok(Term::Datum(scalar_datum(scalar))),
        }
    }

    /// An object's fields as terms (a term's optional arguments, or the
    /// fields of a literal object). A name given twice, or a value that is
    /// not a term, takes the JSON path: there the last of a repeated name
    /// wins before any value is read, so an earlier one's error never shows.
    fn optargs(nodes: &[Node]) -> Result<BTreeMap<String, Term>, ReqlError> {
        let mut fields = BTreeMap::new();
        let mut parts = children(nodes);
        while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
            let Ok(value) = term(value) else {
                return json_optargs(nodes);
            };
            if fields.insert(key_of(key).to_owned(), value).is_some() {
                return json_optargs(nodes);
            }
        }
        Ok(fields)
    }

    fn json_optargs(nodes: &[Node]) -> Result<BTreeMap<String, Term>, ReqlError> {
        match to_json(nodes) {
            Value::Object(fields) => super::parse_optargs(&fields),
            _ => unreachable!("called with an object's nodes"),
        }
    }

    /// A pure datum (the argument of a DATUM term).
    fn datum(nodes: &[Node]) -> Result<Datum, photondb_datum::DatumError> {
        Ok(match &nodes[0] {
            Node::String(text) => Datum::String((*text).to_owned()),
            Node::Static(scalar) => scalar_datum(scalar),
            Node::Array { .. } => {
                Datum::Array(children(nodes).map(datum).collect::<Result<_, _>>()?)
            }
            Node::Object { .. } if has_reql_type(nodes) => {
                photondb_datum::json::from_json(&to_json(nodes))?
            }
            Node::Object { .. } => {
                // As for terms: a repeated name or an error takes the JSON
                // path, where the last of a repeated name wins unread.
                let mut object = photondb_datum::Object::new();
                let mut parts = children(nodes);
                while let (Some(key), Some(value)) = (parts.next(), parts.next()) {
                    let Ok(value) = datum(value) else {
                        return photondb_datum::json::from_json(&to_json(nodes));
                    };
                    if object.insert(key_of(key).to_owned(), value).is_some() {
                        return photondb_datum::json::from_json(&to_json(nodes));
                    }
                }
                Datum::Object(object)
            }
        })
    }

    /// simd-json refuses non-finite numbers, so every number is a datum.
    fn scalar_datum(scalar: &StaticNode) -> Datum {
        match *scalar {
            StaticNode::Null => Datum::Null,
            StaticNode::Bool(value) => Datum::Bool(value),
            StaticNode::I64(number) => Datum::Number(number as f64),
            StaticNode::U64(number) => Datum::Number(number as f64),
            StaticNode::F64(number) => Datum::Number(number),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::{tape, Term};

    /// The term read from the tape and the term read from JSON, or their
    /// errors, as text (terms have no equality).
    fn both_ways(json: &str) -> (String, String) {
        let mut bytes = json.as_bytes().to_vec();
        let from_tape = simd_json::to_tape(&mut bytes)
            .map(|parsed| format!("{:?}", tape::term(&parsed.0)))
            .expect("valid JSON");
        let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        (from_tape, format!("{:?}", Term::parse(&value)))
    }

    #[test]
    fn terms_read_from_the_tape_are_the_terms_read_from_json() {
        let cases = [
            // calls, nested, with optional arguments
            r#"[15, [[14, ["test"]], "users"], {"read_mode": "outdated"}]"#,
            r#"[56, [[15, ["t"]], {"id": 1, "name": "a\"b\\c\u00e9", "n": [1, 2.5, -3]}], {"conflict": "update"}]"#,
            r#"[69, [[2, [1]], [39, [[10, [1]], "x"]]]]"#,
            // literal objects: of datums, with a term inside, nested
            r#"{"a": 1, "b": {"c": [true, false, null]}}"#,
            r#"{"a": [10, [1]], "b": {"c": [2, [1, 2]]}}"#,
            r#"{}"#,
            r#"[]"#,
            // DATUM terms and pseudo-types at every level
            r#"[1, {"x": [1, 2], "y": {"$reql_type$": "BINARY", "data": "aGk="}}]"#,
            r#"[1]"#,
            r#"[1, null, {}]"#,
            r#"{"$reql_type$": "TIME", "epoch_time": 1.5, "timezone": "+00:00"}"#,
            r#"{"a": {"$reql_type$": "BINARY", "data": "aGk="}}"#,
            r#"{"$reql_type$": "TIME", "epoch_time": [10, [1]], "timezone": "+00:00"}"#,
            r#"{"$reql_type$": "UNKNOWN", "v": 1}"#,
            r#"[1, {"$reql_type$": "BINARY", "data": "!!"}]"#,
            // scalars
            r#""text""#,
            r#"-12"#,
            r#"18446744073709551615"#,
            r#"0.1"#,
            r#"null"#,
            // malformed terms: every error must read as from JSON
            r#"["insert", [1]]"#,
            r#"[-1, []]"#,
            r#"[1.5, []]"#,
            r#"[15, [], {}, 4]"#,
            r#"[15, {"a": 1}]"#,
            r#"[15, [], [1]]"#,
            r#"[15, [[15, "x"]]]"#,
            r#"[15, [], {"a": ["bad"]}]"#,
            r#"{"a": {"b": [2.5]}}"#,
            r#"[2, [1, 2, [15, 3]]]"#,
        ];
        for case in cases {
            let (from_tape, from_json) = both_ways(case);
            assert_eq!(from_tape, from_json, "{case}");
        }
    }

    /// Random JSON shaped like terms (arrays led by small numbers, objects,
    /// scalars), read both ways.
    #[test]
    fn random_term_shaped_json_reads_the_same_both_ways() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        fn value(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> String {
            let choice = if depth > 3 { 4 + next(4) } else { next(8) };
            match choice {
                0 | 1 => {
                    let kind =
                        ["1", "2", "15", "39", "-1", "2.0", "\"x\"", "170"][next(8) as usize];
                    let arguments: Vec<String> =
                        (0..next(3)).map(|_| value(next, depth + 1)).collect();
                    let mut parts = vec![kind.to_owned(), format!("[{}]", arguments.join(","))];
                    if next(3) == 0 {
                        parts[1] = value(next, depth + 1);
                    }
                    if next(2) == 0 {
                        parts.push(value(next, depth + 1));
                    }
                    if next(8) == 0 {
                        parts.push("0".to_owned());
                    }
                    format!("[{}]", parts.join(","))
                }
                2 | 3 => {
                    let fields: Vec<String> = (0..next(4))
                        .map(|index| {
                            let key = ["a", "b", "$reql_type$", "data", "epoch_time"]
                                [(index as u64 + next(5)) as usize % 5];
                            format!("\"{key}\": {}", value(next, depth + 1))
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
                4 => ["null", "true", "false"][next(3) as usize].to_owned(),
                5 => ["0", "-7", "3.25", "1e300", "9007199254740993"][next(5) as usize].to_owned(),
                6 => ["\"BINARY\"", "\"TIME\"", "\"aGk=\"", "\"q\\\"\\u0041\""][next(4) as usize]
                    .to_owned(),
                _ => format!(
                    "[{}]",
                    (0..next(3))
                        .map(|_| value(next, depth + 1))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            }
        }
        for _ in 0..20000 {
            let case = value(&mut next, 0);
            let (from_tape, from_json) = both_ways(&case);
            assert_eq!(from_tape, from_json, "{case}");
        }
    }
}
