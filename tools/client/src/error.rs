//! The client's one error type.

/// RethinkDB's error classes, named as its drivers name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqlErrorKind {
    Client,
    Compile,
    Internal,
    ResourceLimit,
    QueryLogic,
    NonExistence,
    OpFailed,
    OpIndeterminate,
    User,
    Permission,
    Runtime,
}

impl ReqlErrorKind {
    /// From a response's type `t` and, for runtime errors, its `e`.
    pub fn from_response(response_type: u64, error_type: Option<u64>) -> ReqlErrorKind {
        match (response_type, error_type) {
            (16, _) => ReqlErrorKind::Client,
            (17, _) => ReqlErrorKind::Compile,
            (_, Some(1_000_000)) => ReqlErrorKind::Internal,
            (_, Some(2_000_000)) => ReqlErrorKind::ResourceLimit,
            (_, Some(3_000_000)) => ReqlErrorKind::QueryLogic,
            (_, Some(3_100_000)) => ReqlErrorKind::NonExistence,
            (_, Some(4_100_000)) => ReqlErrorKind::OpFailed,
            (_, Some(4_200_000)) => ReqlErrorKind::OpIndeterminate,
            (_, Some(5_000_000)) => ReqlErrorKind::User,
            (_, Some(6_000_000)) => ReqlErrorKind::Permission,
            _ => ReqlErrorKind::Runtime,
        }
    }

    /// The name the official drivers give the error's class.
    pub fn name(self) -> &'static str {
        match self {
            ReqlErrorKind::Client => "ReqlClientError",
            ReqlErrorKind::Compile => "ReqlCompileError",
            ReqlErrorKind::Internal => "ReqlInternalError",
            ReqlErrorKind::ResourceLimit => "ReqlResourceLimitError",
            ReqlErrorKind::QueryLogic => "ReqlQueryLogicError",
            ReqlErrorKind::NonExistence => "ReqlNonExistenceError",
            ReqlErrorKind::OpFailed => "ReqlOpFailedError",
            ReqlErrorKind::OpIndeterminate => "ReqlOpIndeterminateError",
            ReqlErrorKind::User => "ReqlUserError",
            ReqlErrorKind::Permission => "ReqlPermissionError",
            ReqlErrorKind::Runtime => "ReqlRuntimeError",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the handshake (wrong password, unknown user).
    #[error("ReqlAuthError: {0}")]
    Authentication(String),
    /// The server spoke something other than the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The query failed on the server.
    #[error("{}: {message}", kind.name())]
    Reql {
        kind: ReqlErrorKind,
        message: String,
    },
}
