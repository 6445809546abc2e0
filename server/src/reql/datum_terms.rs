//! Terms that work on datums alone: conversions, objects, arrays, strings,
//! numbers, control (`branch`, `default`, `error`), `uuid`, `json`.

use std::collections::BTreeMap;

use photondb_datum::json::{from_json, to_json};
use photondb_datum::{Datum, Object};
use sha1::{Digest, Sha1};

use super::error::{ErrorClass, Frame, ReqlError};
use super::eval::{arity, pretty, truthy, Context, TypeMismatch, Value};
use super::term::Term;
use super::term_type as kind;

/// RethinkDB's namespace for `r.uuid(name)` (version 5 UUIDs).
const UUID_NAMESPACE: [u8; 16] = [
    0x91, 0x46, 0x1c, 0x99, 0xf8, 0x9d, 0x49, 0xd2, 0xaf, 0x96, 0xd8, 0xe2, 0xe1, 0x4e, 0x9b, 0x58,
];

fn type_error(expected: &str, found: &Datum) -> ReqlError {
    found.wrong_type(expected)
}

fn number(datum: &Datum) -> Result<f64, ReqlError> {
    match datum {
        Datum::Number(value) => Ok(*value),
        other => Err(type_error("NUMBER", other)),
    }
}

fn integer(datum: &Datum) -> Result<i64, ReqlError> {
    let value = number(datum)?;
    if value.fract() != 0.0 || value.abs() > 9_007_199_254_740_992.0 {
        return Err(ReqlError::logic(format!(
            "Number not an integer: {}",
            to_json(datum)
        )));
    }
    Ok(value as i64)
}

/// RethinkDB parses `r.json` with RapidJSON and quotes its messages; the
/// same faults found by serde_json are worded the same way here.
fn parse_error_message(text: &str, error: &serde_json::Error) -> &'static str {
    let message = error.to_string();
    let says = |phrase: &str| message.starts_with(phrase);
    if text.trim().is_empty() {
        "The document is empty."
    } else if says("EOF while parsing a list") || says("expected `,` or `]`") {
        "Missing a comma or ']' after an array element."
    } else if says("EOF while parsing an object") || says("expected `,` or `}`") {
        "Missing a comma or '}' after an object member."
    } else if says("expected `:`") {
        "Missing a colon after a name of object member."
    } else if says("key must be a string") {
        "Missing a name for object member."
    } else if says("EOF while parsing a string") || says("control character") {
        "Missing a closing quotation mark in string."
    } else if says("invalid escape") {
        "Invalid escape character in string."
    } else if says("invalid unicode code point") || says("invalid hex") {
        "Incorrect hex digit after \\u escape in string."
    } else if says("trailing characters") {
        "The document root must not be followed by other values."
    } else {
        "Invalid value."
    }
}

/// Compact JSON as RethinkDB prints it in `coerce_to('string')`.
pub fn json_text(datum: &Datum) -> String {
    to_json(datum).to_string()
}

fn is_builtin_type(name: &str) -> bool {
    matches!(
        name,
        "ARRAY" | "BOOL" | "NULL" | "NUMBER" | "OBJECT" | "STRING" | "BINARY"
    )
}

