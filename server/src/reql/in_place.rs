//! Predicates and group keys read on stored documents, without decoding them.
//!
//! Most filters are a few field comparisons (`row['age'] > 30`,
//! `{'status': 'active'}`, `r.and(…)` of those), and most groups are a
//! field. Decoding a whole stored document into a `Datum` and running the
//! interpreter on it costs microseconds per row; comparing one field where
//! it lies in the document's bytes costs tens of nanoseconds. So a scan on a
//! partition compiles its predicates and keys once, here, when they have
//! that shape, and reads each row in place.
//!
//! What is compiled only ever *decides the easy rows*: a row it cannot
//! decide (a field the row lacks, a field read on something that is not an
//! object, bytes that do not decode) answers `None`, and the caller runs
//! the interpreter on the decoded row. Errors, `default`, and every other
//! subtlety therefore stay the interpreter's alone.

use std::cell::Cell;
use std::cmp::Ordering;

use photondb_datum::document::DocumentRef;
use photondb_datum::{Datum, DatumError};

use super::function::Callable;
use super::term::Term;
use super::term_type as kind;

/// A filter predicate compiled to read stored documents.
#[derive(Debug)]
pub struct StoredPredicate {
    expression: Expression,
}

/// A group key compiled to read stored documents.
#[derive(Debug)]
pub enum StoredKey {
    Constant(Datum),
    /// A field path from the row; a missing field groups as `null`, as
    /// the interpreter's non-existence does.
    Field(Vec<Name>),
}

#[derive(Debug)]
enum Expression {
    Constant(Datum),
    /// A field path from the row (empty: the row itself).
    Field(Vec<Name>),
    /// `eq`, `ne`, `lt`, `le`, `gt` or `ge` over constants and fields.
    Compare {
        term_type: u64,
        operands: Vec<Expression>,
    },
    All(Vec<Expression>),
    Any(Vec<Expression>),
    Not(Box<Expression>),
}

/// A field's name, with where it was found last.
///
/// Documents of one table mostly have the same fields, so the next one
/// likely has this field at the same place in its sorted table: one
/// comparison there instead of a binary search. A scan that prefetches a
/// row's fields (see [`StoredPredicate::prefetch`]) looks every field up
/// twice, which made the search a quarter of its time.
#[derive(Debug)]
pub struct Name {
    text: String,
    last: Cell<u32>,
}

impl Name {
    fn new(text: &str) -> Name {
        Name {
            text: text.to_owned(),
            last: Cell::new(0),
        }
    }

    fn find<'a>(&self, value: DocumentRef<'a>) -> Result<Option<DocumentRef<'a>>, DatumError> {
        value.field_near(&self.text, &self.last)
    }

    /// The field; `None` when absent, unreadable, or `value` is no object.
    fn read<'a>(&self, value: DocumentRef<'a>) -> Option<DocumentRef<'a>> {
        self.find(value).ok()?
    }
}

