//! The data directory's identity.
//!
//! ```text
//! <data-dir>/PHOTONDB          {"format_version": 2, "partitions": N}
//! <data-dir>/partition-NNNN/   one per partition (see photondb-storage)
//! ```
//! `PHOTONDB` is written last when a directory is initialised (temporary
//! file, fsync, rename, fsync of the directory), so its presence means every
//! partition was created. The partition count never changes: a restart with
//! another core count places the same partitions on the cores it has.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::EngineError;

pub const FORMAT_VERSION: u64 = 2;
const IDENTITY_FILE: &str = "PHOTONDB";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub partitions: u32,
}

pub fn partition_directory(root: &Path, partition: u32) -> PathBuf {
    root.join(format!("partition-{partition:04}"))
}

/// Reads the identity, or `None` for a directory never fully initialised.
pub fn read(root: &Path) -> Result<Option<Identity>, EngineError> {
    let path = root.join(IDENTITY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(EngineError::Startup(format!("{}: {error}", path.display()))),
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| EngineError::Startup(format!("{}: {error}", path.display())))?;
    let version = value["format_version"].as_u64();
    if version != Some(FORMAT_VERSION) {
        return Err(EngineError::Startup(format!(
            "{} has format version {version:?}; this build reads version {FORMAT_VERSION}",
            path.display()
        )));
    }
    let partitions = value["partitions"]
        .as_u64()
        .filter(|count| (1..=4096).contains(count))
        .ok_or_else(|| EngineError::Startup(format!("{}: bad partition count", path.display())))?;
    Ok(Some(Identity {
        partitions: partitions as u32,
    }))
}

/// Removes what an interrupted initialisation left (only `partition-*`
/// directories, and only when no identity file exists).
pub fn clear_incomplete(root: &Path) -> Result<(), EngineError> {
    let startup =
        |error: std::io::Error| EngineError::Startup(format!("{}: {error}", root.display()));
    fs::create_dir_all(root).map_err(startup)?;
    for entry in fs::read_dir(root).map_err(startup)? {
        let entry = entry.map_err(startup)?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("partition-")
        {
            fs::remove_dir_all(entry.path()).map_err(startup)?;
        }
    }
    Ok(())
}

/// Writes the identity file durably; call after every partition exists.
pub fn write(root: &Path, identity: Identity) -> Result<(), EngineError> {
    let startup =
        |error: std::io::Error| EngineError::Startup(format!("{}: {error}", root.display()));
    let temporary = root.join(format!("{IDENTITY_FILE}.tmp"));
    let text =
        serde_json::json!({ "format_version": FORMAT_VERSION, "partitions": identity.partitions })
            .to_string();
    let mut file = fs::File::create(&temporary).map_err(startup)?;
    file.write_all(text.as_bytes()).map_err(startup)?;
    file.sync_all().map_err(startup)?;
    fs::rename(&temporary, root.join(IDENTITY_FILE)).map_err(startup)?;
    fs::File::open(root)
        .and_then(|directory| directory.sync_all())
        .map_err(startup)?;
    Ok(())
}