fn coerce(value: Datum, target: &str) -> Result<Datum, ReqlError> {
    let target = target.to_ascii_uppercase();
    let from = value.type_name();
    // Binary is `PTYPE<BINARY>` to `type_of`, plain `BINARY` here.
    let cannot = |value: &Datum| {
        let name = if matches!(value, Datum::Binary(_)) {
            "BINARY"
        } else {
            value.type_name()
        };
        ReqlError::logic(format!("Cannot coerce {name} to {target}."))
    };
    if !is_builtin_type(&target) {
        return Err(ReqlError::logic(format!("Unknown Type: {target}")));
    }
    if from == target || (target == "BINARY" && matches!(value, Datum::Binary(_))) {
        return Ok(value);
    }
    Ok(match (value, target.as_str()) {
        (value, "STRING") => match value {
            Datum::String(text) => Datum::String(text),
            Datum::Binary(bytes) => Datum::String(String::from_utf8(bytes).map_err(|_| {
                ReqlError::logic("Cannot coerce BINARY to STRING: not valid UTF-8.")
            })?),
            other => Datum::String(json_text(&other)),
        },
        (_, "BOOL") => unreachable!("handled below"),
        (Datum::String(text), "NUMBER") => Datum::Number(parse_number(&text)?),
        (Datum::String(text), "BINARY") => Datum::Binary(text.into_bytes()),
        (Datum::Object(fields), "ARRAY") => Datum::Array(
            fields
                .into_iter()
                .map(|(key, value)| Datum::Array(vec![Datum::String(key), value]))
                .collect(),
        ),
        (Datum::Array(pairs), "OBJECT") => {
            let mut object = Object::new();
            for pair in pairs {
                match pair {
                    Datum::Array(items) if items.len() == 2 => {
                        let mut items = items.into_iter();
                        let key = items.next().expect("two items");
                        let value = items.next().expect("two items");
                        match key {
                            Datum::String(key) => {
                                object.insert(key, value);
                            }
                            other => return Err(type_error("STRING", &other)),
                        }
                    }
                    Datum::Array(items) => {
                        return Err(ReqlError::logic(format!(
                            "Expected array of size 2, but got size {}.",
                            items.len()
                        )))
                    }
                    other => return Err(type_error("ARRAY", &other)),
                }
            }
            Datum::Object(object)
        }
        (value, _) => return Err(cannot(&value)),
    })
}

fn parse_number(text: &str) -> Result<f64, ReqlError> {
    let trimmed = text.trim();
    let parsed = if let Some(hex) = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok().map(|value| value as f64)
    } else {
        serde_json::from_str::<serde_json::Value>(trimmed)
            .ok()
            .and_then(|value| value.as_f64())
            .or_else(|| {
                trimmed.parse::<f64>().ok().filter(|_| {
                    !trimmed
                        .chars()
                        .any(|character| character.is_ascii_alphabetic())
                        || trimmed.contains(['e', 'E'])
                })
            })
    };
    match parsed {
        Some(value) if value.is_finite() => Ok(value),
        _ if matches!(
            trimmed.to_ascii_lowercase().as_str(),
            "inf" | "-inf" | "infinity" | "-infinity" | "nan"
        ) =>
        {
            Err(ReqlError::logic(format!("Non-finite number: {trimmed}")))
        }
        _ => Err(ReqlError::logic(format!(
            "Could not coerce `{text}` to NUMBER."
        ))),
    }
}

fn uuid_v5(name: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(UUID_NAMESPACE);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0F) | 0x50;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    photondb_storage::catalog::uuid_string(u128::from_be_bytes(bytes))
}

/// A slice of `length` items by RethinkDB's bounds (negative from the end,
/// `left_bound`/`right_bound` "closed" or "open").
/// `slice`'s `left_bound` and `right_bound` options: whether the left end is
/// open and the right end closed (by default the left is closed, the right
/// open).
pub async fn slice_bound_options(
    context: &Context,
    optargs: &BTreeMap<String, Term>,
) -> Result<(bool, bool), ReqlError> {
    let closed = |name: &'static str, default: bool| async move {
        match context.optional_datum(optargs, name).await? {
            None => Ok(default),
            Some(Datum::String(text)) if text == "closed" => Ok(true),
            Some(Datum::String(text)) if text == "open" => Ok(false),
            Some(other) => Err(ReqlError::logic(format!(
                "Expected `open` or `closed` for optarg `{name}` (got `{}`).",
                pretty(&other)
            ))),
        }
    };
    Ok((
        !closed("left_bound", true).await?,
        closed("right_bound", false).await?,
    ))
}

fn slice_bounds(
    length: usize,
    start: i64,
    end: Option<i64>,
    left_open: bool,
    right_closed: bool,
) -> (usize, usize) {
    let resolve = |index: i64| if index < 0 { (length as i64 + index).max(0) } else { index.min(length as i64) } as usize;
    let mut from = resolve(start);
    if left_open {
        from = (from + 1).min(length);
    }
    let mut to = end.map_or(length, resolve);
    if right_closed && end.is_some() {
        to = (to + 1).min(length);
    }
    (from, to.max(from))
}

