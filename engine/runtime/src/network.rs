//! Accepting client connections on every shard.
//!
//! Each shard binds its own listener on the same address (SO_REUSEPORT), so
//! the kernel spreads connections over the cores, and a connection lives on
//! the core that accepted it for its whole life: that core coordinates its
//! queries. Handlers see a [`Connection`], never glommio.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::bus;
use crate::engine::Engine;
use crate::error::EngineError;

/// A client connection, on the shard that accepted it.
pub struct Connection {
    stream: TcpStream,
    shard: usize,
}

impl Connection {
    /// Reads some bytes; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buffer).await
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }

    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// The shard this connection lives on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Separate halves, so one task can read queries while others write
    /// answers. Both stay on this shard.
    pub fn split(self) -> (ConnectionReader, ConnectionWriter) {
        let (reader, writer) = futures_lite::io::split(self.stream);
        (
            ConnectionReader { half: reader },
            ConnectionWriter { half: writer },
        )
    }
}

pub struct ConnectionReader {
    half: futures_lite::io::ReadHalf<TcpStream>,
}

impl ConnectionReader {
    /// Reads some bytes; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.half.read(buffer).await
    }
}

pub struct ConnectionWriter {
    half: futures_lite::io::WriteHalf<TcpStream>,
}

impl ConnectionWriter {
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.half.write_all(bytes).await?;
        self.half.flush().await
    }
}

/// Runs `future` as a task of the current shard (call from a shard only,
/// e.g. from a connection handler).
pub fn spawn_local(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// Waits `duration` without holding up the shard (on a shard thread only).
pub async fn sleep(duration: std::time::Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs one connection to its end on the accepting shard.
pub type ConnectionHandler =
    Arc<dyn Fn(Connection, Engine) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

impl Engine {
    /// Closes every listening socket: connections already accepted go on,
    /// new ones are refused. The first step of a clean shutdown.
    pub async fn stop_listening(&self) -> Result<(), EngineError> {
        for shard in 0..self.shards() {
            bus::call(shard, self.shard_inbox(shard), |state| async move {
                for listener in state.listeners.borrow_mut().drain(..) {
                    listener.cancel();
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Listens on `address` on every shard; each accepted connection is run
    /// by `handler` as a task of the shard that accepted it. Returns, once
    /// every shard is bound, the address bound: with port 0 the first shard
    /// takes any free port and the others share it.
    pub async fn listen(
        &self,
        address: SocketAddr,
        handler: ConnectionHandler,
    ) -> Result<SocketAddr, EngineError> {
        let mut address = claim_port(address)
            .map_err(|error| EngineError::Listen(format!("cannot listen on {address}: {error}")))?;
        for shard in 0..self.shards() {
            let (engine, handler) = (self.clone(), handler.clone());
            let bound = bus::call(shard, self.shard_inbox(shard), move |state| async move {
                let listener = TcpListener::bind(address)
                    .map_err(|error| format!("cannot listen on {address}: {error}"))?;
                let bound = listener
                    .local_addr()
                    .map_err(|error| format!("cannot listen on {address}: {error}"))?;
                let shard = state.id;
                let accepting = glommio::spawn_local(async move {
                    loop {
                        match listener.accept().await {
                            Ok(stream) => {
                                let _ = stream.set_nodelay(true);
                                let connection = Connection { stream, shard };
                                glommio::spawn_local(handler(connection, engine.clone())).detach();
                            }
                            Err(error) => {
                                tracing::warn!(shard, %error, "accept failed");
                                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                            }
                        }
                    }
                })
                .detach();
                state.listeners.borrow_mut().push(accepting);
                Ok::<SocketAddr, String>(bound)
            })
            .await?;
            address = bound.map_err(EngineError::Listen)?;
        }
        Ok(address)
    }
}

/// Checks that no other server listens on `address` and picks the port
/// when asked for any.
///
/// Every shard's listener shares the port (SO_REUSEPORT), which would also
/// let a second server of the same user on the same port take half the
/// connections silently. A plain bind fails when anyone listens there, but
/// also when connections of a previous run of this server (killed, say) are
/// still closing on the port; those the shared binds may reuse, and what
/// tells them apart is whether anyone answers a connect.
fn claim_port(address: SocketAddr) -> std::io::Result<SocketAddr> {
    use std::io::{Error, ErrorKind};
    match std::net::TcpListener::bind(address) {
        Ok(probe) => probe.local_addr(),
        Err(error) if error.kind() == ErrorKind::AddrInUse => {
            let mut target = address;
            if target.ip().is_unspecified() {
                target.set_ip(match address {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            match std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(1)) {
                Ok(_) => Err(Error::new(
                    ErrorKind::AddrInUse,
                    "another server is listening on this port",
                )),
                Err(_) => Ok(address),
            }
        }
        Err(error) => Err(error),
    }
}
