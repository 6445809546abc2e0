//! Direct I/O through glommio's `DmaFile` (O_DIRECT on io_uring).

use std::io;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};
use photondb_storage::io::{DirectFile, FileSystem};

/// The real file system, for partitions running on a glommio shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct DirectFileSystem;

pub struct DirectIoFile {
    file: DmaFile,
}

impl DirectFile for DirectIoFile {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let result = self
            .file
            .read_at_aligned(offset, len)
            .await
            .map_err(|error| {
                io::Error::other(format!("{error} (reading {len} bytes at offset {offset})"))
            })?;
        Ok(result.to_vec())
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < data.len() {
            let mut buffer = self.file.alloc_dma_buffer(data.len() - written);
            buffer.as_bytes_mut().copy_from_slice(&data[written..]);
            let count = self.file.write_at(buffer, offset + written as u64).await?;
            if count == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "direct write wrote nothing",
                ));
            }
            // Short direct writes end on an alignment boundary; continue there.
            written += count;
        }
        Ok(())
    }

    async fn sync_data(&self) -> io::Result<()> {
        Ok(self.file.fdatasync().await?)
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.file.file_size().await?)
    }

    async fn close(self) -> io::Result<()> {
        Ok(self.file.close().await?)
    }
}

thread_local! {
    /// Devices whose polled-I/O support glommio has probed on this thread.
    static PROBED_DEVICES: std::cell::RefCell<std::collections::HashSet<u64>> = Default::default();
}

/// glommio decides, once per device and thread, whether reads may use the
/// kernel's polled-I/O ring, by reading the first file it opens there. An
/// empty file answers that read with success whatever the device supports,
/// and on a device without polling every later read then fails with
/// EOPNOTSUPP. So before the first file of a device is opened on a thread,
/// open a file that holds data.
async fn probe_device(directory: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(directory)?.dev();
    if PROBED_DEVICES.with(|probed| probed.borrow().contains(&device)) {
        return Ok(());
    }
    let probe = directory.join(format!(".photondb-probe-{}", std::process::id()));
    std::fs::write(&probe, vec![0u8; 4096])?;
    let opened = OpenOptions::new().read(true).dma_open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    opened?.close().await?;
    PROBED_DEVICES.with(|probed| probed.borrow_mut().insert(device));
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

impl FileSystem for DirectFileSystem {
    type File = DirectIoFile;

    async fn open(&self, path: &Path) -> io::Result<DirectIoFile> {
        probe_device(parent_of(path)).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await?;
        Ok(DirectIoFile { file })
    }

    async fn create(&self, path: &Path) -> io::Result<DirectIoFile> {
        probe_device(parent_of(path)).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await?;
        Ok(DirectIoFile { file })
    }

    async fn create_directory(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    async fn sync_directory(&self, path: &Path) -> io::Result<()> {
        let directory = glommio::io::Directory::open(path).await?;
        directory.sync().await?;
        Ok(directory.close().await?)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    async fn list(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(PathBuf::from(entry?.file_name()));
        }
        names.sort();
        Ok(names)
    }
}