impl Context {
    /// Evaluates the datum-level terms; `None` for any other term.
    pub async fn datum_term(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Option<Result<Value, ReqlError>> {
        let result = match term_type {
            kind::COERCE_TO => self.coerce_to(args).await,
            kind::OBJECT => self.object_term(args).await,
            kind::UUID => self.uuid_term(args).await,
            kind::BRANCH => self.branch(args).await,
            kind::DEFAULT => self.default_term(args).await,
            kind::ERROR => self.error_term(args).await,
            kind::SPLIT => self.split(args).await,
            kind::MATCH => self.match_term(args).await,
            kind::RANDOM => self.random(args, optargs).await,
            kind::BIT_AND
            | kind::BIT_OR
            | kind::BIT_XOR
            | kind::BIT_NOT
            | kind::BIT_SAL
            | kind::BIT_SAR => self.bits(term_type, args).await,
            kind::RANGE => self.range(args).await,
            kind::FORMAT => self.format_term(args).await,
            _ => {
                let (minimum, maximum) = simple_term_arity(term_type)?;
                match arity(args, minimum, maximum) {
                    Ok(()) => self.simple_datum_term(term_type, args, optargs).await,
                    Err(error) => Err(error),
                }
            }
        };
        Some(result)
    }

    /// `r.format(template, object)`: each `{name}` replaced by the
    /// object's field, strings as they are and other values as JSON.
    async fn format_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let template = match self.datum_argument(args, 0).await? {
            Datum::String(text) => text,
            other => return Err(other.wrong_type("STRING").within(Frame::Position(0))),
        };
        let fields = match self.datum_argument(args, 1).await? {
            Datum::Object(fields) => fields,
            other => return Err(other.wrong_type("OBJECT").within(Frame::Position(1))),
        };
        let mut out = String::with_capacity(template.len());
        let mut name: Option<String> = None;
        for character in template.chars() {
            match (&mut name, character) {
                (None, '{') => name = Some(String::new()),
                (None, '}') => return Err(ReqlError::logic("No parameter tags to close")),
                (None, other) => out.push(other),
                (Some(_), '{') => {
                    return Err(ReqlError::logic(
                        "Nested template parameters are not allowed",
                    ))
                }
                (Some(_), ',') => {
                    return Err(ReqlError::logic(
                        "Formatting separator `,` is not allowed in parameter name",
                    ))
                }
                (Some(_), '\\') => {
                    return Err(ReqlError::logic(
                        "Reserved escape character `\\` is not allowed in parameter name",
                    ))
                }
                (Some(parameter), '}') => {
                    let value = fields.get(parameter.as_str()).ok_or_else(|| {
                        ReqlError::new(
                            ErrorClass::NonExistence,
                            format!(
                                "No attribute `{parameter}` in object:\n{}",
                                pretty(&Datum::Object(fields.clone()))
                            ),
                        )
                    })?;
                    match value {
                        Datum::String(text) => out.push_str(text),
                        other => out.push_str(&json_text(other)),
                    }
                    name = None;
                }
                (Some(parameter), other) => parameter.push(other),
            }
        }
        if name.is_some() {
            return Err(ReqlError::logic("Parameter tag must be closed"));
        }
        Ok(Value::Datum(Datum::String(out)))
    }

    async fn coerce_to(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let value = self.datum_argument(args, 0).await?;
        let target = self.string_argument(args, 1).await?;
        if target.eq_ignore_ascii_case("bool") {
            return Ok(Value::Datum(Datum::Bool(truthy(&value))));
        }
        if target.eq_ignore_ascii_case("null") && value == Datum::Null {
            return Ok(Value::Datum(Datum::Null));
        }
        coerce(value, &target).map(Value::Datum)
    }

