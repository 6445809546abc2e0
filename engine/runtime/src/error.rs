use photondb_storage::StorageError;

/// Errors of the engine as a whole.
#[derive(Debug, thiserror::Error, Clone)]
pub enum EngineError {
    /// A storage error from one partition; see its variants.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The engine is shutting down or a shard thread has stopped; the
    /// request was not run (or its outcome is unknown if it was a write).
    #[error("the storage engine is not running: {0}")]
    Stopped(String),
    /// A name or id that does not exist, or already does.
    #[error("{0}")]
    Catalog(String),
    /// Starting the engine failed (data directory, thread placement).
    #[error("cannot start the storage engine: {0}")]
    Startup(String),
    /// A listening socket could not be opened (port taken, no permission).
    #[error("{0}")]
    Listen(String),
}
