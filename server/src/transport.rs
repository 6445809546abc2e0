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

/// What a transport reads into at once; grows only for a frame larger than
/// this.
const BUFFER_BYTES: usize = 64 * 1024;

pub struct Transport<R: ReadSome = Connection> {
    connection: R,
    /// Allocated (and zeroed) once; reads land in `buffer[end..]` directly.
    buffer: Vec<u8>,
    /// Bytes of `buffer` before this were consumed.
    start: usize,
    /// Bytes of `buffer` from this on were not read yet.
    end: usize,
}

impl Transport<Connection> {
    pub fn new(connection: Connection) -> Self {
        Transport {
            connection,
            buffer: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
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
                end: self.end,
            },
            writer,
        )
    }
}

impl<R: ReadSome> Transport<R> {
    fn available(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    /// Reads more bytes (at least `wanted` can then fit); `UnexpectedEof`
    /// when the peer has closed.
    async fn fill(&mut self, wanted: usize) -> io::Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && self.buffer.len() - self.start < wanted.max(BUFFER_BYTES / 2) {
            // Move what is left to the front rather than growing.
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buffer.len() - self.start < wanted {
            self.buffer.resize(self.start + wanted, 0);
        }
        let count = self
            .connection
            .read_some(&mut self.buffer[self.end..])
            .await?;
        if count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.end += count;
        Ok(())
    }

    pub async fn read_exact(&mut self, count: usize) -> io::Result<Vec<u8>> {
        while self.available().len() < count {
            self.fill(count).await?;
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
            self.fill(self.available().len() + 1).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that hands out its bytes in the chunk sizes it is given.
    struct Chunked {
        bytes: Vec<u8>,
        chunks: Vec<usize>,
        position: usize,
    }

    impl ReadSome for Chunked {
        async fn read_some(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            assert!(
                !buffer.is_empty(),
                "a read with no room would look like EOF"
            );
            let chunk = self.chunks.pop().unwrap_or(usize::MAX);
            let count = chunk
                .min(buffer.len())
                .min(self.bytes.len() - self.position);
            buffer[..count].copy_from_slice(&self.bytes[self.position..self.position + count]);
            self.position += count;
            Ok(count)
        }
    }

    fn transport(peer: Chunked) -> Transport<Chunked> {
        Transport {
            connection: peer,
            buffer: vec![0; BUFFER_BYTES],
            start: 0,
            end: 0,
        }
    }

    /// Frames of every size up to several buffers, read back whole and in
    /// order whatever sizes the peer's reads come in.
    #[test]
    fn frames_come_back_whole_across_any_chunking() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..20 {
            let mut frames = Vec::new();
            let mut bytes = Vec::new();
            for _ in 0..40 {
                let length = match next(4) {
                    0 => next(16),
                    1 => next(2_000),
                    2 => BUFFER_BYTES / 2 + next(BUFFER_BYTES),
                    _ => next(3 * BUFFER_BYTES),
                };
                let frame: Vec<u8> = (0..length).map(|_| next(256) as u8).collect();
                bytes.extend_from_slice(&frame);
                frames.push(frame);
            }
            let chunks = (0..1_000)
                .map(|_| match next(3) {
                    0 => 1 + next(8),
                    1 => 1 + next(5_000),
                    _ => 1 + next(2 * BUFFER_BYTES),
                })
                .collect();
            let mut transport = transport(Chunked {
                bytes,
                chunks,
                position: 0,
            });
            futures_lite::future::block_on(async {
                for frame in &frames {
                    let read = transport.read_exact(frame.len()).await.unwrap();
                    assert_eq!(&read, frame);
                }
                let end = transport.read_exact(1).await.unwrap_err();
                assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
            });
        }
    }

    #[test]
    fn a_message_up_to_nul_and_its_limit() {
        let mut bytes = b"hello\0".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 100));
        bytes.push(0);
        let mut transport = transport(Chunked {
            bytes,
            chunks: vec![3; 100],
            position: 0,
        });
        futures_lite::future::block_on(async {
            assert_eq!(transport.read_until_nul(10).await.unwrap(), b"hello");
            let error = transport.read_until_nul(10).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        });
    }
}