    async fn object_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        if args.len() % 2 != 0 {
            return Err(ReqlError::logic(format!(
                "OBJECT expects an even number of arguments (but found {}).",
                args.len()
            )));
        }
        let mut object = Object::new();
        for pair in (0..args.len()).step_by(2) {
            let key = match self.datum_argument(args, pair).await? {
                Datum::String(key) => key,
                other => return Err(type_error("STRING", &other).within(Frame::Position(pair))),
            };
            let value = self.datum_argument(args, pair + 1).await?;
            if let Some(first) = object.get(&key) {
                return Err(ReqlError::logic(format!(
                    "Duplicate key {} in object.  (got {} and {} as values)",
                    to_json(&Datum::String(key.clone())),
                    json_text(first),
                    json_text(&value)
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Datum(Datum::Object(object)))
    }

    async fn uuid_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 0, 1)?;
        if args.is_empty() {
            let mut bytes: [u8; 16] = crate::protocol::scram::random_bytes(16)
                .try_into()
                .expect("16 bytes");
            bytes[6] = (bytes[6] & 0x0F) | 0x40;
            bytes[8] = (bytes[8] & 0x3F) | 0x80;
            return Ok(Value::Datum(Datum::String(
                photondb_storage::catalog::uuid_string(u128::from_be_bytes(bytes)),
            )));
        }
        let name = self.string_argument(args, 0).await?;
        Ok(Value::Datum(Datum::String(uuid_v5(&name))))
    }

    async fn branch(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 3, usize::MAX)?;
        if args.len() % 2 == 0 {
            return Err(ReqlError::logic(
                "Cannot call `branch` term with an even number of arguments.",
            ));
        }
        for pair in (0..args.len() - 1).step_by(2) {
            if truthy(&self.strict_datum_argument(args, pair).await?) {
                return self.argument(args, pair + 1).await;
            }
        }
        self.argument(args, args.len() - 1).await
    }

