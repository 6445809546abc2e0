//! Functions (`FUNC`), variables (`VAR`) and the implicit variable (`r.row`).

use std::collections::BTreeMap;

use photondb_datum::Datum;

use super::error::{Frame, ReqlError};
use super::eval::{Context, TypeMismatch, Value};
use super::term::Term;

/// A ReQL function: parameter ids, a body, and the variables it closed over.
#[derive(Clone, Debug)]
pub struct Function {
    pub parameters: Vec<u64>,
    pub body: Term,
    pub captured: BTreeMap<u64, Datum>,
}

impl Function {
    /// Reads a `FUNC` term's arguments: `[[MAKE_ARRAY, [ids…]], body]`.
    pub fn from_arguments(args: &[Term], context: &Context) -> Result<Function, ReqlError> {
        if args.len() != 2 {
            return Err(ReqlError::compile(format!(
                "Expected 2 arguments but found {} (in FUNC).",
                args.len()
            )));
        }
        let parameters = match &args[0] {
            Term::Call {
                term_type: super::term_type::MAKE_ARRAY,
                args: ids,
                ..
            } => ids
                .iter()
                .map(|id| match id {
                    Term::Datum(Datum::Number(number))
                        if *number >= 0.0 && number.fract() == 0.0 =>
                    {
                        Ok(*number as u64)
                    }
                    _ => Err(
                        ReqlError::compile("Function parameters must be variable numbers.")
                            .within(Frame::Position(0)),
                    ),
                })
                .collect::<Result<_, _>>()?,
            Term::Datum(Datum::Array(ids)) => ids
                .iter()
                .map(|id| match id {
                    Datum::Number(number) if *number >= 0.0 && number.fract() == 0.0 => {
                        Ok(*number as u64)
                    }
                    _ => Err(
                        ReqlError::compile("Function parameters must be variable numbers.")
                            .within(Frame::Position(0)),
                    ),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(
                    ReqlError::compile("Expected an array of parameters in FUNC.")
                        .within(Frame::Position(0)),
                )
            }
        };
        Ok(Function {
            parameters,
            body: args[1].clone(),
            captured: context.variables.clone(),
        })
    }

    /// A term to evaluate later, with the variables in scope now.
    pub fn closure(body: Term, context: &Context) -> Function {
        Function {
            parameters: Vec::new(),
            body,
            captured: context.variables.clone(),
        }
    }

    /// Calls the function. A function of one parameter also binds `r.row`.
    /// (Boxed: a function body may pull a stream that calls functions.)
    pub fn call<'a>(
        &'a self,
        context: &'a Context,
        arguments: Vec<Datum>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Datum, ReqlError>> + 'a>> {
        Box::pin(self.call_inner(context, arguments))
    }

    async fn call_inner(
        &self,
        context: &Context,
        arguments: Vec<Datum>,
    ) -> Result<Datum, ReqlError> {
        match self.call_value(context, arguments).await? {
            (Value::Datum(datum), _) => Ok(datum),
            (Value::SingleSelection { row, .. }, _) => Ok(row.unwrap_or(Datum::Null)),
            (Value::Stream(stream), inner) => stream.collect(&inner).await.map(Datum::Array),
            (other, _) => Err(other.wrong_type("DATUM")),
        }
    }

    /// Calls the function and returns what its body evaluated to, whatever
    /// kind of value that is, with the context it ran in (a stream it
    /// returns is read there).
    pub async fn call_value(
        &self,
        context: &Context,
        arguments: Vec<Datum>,
    ) -> Result<(Value, Context), ReqlError> {
        if arguments.len() != self.parameters.len() && !self.parameters.is_empty() {
            let plural = |count: usize| if count == 1 { "" } else { "s" };
            return Err(ReqlError::logic(format!(
                "Expected function with {} argument{} but found function with {} argument{}.",
                arguments.len(),
                plural(arguments.len()),
                self.parameters.len(),
                plural(self.parameters.len())
            )));
        }
        let mut inner = context.with_variables(self.captured.clone());
        // `r.row` is this function's argument when it takes one; otherwise
        // it stays what it was around the call.
        inner.implicit = if arguments.len() == 1 {
            Some(arguments[0].clone())
        } else {
            context.implicit.clone()
        };
        for (parameter, argument) in self.parameters.iter().zip(arguments) {
            inner.variables.insert(*parameter, argument);
        }
        let value = inner.eval(&self.body).await?;
        Ok((value, inner))
    }
}

/// Either a function or a value standing for one (`filter({'a': 1})`,
/// `update({'b': 2})`): a datum used as a function ignores its argument,
/// except objects in `filter`, which match fields.
#[derive(Clone, Debug)]
pub enum Callable {
    Function(Function),
    Constant(Datum),
}

impl Callable {
    pub async fn call(&self, context: &Context, argument: Datum) -> Result<Datum, ReqlError> {
        match self {
            Callable::Function(function) => function.call(context, vec![argument]).await,
            Callable::Constant(datum) => Ok(datum.clone()),
        }
    }

    /// A filter predicate. An object given as the predicate, or written as
    /// the whole body of the function (`lambda row: {'a': 1}`), is a
    /// template: every field it names must be in the row with that value (a
    /// field the row lacks is a non-existence error, so `default` decides).
    /// Anything else counts by truthiness, objects computed by the function
    /// (a `match` result) included, as in RethinkDB.
    pub async fn accepts(&self, context: &Context, row: &Datum) -> Result<bool, ReqlError> {
        let template = match self {
            Callable::Constant(_) => true,
            Callable::Function(function) => {
                matches!(
                    function.body,
                    Term::Datum(_)
                        | Term::Call {
                            term_type: super::term_type::MAKE_OBJ,
                            ..
                        }
                )
            }
        };
        match self.call(context, row.clone()).await? {
            Datum::Object(wanted) if template => {
                for (name, value) in &wanted {
                    let found = match row {
                        Datum::Object(fields) => fields.get(name),
                        other => {
                            return Err(ReqlError::logic(format!(
                                "Cannot perform get_field on a non-object non-sequence `{}`.",
                                super::eval::pretty(other)
                            )))
                        }
                    };
                    match found {
                        None => {
                            return Err(ReqlError::new(
                                super::error::ErrorClass::NonExistence,
                                format!("No attribute `{name}` in object."),
                            ))
                        }
                        Some(found) if found != value => return Ok(false),
                        Some(_) => {}
                    }
                }
                Ok(true)
            }
            other => Ok(super::eval::truthy(&other)),
        }
    }
}
