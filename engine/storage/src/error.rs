use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error, Clone)]
pub enum StorageError {
    /// A file failed its checksum or structure check. The partition refuses
    /// to start: serving it could return wrong data. An operator must restore
    /// from a backup or remove the damaged partition knowingly.
    #[error("corruption in {path} at offset {offset}: {detail}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// An I/O call failed. During a write or sync this poisons the partition.
    #[error("I/O error on {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    /// An earlier write or sync failed; the partition refuses writes until it
    /// is restarted and recovered. Retrying would hide lost data (the kernel
    /// may have dropped the dirty pages of the failed write).
    #[error("partition {partition} is stopped after a failed write or sync: {reason}")]
    Poisoned { partition: u32, reason: String },
    /// One batch cannot fit in the WAL ring. The caller should split it.
    #[error("write of {bytes} bytes is larger than the largest WAL record ({limit} bytes)")]
    WriteTooLarge { bytes: usize, limit: usize },
    /// A row key longer than the storage layer takes.
    #[error("key of {bytes} bytes is longer than the longest key stored ({limit} bytes)")]
    KeyTooLong { bytes: usize, limit: usize },
    /// The data directory was made by another format version or layout.
    #[error("data directory {path}: {detail}")]
    Incompatible { path: PathBuf, detail: String },
}

impl StorageError {
    pub(crate) fn io(path: &std::path::Path, error: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.to_owned(),
            detail: error.to_string(),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
