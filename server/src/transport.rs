//! Buffered reading over a client connection.

use std::io;

use photondb_runtime::network::Connection;

pub struct Transport {
    connection: Connection,
    buffer: Vec<u8>,
    /// Bytes of `buffer` before this were consumed.
    start: usize,
}

impl Transport {
    pub fn new(connection: Connection) -> Self {
        Transport { connection, buffer: Vec::with_capacity(64 * 1024), start: 0 }
    }

    fn available(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Reads more bytes; `UnexpectedEof` when the peer has closed.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        let count = self.connection.read(&mut chunk).await?;
        if count == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        self.buffer.extend_from_slice(&chunk[..count]);
        Ok(())
    }

    pub async fn read_exact(&mut self, count: usize) -> io::Result<Vec<u8>> {
        while self.available().len() < count {
            self.fill().await?;
        }
        let bytes = self.available()[..count].to_vec();
        self.start += count;
        Ok(bytes)
    }

    /// Reads up to (and drops) a NUL byte; fails past `limit` bytes.
    pub async fn read_until_nul(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(position) = self.available().iter().position(|&byte| byte == 0) {
                let bytes = self.available()[..position].to_vec();
                self.start += position + 1;
                return Ok(bytes);
            }
            if self.available().len() > limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "handshake message too long"));
            }
            self.fill().await?;
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.connection.write_all(bytes).await?;
        self.connection.flush().await
    }
}
