//! ReQL errors: RethinkDB's classes, messages and backtraces.

use serde_json::{json, Value};

use crate::protocol::frame::response_type;

/// The error classes drivers map to exception types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A query the server could not compile (bad term, bad arity).
    Compile,
    /// A malformed request (`ReqlDriverError` side); the connection stays open.
    Client,
    Internal,
    ResourceLimit,
    QueryLogic,
    NonExistence,
    OpFailed,
    OpIndeterminate,
    /// Raised by the query itself (`r.error`).
    User,
    /// The user lacks a permission the query needs.
    Permission,
}

impl ErrorClass {
    /// The exception name RethinkDB's drivers raise for this class (what
    /// the HTTP API reports).
    pub fn driver_name(self) -> &'static str {
        match self {
            ErrorClass::Compile => "ReqlCompileError",
            ErrorClass::Client => "ReqlClientError",
            ErrorClass::Internal => "ReqlInternalError",
            ErrorClass::ResourceLimit => "ReqlResourceLimitError",
            ErrorClass::QueryLogic => "ReqlQueryLogicError",
            ErrorClass::NonExistence => "ReqlNonExistenceError",
            ErrorClass::OpFailed => "ReqlOpFailedError",
            ErrorClass::OpIndeterminate => "ReqlOpIndeterminateError",
            ErrorClass::User => "ReqlUserError",
            ErrorClass::Permission => "ReqlPermissionError",
        }
    }

    /// `Response.ErrorType` for runtime errors.
    fn error_type(self) -> Option<u64> {
        Some(match self {
            ErrorClass::Internal => 1_000_000,
            ErrorClass::ResourceLimit => 2_000_000,
            ErrorClass::QueryLogic => 3_000_000,
            ErrorClass::NonExistence => 3_100_000,
            ErrorClass::OpFailed => 4_100_000,
            ErrorClass::OpIndeterminate => 4_200_000,
            ErrorClass::User => 5_000_000,
            ErrorClass::Permission => 6_000_000,
            ErrorClass::Compile | ErrorClass::Client => return None,
        })
    }
}

/// One backtrace frame: a positional argument or an optional argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Position(usize),
    Optional(String),
}

#[derive(Clone, Debug)]
pub struct ReqlError {
    pub class: ErrorClass,
    pub message: String,
    /// From the query's root down to the term that failed.
    pub backtrace: Vec<Frame>,
}

impl ReqlError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ReqlError {
            class,
            message: message.into(),
            backtrace: Vec::new(),
        }
    }

    /// A logic error; a null found where a value was needed is a
    /// non-existence error, as in RethinkDB (so `default` catches it).
    pub fn logic(message: impl Into<String>) -> Self {
        let message = message.into();
        let class = if message.ends_with("but found NULL.") {
            ErrorClass::NonExistence
        } else {
            ErrorClass::QueryLogic
        };
        Self::new(class, message)
    }

    /// Stored bytes that do not decode: the storage's fault, not the query's.
    pub fn unreadable(error: photondb_datum::DatumError) -> Self {
        Self::new(
            ErrorClass::Internal,
            format!("Stored document is unreadable: {error}"),
        )
    }

    pub fn op_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::OpFailed, message)
    }

    /// A result grew past the query's `array_limit`.
    pub fn array_limit(limit: usize) -> Self {
        Self::new(
            ErrorClass::ResourceLimit,
            format!(
                "Array over size limit `{limit}`.  To raise the number of allowed elements, modify the `array_limit` option to `.run` (not available in the Data Explorer), or use an index."
            ),
        )
    }

    pub fn compile(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Compile, message)
    }

    /// Records that this error came from inside `frame` of the enclosing term.
    pub fn within(mut self, frame: Frame) -> Self {
        self.backtrace.insert(0, frame);
        self
    }

    /// The response body a driver expects.
    /// The backtrace as the wire protocol writes it.
    pub fn backtrace_json(&self) -> Value {
        Value::Array(
            self.backtrace
                .iter()
                .map(|frame| match frame {
                    Frame::Position(index) => json!(index),
                    Frame::Optional(name) => json!(name),
                })
                .collect(),
        )
    }

    pub fn to_response(&self) -> Value {
        let backtrace: Vec<Value> = self
            .backtrace
            .iter()
            .map(|frame| match frame {
                Frame::Position(index) => json!(index),
                Frame::Optional(name) => json!(name),
            })
            .collect();
        match self.class {
            ErrorClass::Compile => {
                json!({ "t": response_type::COMPILE_ERROR, "r": [self.message], "b": backtrace })
            }
            ErrorClass::Client => {
                json!({ "t": response_type::CLIENT_ERROR, "r": [self.message], "b": backtrace })
            }
            class => {
                json!({ "t": response_type::RUNTIME_ERROR, "e": class.error_type(), "r": [self.message], "b": backtrace })
            }
        }
    }
}

/// The one place engine errors become ReQL errors.
impl From<photondb_runtime::EngineError> for ReqlError {
    fn from(error: photondb_runtime::EngineError) -> Self {
        use photondb_runtime::EngineError;
        use photondb_storage::StorageError;
        match error {
            EngineError::Catalog(message) => ReqlError::op_failed(message),
            EngineError::Storage(StorageError::WriteTooLarge { bytes, limit }) => ReqlError::new(
                ErrorClass::ResourceLimit,
                format!("Write of {bytes} bytes exceeds the largest write this server accepts ({limit} bytes)."),
            ),
            // The write may or may not have reached the disk before the
            // failure: RethinkDB calls that indeterminate.
            EngineError::Storage(error @ (StorageError::Io { .. } | StorageError::Poisoned { .. })) => {
                ReqlError::new(ErrorClass::OpIndeterminate, error.to_string())
            }
            other => ReqlError::op_failed(other.to_string()),
        }
    }
}
