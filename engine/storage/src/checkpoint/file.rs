//! Checkpoint files: every row of a partition, in 4 KiB pages.
//!
//! ```text
//! page   := header(16) payload(4080)
//! header := u32 magic "PCKP", u32 page_index, u32 used_bytes, u32 crc32c
//!           (crc over bytes 0..12 of the header, then the used payload)
//! stream := the payloads concatenated: entry*
//! entry  := the WAL `put` operation encoding (kind, table, key, value)
//! ```
//! The superblock records the page and entry counts, so a short or padded
//! file is detected too. A page that fails its checksum is reported with its
//! file offset; it is never read as data.

use std::path::{Path, PathBuf};

use crate::batch::{encode_operation, OperationReader, WalOperation};
use crate::error::{Result, StorageError};
use crate::io::{read_whole, DirectFile, FileSystem, BLOCK_BYTES};
use crate::tables::Tables;

const MAGIC: u32 = u32::from_le_bytes(*b"PCKP");
const PAGE_HEADER_BYTES: usize = 16;
const PAGE_PAYLOAD_BYTES: usize = BLOCK_BYTES - PAGE_HEADER_BYTES;
/// Pages are written in runs of this many bytes.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

pub fn path_for(directory: &Path, sequence: u64) -> PathBuf {
    directory.join(format!("checkpoint-{sequence:016}.dat"))
}

/// What a written checkpoint file holds.
pub struct Written {
    pub pages: u64,
    pub entries: u64,
}

/// Writes every row of `tables` to a new file and makes it durable.
pub async fn write<S: FileSystem>(fs: &S, directory: &Path, sequence: u64, tables: &Tables) -> Result<Written> {
    let path = path_for(directory, sequence);
    let io_error = |error| StorageError::io(&path, error);
    if fs.exists(&path).await.map_err(io_error)? {
        // Left by a checkpoint that crashed before its superblock was written.
        fs.remove(&path).await.map_err(io_error)?;
    }
    let file = fs.create(&path).await.map_err(io_error)?;
    let mut writer = PageWriter { pages: Vec::with_capacity(WRITE_CHUNK_BYTES), page: Vec::new(), page_index: 0, offset: 0 };
    let mut entries = 0u64;
    let mut encoded = Vec::new();
    for table in tables.table_ids() {
        for (key, value) in tables.rows(table) {
            encoded.clear();
            encode_operation(&WalOperation::Put { table, key: key.clone(), value: value.clone() }, &mut encoded);
            writer.push(&encoded);
            entries += 1;
            if writer.pages.len() >= WRITE_CHUNK_BYTES {
                writer.write_out(&file).await.map_err(io_error)?;
            }
        }
    }
    writer.finish_page();
    writer.write_out(&file).await.map_err(io_error)?;
    file.sync_data().await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    fs.sync_directory(directory).await.map_err(io_error)?;
    Ok(Written { pages: writer.page_index as u64, entries })
}

struct PageWriter {
    /// Finished pages not yet written.
    pages: Vec<u8>,
    /// Payload of the page being filled.
    page: Vec<u8>,
    page_index: u32,
    offset: u64,
}

impl PageWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = PAGE_PAYLOAD_BYTES - self.page.len();
            let take = room.min(bytes.len());
            self.page.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.page.len() == PAGE_PAYLOAD_BYTES {
                self.finish_page();
            }
        }
    }

    fn finish_page(&mut self) {
        if self.page.is_empty() {
            return;
        }
        let start = self.pages.len();
        self.pages.extend_from_slice(&MAGIC.to_le_bytes());
        self.pages.extend_from_slice(&self.page_index.to_le_bytes());
        self.pages.extend_from_slice(&(self.page.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&self.pages[start..start + 12]), &self.page);
        self.pages.extend_from_slice(&crc.to_le_bytes());
        self.pages.extend_from_slice(&self.page);
        self.pages.resize(start + BLOCK_BYTES, 0);
        self.page.clear();
        self.page_index += 1;
    }

    async fn write_out<F: DirectFile>(&mut self, file: &F) -> std::io::Result<()> {
        if self.pages.is_empty() {
            return Ok(());
        }
        file.write_at(self.offset, &self.pages).await?;
        self.offset += self.pages.len() as u64;
        self.pages.clear();
        Ok(())
    }
}

/// Reads a checkpoint file back into `tables`, verifying every page.
pub async fn read<S: FileSystem>(fs: &S, directory: &Path, sequence: u64, pages: u64, entries: u64, tables: &mut Tables) -> Result<()> {
    let path = path_for(directory, sequence);
    let io_error = |error| StorageError::io(&path, error);
    let corruption = |offset: u64, detail: String| StorageError::Corruption { path: path.clone(), offset, detail };
    let file = fs.open(&path).await.map_err(io_error)?;
    let expected_bytes = pages * BLOCK_BYTES as u64;
    let size = file.size().await.map_err(io_error)?;
    if size < expected_bytes {
        return Err(corruption(size, format!("checkpoint file is {size} bytes, the superblock says {expected_bytes}")));
    }
    let bytes = read_whole(&file, expected_bytes).await.map_err(io_error)?;
    file.close().await.map_err(io_error)?;
    let mut stream = Vec::with_capacity(bytes.len());
    for (index, page) in bytes.chunks(BLOCK_BYTES).enumerate() {
        let offset = (index * BLOCK_BYTES) as u64;
        let u32_at = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"));
        let used = u32_at(8) as usize;
        if u32_at(0) != MAGIC || u32_at(4) != index as u32 || used > PAGE_PAYLOAD_BYTES {
            return Err(corruption(offset, "bad page header".into()));
        }
        let payload = &page[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + used];
        if crc32c::crc32c_append(crc32c::crc32c(&page[..12]), payload) != u32_at(12) {
            return Err(corruption(offset, "page checksum mismatch".into()));
        }
        stream.extend_from_slice(payload);
    }
    let mut reader = OperationReader::new(&stream);
    let mut read_entries = 0;
    while !reader.is_at_end() {
        let at = reader.position();
        let operation = reader.operation().ok_or_else(|| {
            corruption((at / PAGE_PAYLOAD_BYTES * BLOCK_BYTES) as u64, "undecodable checkpoint entry".into())
        })?;
        tables.replay(operation);
        read_entries += 1;
    }
    if read_entries != entries {
        return Err(corruption(0, format!("checkpoint holds {read_entries} entries, the superblock says {entries}")));
    }
    Ok(())
}