    async fn default_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let caught = match self.argument(args, 0).await {
            Ok(Value::Datum(Datum::Null)) | Ok(Value::SingleSelection { row: None, .. }) => None,
            Err(error) if error.class == ErrorClass::NonExistence => Some(error),
            other => return other,
        };
        // The handler sees the error (or null); a function gets its message.
        let mut handler_context = self.child();
        handler_context.caught = Some(caught.clone());
        let argument = caught
            .as_ref()
            .map_or(Datum::Null, |error| Datum::String(error.message.clone()));
        match handler_context.argument(args, 1).await? {
            Value::Function(function) => function
                .call(&handler_context, vec![argument])
                .await
                .map(Value::Datum),
            other => Ok(other),
        }
    }

    async fn split(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, 3)?;
        let text = match self.datum_argument(args, 0).await? {
            Datum::String(text) => text,
            other => return Err(type_error("STRING", &other).within(Frame::Position(0))),
        };
        let separator = match if args.len() > 1 {
            self.datum_argument(args, 1).await?
        } else {
            Datum::Null
        } {
            Datum::Null => None,
            Datum::String(separator) => Some(separator),
            other => return Err(type_error("STRING", &other).within(Frame::Position(1))),
        };
        let limit = if args.len() > 2 {
            match self.datum_argument(args, 2).await? {
                Datum::Number(limit) if limit.fract() == 0.0 && limit >= -1.0 => {
                    (limit >= 0.0).then_some(limit as usize)
                }
                other => return Err(type_error("NUMBER", &other).within(Frame::Position(2))),
            }
        } else {
            None
        };
        Ok(Value::Datum(Datum::Array(
            split_text(&text, separator.as_deref(), limit)
                .into_iter()
                .map(Datum::String)
                .collect(),
        )))
    }

    /// `string.match(regex)`: RethinkDB's match object (`str`, `start`,
    /// `end`, and `groups`, null for a group that took no part), or null.
    /// Offsets are in bytes, as RE2 reports them to RethinkDB.
    async fn match_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let text = match self.datum_argument(args, 0).await? {
            Datum::String(text) => text,
            other => return Err(type_error("STRING", &other).within(Frame::Position(0))),
        };
        let pattern = match self.datum_argument(args, 1).await? {
            Datum::String(pattern) => pattern,
            other => return Err(type_error("STRING", &other).within(Frame::Position(1))),
        };
        let regex = regex::Regex::new(&pattern).map_err(|error| {
            let detail = error
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_owned();
            ReqlError::logic(format!("Error in regexp `{pattern}`: {detail}"))
        })?;
        let Some(captures) = regex.captures(&text) else {
            return Ok(Value::Datum(Datum::Null));
        };
        let part = |found: regex::Match| {
            let mut fields = Object::new();
            fields.insert("str".into(), Datum::String(found.as_str().to_owned()));
            fields.insert("start".into(), Datum::Number(found.start() as f64));
            fields.insert("end".into(), Datum::Number(found.end() as f64));
            fields
        };
        let mut whole = part(captures.get(0).expect("group 0 is the match"));
        let groups = captures
            .iter()
            .skip(1)
            .map(|group| group.map_or(Datum::Null, |group| Datum::Object(part(group))))
            .collect();
        whole.insert("groups".into(), Datum::Array(groups));
        Ok(Value::Datum(Datum::Object(whole)))
    }

    async fn random(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 0, 2)?;
        let float = matches!(
            self.optional_datum(optargs, "float").await?,
            Some(Datum::Bool(true))
        );
        let mut bounds = Vec::with_capacity(2);
        for index in 0..args.len() {
            bounds.push(
                number(&self.datum_argument(args, index).await?)
                    .map_err(|error| error.within(Frame::Position(index)))?,
            );
        }
        let unit = random_unit();
        if float || args.is_empty() {
            let (low, high) = match bounds[..] {
                [] => (0.0, 1.0),
                [high] => (0.0, high),
                [low, high] => (low, high),
                _ => unreachable!("arity checked"),
            };
            // Halves first: `high - low` can overflow for ±f64::MAX.
            let value = low + (high / 2.0 - low / 2.0) * 2.0 * unit;
            return Ok(Value::Datum(Datum::Number(if value.is_finite() {
                value
            } else {
                low
            })));
        }
        let (low, high) = match bounds[..] {
            [high] => (0.0, high),
            [low, high] => (low, high),
            _ => {
                return Err(ReqlError::logic(
                    "Generating a random integer requires one or two bounds.",
                ))
            }
        };
        let as_integer = |value: f64, which: &str| {
            if value.fract() != 0.0 || value.abs() > 9_007_199_254_740_992.0 {
                Err(ReqlError::logic(format!(
                    "{which} bound ({value}) could not be safely converted to an integer."
                )))
            } else {
                Ok(value as i64)
            }
        };
        let (low, high) = (as_integer(low, "Lower")?, as_integer(high, "Upper")?);
        if low >= high {
            return Err(ReqlError::logic(format!(
                "Lower bound ({low}) is not less than upper bound ({high})."
            )));
        }
        let span = (high - low) as f64;
        Ok(Value::Datum(Datum::Number(
            (low as f64 + (unit * span).floor()).min(high as f64 - 1.0),
        )))
    }

    async fn bits(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        if term_type == kind::BIT_NOT {
            arity(args, 1, 1)?;
        } else if matches!(term_type, kind::BIT_SAL | kind::BIT_SAR) {
            arity(args, 2, 2)?;
        } else {
            arity(args, 1, usize::MAX)?;
        }
        let mut values = Vec::with_capacity(args.len());
        for index in 0..args.len() {
            let datum = self.datum_argument(args, index).await?;
            values.push(bit_integer(&datum).map_err(|error| error.within(Frame::Position(index)))?);
        }
        let result = match term_type {
            kind::BIT_NOT => !values[0] as f64,
            kind::BIT_SAL | kind::BIT_SAR => {
                let (value, shift) = (values[0], values[1]);
                if shift < 0 {
                    return Err(ReqlError::logic("Cannot bit-shift by a negative value"));
                }
                if term_type == kind::BIT_SAR {
                    (value >> shift.min(63)) as f64
                } else if value == 0 {
                    0.0
                } else {
                    value as f64 * 2f64.powi(shift.min(2048) as i32)
                }
            }
            _ => {
                let combine = |a: i64, b: i64| match term_type {
                    kind::BIT_AND => a & b,
                    kind::BIT_OR => a | b,
                    _ => a ^ b,
                };
                values
                    .into_iter()
                    .reduce(combine)
                    .expect("at least one argument") as f64
            }
        };
        if !result.is_finite() {
            return Err(ReqlError::logic("Number not finite."));
        }
        Ok(Value::Datum(Datum::Number(result)))
    }

    async fn range(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 0, 2)?;
        let mut bounds = Vec::with_capacity(args.len());
        for index in 0..args.len() {
            let datum = self.datum_argument(args, index).await?;
            bounds
                .push(range_integer(&datum).map_err(|error| error.within(Frame::Position(index)))?);
        }
        let stream = match bounds[..] {
            [] => super::stream::Stream::range(0, None),
            [end] => super::stream::Stream::range(0, Some(end)),
            [start, end] => super::stream::Stream::range(start, Some(end)),
            _ => unreachable!("arity checked"),
        };
        Ok(Value::Stream(stream))
    }

    async fn error_term(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 0, 1)?;
        if args.is_empty() {
            return match &self.caught {
                Some(Some(error)) => Err(error.clone()),
                Some(None) => Ok(Value::Datum(Datum::Null)),
                None => Err(ReqlError::logic(
                    "Empty ERROR term outside a default block.",
                )),
            };
        }
        let message = self.string_argument(args, 0).await?;
        // `default(r.error)` rethrows what it caught, with its class.
        if let Some(Some(error)) = &self.caught {
            if error.message == message {
                return Err(ReqlError::new(error.class, message));
            }
        }
        Err(ReqlError::new(ErrorClass::User, message))
    }

    async fn simple_datum_term(
        &self,
        term_type: u64,
        args: &[Term],
        _optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        let mut values = Vec::with_capacity(args.len());
        for index in 0..args.len() {
            values.push(self.datum_argument(args, index).await?);
        }
        let at = |index: usize| move |error: ReqlError| error.within(Frame::Position(index));
        let first = values[0].clone();
        let result = match term_type {
            kind::KEYS => match first {
                Datum::Object(fields) => {
                    Datum::Array(fields.into_keys().map(Datum::String).collect())
                }
                other => return Err(type_error("OBJECT", &other).within(Frame::Position(0))),
            },
            kind::VALUES => match first {
                Datum::Object(fields) => Datum::Array(fields.into_values().collect()),
                other => return Err(type_error("OBJECT", &other).within(Frame::Position(0))),
            },
            kind::IS_EMPTY => match first {
                Datum::Array(items) => Datum::Bool(items.is_empty()),
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    ))
                    .within(Frame::Position(0)))
                }
            },
            kind::UPCASE | kind::DOWNCASE => match first {
                Datum::String(text) => Datum::String(if term_type == kind::UPCASE {
                    text.to_uppercase()
                } else {
                    text.to_lowercase()
                }),
                other => return Err(type_error("STRING", &other).within(Frame::Position(0))),
            },
            kind::JSON => match first {
                Datum::String(text) => {
                    let parsed: serde_json::Value =
                        serde_json::from_str(&text).map_err(|error| {
                            ReqlError::logic(format!(
                                "Failed to parse \"{text}\" as JSON: {}",
                                parse_error_message(&text, &error)
                            ))
                        })?;
                    from_json(&parsed).map_err(|error| ReqlError::logic(error.to_string()))?
                }
                other => return Err(type_error("STRING", &other).within(Frame::Position(0))),
            },
            kind::TO_JSON_STRING => Datum::String(json_text(&first)),
            kind::BINARY => match first {
                Datum::String(text) => Datum::Binary(text.into_bytes()),
                Datum::Binary(bytes) => Datum::Binary(bytes),
                other => return Err(type_error("STRING", &other).within(Frame::Position(0))),
            },
            kind::FLOOR | kind::CEIL | kind::ROUND => {
                let value = number(&first).map_err(at(0))?;
                Datum::Number(match term_type {
                    kind::FLOOR => value.floor(),
                    kind::CEIL => value.ceil(),
                    _ => value.round(),
                })
            }
            kind::MOD => {
                let (dividend, divisor) = (
                    integer(&first).map_err(at(0))?,
                    integer(&values[1]).map_err(at(1))?,
                );
                if divisor == 0 {
                    return Err(ReqlError::logic("Cannot take a number modulo 0.")
                        .within(Frame::Position(1)));
                }
                Datum::Number((dividend % divisor) as f64)
            }
            kind::APPEND | kind::PREPEND => match first {
                Datum::Array(mut items) => {
                    if term_type == kind::APPEND {
                        items.push(values[1].clone());
                    } else {
                        items.insert(0, values[1].clone());
                    }
                    Datum::Array(items)
                }
                other => return Err(type_error("ARRAY", &other).within(Frame::Position(0))),
            },
            kind::NTH => match first {
                Datum::Array(items) => {
                    let index = integer(&values[1]).map_err(at(1))?;
                    let position = if index < 0 {
                        items.len() as i64 + index
                    } else {
                        index
                    };
                    if position < 0 && index < 0 {
                        return Err(ReqlError::logic(format!(
                            "Cannot use an index < -1 ({index}) on a stream."
                        )));
                    }
                    items.get(position as usize).cloned().ok_or_else(|| {
                        ReqlError::new(
                            ErrorClass::NonExistence,
                            format!("Index out of bounds: {index}"),
                        )
                    })?
                }
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    ))
                    .within(Frame::Position(0)))
                }
            },
            kind::SKIP | kind::LIMIT => match first {
                Datum::Array(items) => {
                    let count = integer(&values[1]).map_err(at(1))?;
                    if count < 0 {
                        let name = if term_type == kind::SKIP {
                            "SKIP"
                        } else {
                            "LIMIT"
                        };
                        return Err(ReqlError::logic(format!(
                            "{name} takes a non-negative argument (got {count})"
                        ))
                        .within(Frame::Position(1)));
                    }
                    let count = (count as usize).min(items.len());
                    Datum::Array(if term_type == kind::SKIP {
                        items[count..].to_vec()
                    } else {
                        items[..count].to_vec()
                    })
                }
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    ))
                    .within(Frame::Position(0)))
                }
            },
            kind::SLICE => {
                let start = integer(&values[1]).map_err(at(1))?;
                let end = values.get(2).map(integer).transpose().map_err(at(2))?;
                let (left_open, right_closed) = slice_bound_options(self, _optargs).await?;
                match first {
                    Datum::Array(items) => {
                        let (from, to) =
                            slice_bounds(items.len(), start, end, left_open, right_closed);
                        Datum::Array(items[from..to].to_vec())
                    }
                    Datum::String(text) => {
                        let characters: Vec<char> = text.chars().collect();
                        let (from, to) =
                            slice_bounds(characters.len(), start, end, left_open, right_closed);
                        Datum::String(characters[from..to].iter().collect())
                    }
                    Datum::Binary(bytes) => {
                        let (from, to) =
                            slice_bounds(bytes.len(), start, end, left_open, right_closed);
                        Datum::Binary(bytes[from..to].to_vec())
                    }
                    other => {
                        return Err(ReqlError::logic(format!(
                            "Cannot convert {} to SEQUENCE",
                            other.type_name()
                        ))
                        .within(Frame::Position(0)))
                    }
                }
            }
            kind::HAS_FIELDS => match first {
                Datum::Object(fields) => Datum::Bool(super::sequence::has_selectors(
                    &Datum::Object(fields),
                    &values[1..],
                )?),
                // On an array: the objects that have the fields.
                Datum::Array(items) => {
                    let mut kept = Vec::new();
                    for item in items {
                        if matches!(item, Datum::Object(_))
                            && super::sequence::has_selectors(&item, &values[1..])?
                        {
                            kept.push(item);
                        }
                    }
                    Datum::Array(kept)
                }
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot perform has_fields on a non-object non-sequence `{}`.",
                        pretty(&other)
                    ))
                    .within(Frame::Position(0)))
                }
            },
            kind::CONTAINS => match first {
                Datum::Array(items) => {
                    Datum::Bool(values[1..].iter().all(|wanted| items.contains(wanted)))
                }
                other => {
                    return Err(ReqlError::logic(format!(
                        "Cannot convert {} to SEQUENCE",
                        other.type_name()
                    ))
                    .within(Frame::Position(0)))
                }
            },
            _ => unreachable!("filtered above"),
        };
        Ok(Value::Datum(result))
    }
}

