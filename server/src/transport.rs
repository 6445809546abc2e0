//! Buffered reading over a client connection.
#![allow(async_fn_in_trait)] // Connections live on one shard; nothing here is Send.

use std::io;

use photondb_runtime::network::{Connection, ConnectionReader, ConnectionWriter};

/// Something bytes can be read from: a whole connection during the
/// handshake, its read half afterwards.
pub trait ReadSome {
    async fn read_some(&mut self, buffer: &mut [u8]) -> io::Result<usize>;
}

impl ReadSome for Connection {
    async fn read_some(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read(buffer).await
    }
}

impl ReadSome for ConnectionReader {
    async fn read_some(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read(buffer).await
    }
}

pub struct Transport<R: ReadSome = Connection> {
    connection: R,
    buffer: Vec<u8>,
    /// Bytes of `buffer` before this were consumed.
    start: usize,
}

impl Transport<Connection> {
    pub fn new(connection: Connection) -> Self {
        Transport {
            connection,
            buffer: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.connection.write_all(bytes).await?;
        self.connection.flush().await
    }

    /// After the handshake: a buffered reader (keeping any bytes already
    /// read) and a writer.
    pub fn split(self) -> (Transport<ConnectionReader>, ConnectionWriter) {
        let (reader, writer) = self.connection.split();
        (
            Transport {
                connection: reader,
                buffer: self.buffer,
                start: self.start,
            },
            writer,
        )
    }
}

impl<R: ReadSome> Transport<R> {
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
        let count = self.connection.read_some(&mut chunk).await?;
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
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
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "handshake message too long",
                ));
            }
            self.fill().await?;
        }
    }
}