/// A value an expression reads: in the document or in the query.
enum Operand<'a> {
    Stored(DocumentRef<'a>),
    Constant(&'a Datum),
}

impl StoredPredicate {
    /// `None` when the predicate has a shape this module does not read.
    pub fn compile(predicate: &Callable) -> Option<StoredPredicate> {
        let expression = match predicate {
            Callable::Constant(Datum::Object(template)) => template_expression(template),
            Callable::Constant(other) => Expression::Constant(other.clone()),
            Callable::Function(function) => {
                let row = row_parameter(&function.parameters)?;
                match &function.body {
                    Term::Datum(Datum::Object(template)) => template_expression(template),
                    body => boolean(body, row)?,
                }
            }
        };
        Some(StoredPredicate { expression })
    }

    /// Whether `document` passes; `None` when it takes the interpreter to
    /// say.
    pub fn accepts(&self, document: DocumentRef<'_>) -> Option<bool> {
        truth(&self.expression, document)
    }

    /// Prefetches the fields [`StoredPredicate::accepts`] will read in
    /// `document` (see [`photondb_storage::RowVisitor::upcoming`]).
    pub fn prefetch(&self, document: DocumentRef<'_>) {
        prefetch(&self.expression, document);
    }
}

impl StoredKey {
    /// `None` when the key has a shape this module does not read.
    pub fn compile(key: &Callable) -> Option<StoredKey> {
        match key {
            // `group('field')`.
            Callable::Constant(Datum::String(field)) => {
                Some(StoredKey::Field(vec![Name::new(field)]))
            }
            Callable::Constant(other) => Some(StoredKey::Constant(other.clone())),
            Callable::Function(function) => {
                let row = row_parameter(&function.parameters)?;
                match operand(&function.body, row)? {
                    Expression::Field(path) if !path.is_empty() => Some(StoredKey::Field(path)),
                    _ => None,
                }
            }
        }
    }

    /// The key of `document`; `None` when it takes the interpreter to say.
    pub fn evaluate(&self, document: DocumentRef<'_>) -> Option<Datum> {
        match self.locate(document)? {
            KeyValue::Stored(value) => value.to_datum().ok(),
            KeyValue::Given(value) => Some(value.clone()),
        }
    }

    /// Prefetches the key of `document` (see
    /// [`photondb_storage::RowVisitor::upcoming`]).
    pub fn prefetch(&self, document: DocumentRef<'_>) {
        if let Some(KeyValue::Stored(value)) = self.locate(document) {
            value.prefetch();
        }
    }

    /// Where the key of `document` is, without decoding it; `None` when
    /// it takes the interpreter to say.
    pub fn locate<'a>(&'a self, document: DocumentRef<'a>) -> Option<KeyValue<'a>> {
        match self {
            StoredKey::Constant(value) => Some(KeyValue::Given(value)),
            StoredKey::Field(path) => {
                let (last, parents) = path.split_last()?;
                let mut value = document;
                for name in parents {
                    value = name.read(value)?;
                }
                // Only an object's missing field is `null`; reading a
                // field of anything else is an error the interpreter gives.
                if !value.is_object() {
                    return None;
                }
                match last.find(value).ok()? {
                    Some(found) => Some(KeyValue::Stored(found)),
                    None => Some(KeyValue::Given(&NULL)),
                }
            }
        }
    }
}

/// A group key found by [`StoredKey::locate`].
pub enum KeyValue<'a> {
    /// In the stored document.
    Stored(DocumentRef<'a>),
    /// Given without reading the row: a constant, or the `null` of a
    /// missing field.
    Given(&'a Datum),
}

static NULL: Datum = Datum::Null;

/// The variable standing for the row: the function's one parameter (or
/// none), and `r.row` (`IMPLICIT_VAR`), which a one-argument call binds to
/// its argument too.
#[derive(Clone, Copy)]
struct Row {
    parameter: Option<u64>,
}

fn row_parameter(parameters: &[u64]) -> Option<Row> {
    match parameters {
        [] => Some(Row { parameter: None }),
        [id] => Some(Row {
            parameter: Some(*id),
        }),
        _ => None,
    }
}

/// `{'a': 1, 'b': 2}` as a filter: every field present and equal.
fn template_expression(template: &photondb_datum::Object) -> Expression {
    Expression::All(
        template
            .iter()
            .map(|(name, value)| Expression::Compare {
                term_type: kind::EQ,
                operands: vec![
                    Expression::Field(vec![Name::new(name)]),
                    Expression::Constant(value.clone()),
                ],
            })
            .collect(),
    )
}

/// A term whose truth decides the predicate.
fn boolean(term: &Term, row: Row) -> Option<Expression> {
    let Term::Call {
        term_type,
        args,
        optargs,
    } = term
    else {
        return operand(term, row);
    };
    if !optargs.is_empty() {
        return None;
    }
    match *term_type {
        kind::EQ | kind::NE | kind::LT | kind::LE | kind::GT | kind::GE if !args.is_empty() => {
            Some(Expression::Compare {
                term_type: *term_type,
                operands: args
                    .iter()
                    .map(|argument| operand(argument, row))
                    .collect::<Option<_>>()?,
            })
        }
        kind::AND | kind::OR => {
            let parts = args
                .iter()
                .map(|argument| boolean(argument, row))
                .collect::<Option<_>>()?;
            Some(if *term_type == kind::AND {
                Expression::All(parts)
            } else {
                Expression::Any(parts)
            })
        }
        kind::NOT if args.len() == 1 => Some(Expression::Not(Box::new(boolean(&args[0], row)?))),
        _ => operand(term, row),
    }
}

/// A constant, the row, or a chain of string field reads from the row.
fn operand(term: &Term, row: Row) -> Option<Expression> {
    match term {
        Term::Datum(datum) => Some(Expression::Constant(datum.clone())),
        Term::Call {
            term_type,
            args,
            optargs,
        } if optargs.is_empty() => match (*term_type, args.as_slice(), row) {
            (kind::IMPLICIT_VAR, [], _) => Some(Expression::Field(Vec::new())),
            (
                kind::VAR,
                [Term::Datum(Datum::Number(id))],
                Row {
                    parameter: Some(parameter),
                },
            ) if *id == parameter as f64 => Some(Expression::Field(Vec::new())),
            (kind::BRACKET | kind::GET_FIELD, [object, Term::Datum(Datum::String(name))], _) => {
                match operand(object, row)? {
                    Expression::Field(mut path) => {
                        path.push(Name::new(name));
                        Some(Expression::Field(path))
                    }
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

fn prefetch(expression: &Expression, document: DocumentRef<'_>) {
    match expression {
        Expression::Constant(_) => {}
        Expression::Field(_) => {
            if let Some(Operand::Stored(value)) = read(expression, document) {
                value.prefetch();
            }
        }
        Expression::Compare { operands, .. }
        | Expression::All(operands)
        | Expression::Any(operands) => {
            for operand in operands {
                prefetch(operand, document);
            }
        }
        Expression::Not(inner) => prefetch(inner, document),
    }
}

fn read<'a>(expression: &'a Expression, document: DocumentRef<'a>) -> Option<Operand<'a>> {
    match expression {
        Expression::Constant(value) => Some(Operand::Constant(value)),
        Expression::Field(path) => {
            let mut value = document;
            for name in path {
                // Not an object, or no such field: the interpreter says
                // what that means (an error, or `default`).
                value = name.read(value)?;
            }
            Some(Operand::Stored(value))
        }
        _ => None,
    }
}

fn compare(left: &Operand<'_>, right: &Operand<'_>) -> Option<Ordering> {
    match (left, right) {
        (Operand::Stored(left), Operand::Stored(right)) => left.cmp_document(right).ok(),
        (Operand::Stored(left), Operand::Constant(right)) => left.cmp_datum(right).ok(),
        (Operand::Constant(left), Operand::Stored(right)) => {
            right.cmp_datum(left).ok().map(Ordering::reverse)
        }
        (Operand::Constant(left), Operand::Constant(right)) => Some(left.cmp_reql(right)),
    }
}

/// Whether two neighbouring operands of a comparison (`eq`, `ne`, `lt`,
/// `le`, `gt`, `ge`) satisfy it; the interpreter asks the same.
pub fn holds(term_type: u64, ordering: Ordering) -> bool {
    match term_type {
        kind::EQ => ordering == Ordering::Equal,
        kind::NE => ordering != Ordering::Equal,
        kind::LT => ordering == Ordering::Less,
        kind::LE => ordering != Ordering::Greater,
        kind::GT => ordering == Ordering::Greater,
        _ => ordering != Ordering::Less,
    }
}

fn truth(expression: &Expression, document: DocumentRef<'_>) -> Option<bool> {
    match expression {
        Expression::Constant(_) | Expression::Field(_) => match read(expression, document)? {
            Operand::Stored(value) => Some(value.truthy()),
            Operand::Constant(value) => Some(super::eval::truthy(value)),
        },
        Expression::Compare {
            term_type,
            operands,
        } => {
            // Every operand is read before any comparison, as the
            // interpreter evaluates every argument first.
            if let [left, right] = operands.as_slice() {
                // The common shape, without collecting the operands.
                let (left, right) = (read(left, document)?, read(right, document)?);
                return Some(holds(*term_type, compare(&left, &right)?));
            }
            let values = operands
                .iter()
                .map(|operand| read(operand, document))
                .collect::<Option<Vec<_>>>()?;
            let mut orderings = values.windows(2).map(|pair| compare(&pair[0], &pair[1]));
            if *term_type == kind::NE {
                // `ne` holds unless every neighbour is equal.
                let mut all_equal = true;
                for ordering in orderings {
                    all_equal &= ordering? == Ordering::Equal;
                }
                return Some(!all_equal);
            }
            orderings.try_fold(true, |all, ordering| {
                Some(all && holds(*term_type, ordering?))
            })
        }
        Expression::All(parts) => {
            for part in parts {
                if !truth(part, document)? {
                    return Some(false);
                }
            }
            Some(true)
        }
        Expression::Any(parts) => {
            for part in parts {
                if truth(part, document)? {
                    return Some(true);
                }
            }
            Some(false)
        }
        Expression::Not(inner) => Some(!truth(inner, document)?),
    }
}