/// A uniform float in [0, 1) from the kernel's random source.
fn random_unit() -> f64 {
    let bytes: [u8; 8] = crate::protocol::scram::random_bytes(8)
        .try_into()
        .expect("8 bytes");
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// An integer operand of the bit terms: as `range_integer`, and 2^53 itself
/// is too large (its neighbours are not representable).
fn bit_integer(datum: &Datum) -> Result<i64, ReqlError> {
    let value = range_integer(datum)?;
    if value == 1 << 53 {
        return Err(ReqlError::logic(format!(
            "Integer too large: {}",
            to_json(datum)
        )));
    }
    Ok(value)
}

/// A number as RethinkDB prints it in messages: integral values without a
/// fraction, even past 2^53.
fn number_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e18 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// An exact integer within ±2^53, with RethinkDB's messages.
fn range_integer(datum: &Datum) -> Result<i64, ReqlError> {
    let value = number(datum)?;
    if value > 9_007_199_254_740_992.0 {
        return Err(ReqlError::logic(format!(
            "Number not an integer (>2^53): {}",
            number_text(value)
        )));
    }
    if value < -9_007_199_254_740_992.0 {
        return Err(ReqlError::logic(format!(
            "Number not an integer (<-2^53): {}",
            number_text(value)
        )));
    }
    if value.fract() != 0.0 {
        return Err(ReqlError::logic(format!(
            "Number not an integer: {}",
            to_json(datum)
        )));
    }
    Ok(value as i64)
}

/// `split` as RethinkDB does it: no separator splits on runs of whitespace
/// (dropping empty pieces), an empty one into characters, any other keeps
/// empty pieces; `limit` caps the number of splits.
fn split_text(text: &str, separator: Option<&str>, limit: Option<usize>) -> Vec<String> {
    let limit = limit.unwrap_or(usize::MAX);
    match separator {
        None => {
            let mut pieces = Vec::new();
            let mut rest = text.trim_start();
            while !rest.is_empty() {
                if pieces.len() == limit {
                    pieces.push(rest.to_owned());
                    break;
                }
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                pieces.push(rest[..end].to_owned());
                rest = rest[end..].trim_start();
            }
            pieces
        }
        Some("") => {
            let mut pieces = Vec::new();
            let mut characters = text.char_indices();
            while let Some((index, character)) = characters.next() {
                if pieces.len() == limit {
                    pieces.push(text[index..].to_owned());
                    break;
                }
                pieces.push(character.to_string());
            }
            pieces
        }
        Some(separator) => {
            if limit == usize::MAX {
                text.split(separator).map(str::to_owned).collect()
            } else {
                text.splitn(limit + 1, separator)
                    .map(str::to_owned)
                    .collect()
            }
        }
    }
}

/// Argument counts of the terms `simple_datum_term` evaluates; `None` for
/// every other term.
fn simple_term_arity(term_type: u64) -> Option<(usize, usize)> {
    Some(match term_type {
        kind::KEYS
        | kind::VALUES
        | kind::IS_EMPTY
        | kind::UPCASE
        | kind::DOWNCASE
        | kind::JSON
        | kind::TO_JSON_STRING
        | kind::FLOOR
        | kind::CEIL
        | kind::ROUND
        | kind::BINARY => (1, 1),
        kind::MOD | kind::APPEND | kind::PREPEND | kind::NTH | kind::SKIP | kind::LIMIT => (2, 2),
        kind::HAS_FIELDS | kind::CONTAINS => (1, usize::MAX),
        kind::SLICE => (2, 3),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_the_suite() {
        let split = |text: &str, separator: Option<&str>, limit: Option<usize>| {
            split_text(text, separator, limit)
        };
        assert_eq!(split("", None, None), Vec::<String>::new());
        assert_eq!(split("", Some(" "), None), vec![""]);
        assert_eq!(
            split("aaaa bbbb  cccc ", None, None),
            vec!["aaaa", "bbbb", "cccc"]
        );
        assert_eq!(
            split("aaaa bbbb  cccc ", Some(" "), None),
            vec!["aaaa", "bbbb", "", "cccc", ""]
        );
        assert_eq!(
            split("aaaa bbbb  cccc ", Some(""), Some(5)),
            vec!["a", "a", "a", "a", " ", "bbbb  cccc "]
        );
        assert_eq!(
            split("aaaa bbbb  cccc ", Some("bb"), Some(3)),
            vec!["aaaa ", "", "  cccc "]
        );
    }

    #[test]
    fn uuid_v5_matches_rethinkdb() {
        assert_eq!(uuid_v5("magic"), "97dd10a5-4fc4-554f-86c5-0d2c2e3d5330");
    }

    #[test]
    fn strings_coerce_to_numbers_as_rethinkdb_does() {
        assert_eq!(parse_number("-1.2").unwrap(), -1.2);
        assert_eq!(parse_number("0xa").unwrap(), 10.0);
        assert!(parse_number("--1.2").is_err());
        assert!(parse_number("-1.2-").is_err());
        assert_eq!(
            parse_number("inf").unwrap_err().message,
            "Non-finite number: inf"
        );
    }
}
