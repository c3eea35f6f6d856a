//! [`TcpStream`]: an nginx cosocket seen from Rust, with the async I/O
//! traits of tokio and hyper, so runtime-agnostic client crates run on it.

use super::task::{Arg, Io, OpKind, Reply, Request, current};
use crate::error::{Error, ErrorKind, Result};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// The timeout of each socket operation unless set otherwise: nginx's
/// default `lua_socket_*_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes are gathered up to this size before one `send`.
const WRITE_BUFFER: usize = 64 * 1024;

/// How to connect: timeout and connection pool.
///
/// Kept by a client for its connections, it also remembers the last peer
/// it connected to, so connecting there again costs no allocation.
#[derive(Clone, Debug)]
pub struct Connect {
    timeout: Duration,
    pool: Option<Rc<str>>,
    last: std::cell::RefCell<Option<Peer>>,
}

/// A peer as the operations need it: the host as handed to nginx and
/// `host:port` for messages.
#[derive(Clone, Debug)]
struct Peer {
    host: Rc<str>,
    port: u16,
    name: Rc<str>,
}

impl Default for Connect {
    fn default() -> Self {
        Connect {
            timeout: DEFAULT_TIMEOUT,
            pool: None,
            last: std::cell::RefCell::new(None),
        }
    }
}

impl Connect {
    /// Default options: 60 s, nginx's default pool (`host:port`).
    pub fn new() -> Connect {
        Connect::default()
    }

    /// The connect timeout, and every later operation's until
    /// [`TcpStream::set_timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Connect {
        self.timeout = timeout;
        self
    }

    /// The name of the connection pool to take a kept-alive connection
    /// from (and to give it back to, [`TcpStream::keepalive`]); pools
    /// default to `host:port`. Use one name per kind of connection
    /// (e.g. with TLS parameters, or a Redis database) so a connection set
    /// up one way is not reused another way.
    pub fn pool(mut self, name: impl Into<String>) -> Connect {
        self.pool = Some(Rc::from(name.into()));
        self
    }

    /// `host:port` as shared strings, made once per peer.
    fn peer(&self, host: &str, port: u16) -> Peer {
        let mut last = self.last.borrow_mut();
        if let Some(peer) = last.as_ref()
            && peer.port == port
            && &*peer.host == host
        {
            return peer.clone();
        }
        // host:port without the formatting machinery.
        let mut name = Vec::with_capacity(host.len() + 6);
        name.extend_from_slice(host.as_bytes());
        name.push(b':');
        super::push_decimal(&mut name, u64::from(port));
        let peer = Peer {
            host: Rc::from(host),
            port,
            name: Rc::from(String::from_utf8(name).unwrap_or_default()), // host is UTF-8
        };
        *last = Some(peer.clone());
        peer
    }
}

/// A TCP connection made by nginx (`ngx.socket.tcp`) for the task of an
/// async phase: every wait is nginx's, the worker serves other requests
/// meanwhile.
///
/// Implements [`tokio::io::AsyncRead`]/[`AsyncWrite`](tokio::io::AsyncWrite)
/// and [`hyper::rt::Read`]/[`Write`](hyper::rt::Write). Writes are gathered
/// and sent on flush (or before the next read). Dropping it closes the
/// connection; [`TcpStream::keepalive`] gives it back to nginx's pool.
pub struct TcpStream {
    io: Rc<Io>,
    id: u32,
    peer: Rc<str>,
    reused: u32,
    timeout: Duration,
    read_op: Option<u64>,
    write_op: Option<u64>,
    write_buffer: Vec<u8>,
    released: bool,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("peer", &self.peer)
            .field("reused", &self.reused)
            .finish()
    }
}

fn millis(duration: Duration) -> Arg {
    // At least 1 ms: 0 means "no timeout" to nginx.
    Arg::Int(duration.as_millis().clamp(1, i64::MAX as u128) as i64)
}

/// The error of a cosocket operation, naming the peer.
fn peer_error(peer: &str, what: &str, message: &str) -> io::Error {
    let kind = match message {
        "timeout" => io::ErrorKind::TimedOut,
        "closed" => io::ErrorKind::ConnectionReset,
        m if m.contains("refused") => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    // nginx says "timeout"; say it as `io::timeout` does.
    let message = if message == "timeout" {
        "timed out"
    } else {
        message
    };
    io::Error::new(kind, format!("{what} {peer}: {message}"))
}

fn into_error(error: io::Error) -> Error {
    let kind = if error.kind() == io::ErrorKind::TimedOut {
        ErrorKind::Timeout
    } else {
        ErrorKind::Io
    };
    Error::new(kind, error.to_string())
}

impl TcpStream {
    /// Connects to `host:port` with default options.
    ///
    /// # Errors
    /// Outside an async phase; refused, unreachable, timed out, or a name
    /// nginx cannot resolve (Kong resolves with its DNS client; a plain
    /// nginx needs a `resolver`): the message names `host:port`.
    pub async fn connect(host: &str, port: u16) -> Result<TcpStream> {
        TcpStream::connect_with(host, port, &Connect::default()).await
    }

    /// Connects to `host:port` with `options`.
    ///
    /// # Errors
    /// As [`TcpStream::connect`].
    pub async fn connect_with(host: &str, port: u16, options: &Connect) -> Result<TcpStream> {
        let io = current()?;
        let Peer {
            host, name: peer, ..
        } = options.peer(host, port);
        let Some(limit) = io.time_left(options.timeout) else {
            return Err(into_error(peer_error(&peer, "connect to", "timeout")));
        };
        let id = io.socket_id();
        let request = Request {
            kind: OpKind::Connect,
            socket: id,
            args: [
                Arg::Text(host),
                Arg::Int(i64::from(port)),
                millis(limit),
                options.pool.clone().map_or(Arg::Nil, Arg::Text),
            ],
        };
        let reply = super::task::Op::new(io.clone(), request).await;
        let reused = match reply {
            Ok(Reply::Int(n)) => u32::try_from(n).unwrap_or(0),
            Ok(_) => 0,
            Err(message) => return Err(into_error(peer_error(&peer, "connect to", &message))),
        };
        Ok(TcpStream {
            io,
            id,
            peer,
            reused,
            timeout: options.timeout,
            read_op: None,
            write_op: None,
            write_buffer: Vec::new(),
            released: false,
        })
    }

    /// `host:port`, as connected to.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// How many times this connection was taken from the pool before (0:
    /// new). A reused connection has done its TLS handshake and any
    /// authentication already.
    pub fn reused_times(&self) -> u32 {
        self.reused
    }

    /// The timeout of each later operation (send, receive, handshake).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// TLS over this connection, by nginx (`sslhandshake`): `server_name`
    /// for SNI and certificate name checks; `verify` checks the peer's
    /// certificate against nginx's `lua_ssl_trusted_certificate` (Kong's
    /// `lua_ssl_trusted_certificate` setting). Skipped on a reused
    /// connection, which is TLS already.
    ///
    /// # Errors
    /// The handshake failed or the certificate was refused.
    pub async fn tls_handshake(&mut self, server_name: Option<&str>, verify: bool) -> Result<()> {
        if self.reused > 0 {
            return Ok(());
        }
        let Some(limit) = self.io.time_left(self.timeout) else {
            return Err(into_error(peer_error(&self.peer, "TLS with", "timeout")));
        };
        let request = Request {
            kind: OpKind::Tls,
            socket: self.id,
            args: [
                server_name.map_or(Arg::Nil, |name| Arg::Bytes(name.as_bytes().to_vec())),
                Arg::Bool(verify),
                millis(limit),
                Arg::Nil,
            ],
        };
        match super::task::Op::new(self.io.clone(), request).await {
            Ok(_) => Ok(()),
            Err(message) => Err(into_error(peer_error(&self.peer, "TLS with", &message))),
        }
    }

    /// Sends `data` (and anything gathered before) now.
    ///
    /// # Errors
    /// The connection failed or timed out.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        self.write_buffer.extend_from_slice(data);
        std::future::poll_fn(|_| self.poll_send_buffer())
            .await
            .map_err(into_error)
    }

    /// Queues `data` to be sent with the next [`TcpStream::receive`] (in
    /// the same round trip to nginx, for request/response protocols) or
    /// [`TcpStream::send`].
    pub fn queue(&mut self, data: &[u8]) {
        self.write_buffer.extend_from_slice(data);
    }

    /// Like [`TcpStream::queue`], with `encode` writing straight into the
    /// queue (protocol encoders need no buffer of their own).
    pub fn queue_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.write_buffer);
    }

    /// Receives what arrives next, at most `max` bytes; empty at the end of
    /// the stream. Queued data is sent first.
    ///
    /// # Errors
    /// The connection failed or timed out.
    pub async fn receive(&mut self, max: usize) -> Result<Vec<u8>> {
        std::future::poll_fn(|_| self.poll_receive(max))
            .await
            .map_err(into_error)
    }

    /// Gives the connection back to nginx's pool (`setkeepalive`), to be
    /// reused by a later [`TcpStream::connect_with`] to the same pool, in
    /// this worker. Only for a connection whose last exchange was read
    /// completely.
    pub fn keepalive(mut self, idle: Duration, pool_size: u32) {
        self.released = true;
        self.cancel_waiting();
        self.io.release(Request {
            kind: OpKind::Keepalive,
            socket: self.id,
            args: [
                millis(idle),
                Arg::Int(i64::from(pool_size.max(1))),
                Arg::Nil,
                Arg::Nil,
            ],
        });
    }

    fn poll_send_buffer(&mut self) -> Poll<io::Result<()>> {
        loop {
            if let Some(id) = self.write_op {
                let reply = match self.io.take_reply(id) {
                    Some(reply) => reply,
                    None => return Poll::Pending,
                };
                self.write_op = None;
                if let Err(message) = reply {
                    return Poll::Ready(Err(peer_error(&self.peer, "send to", &message)));
                }
            }
            if self.write_buffer.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(limit) = self.io.time_left(self.timeout) else {
                return Poll::Ready(Err(peer_error(&self.peer, "send to", "timeout")));
            };
            let data = std::mem::take(&mut self.write_buffer);
            self.write_op = Some(self.io.submit(Request {
                kind: OpKind::Send,
                socket: self.id,
                args: [Arg::Bytes(data), Arg::Nil, millis(limit), Arg::Nil],
            }));
        }
    }

    fn poll_receive(&mut self, max: usize) -> Poll<io::Result<Vec<u8>>> {
        // What was written is sent before waiting for the answer to it:
        // in the same operation when nothing else is under way.
        if self.read_op.is_none() && self.write_op.is_none() && !self.write_buffer.is_empty() {
            let Some(limit) = self.io.time_left(self.timeout) else {
                return Poll::Ready(Err(peer_error(&self.peer, "send to", "timeout")));
            };
            let data = std::mem::take(&mut self.write_buffer);
            self.read_op = Some(self.io.submit(Request {
                kind: OpKind::SendReceive,
                socket: self.id,
                args: [
                    Arg::Bytes(data),
                    Arg::Int(max.clamp(1, 1 << 20) as i64),
                    millis(limit),
                    Arg::Nil,
                ],
            }));
            return Poll::Pending;
        }
        ready!(self.poll_send_buffer())?;
        if let Some(id) = self.read_op {
            let Some(reply) = self.io.take_reply(id) else {
                return Poll::Pending;
            };
            self.read_op = None;
            return Poll::Ready(match reply {
                Ok(Reply::Bytes(data)) => Ok(data),
                Ok(_) => Ok(Vec::new()),
                // The peer closed: the end of the stream.
                Err(message) if message == "closed" => Ok(Vec::new()),
                Err(message) => Err(peer_error(&self.peer, "receive from", &message)),
            });
        }
        let Some(limit) = self.io.time_left(self.timeout) else {
            return Poll::Ready(Err(peer_error(&self.peer, "receive from", "timeout")));
        };
        self.read_op = Some(self.io.submit(Request {
            kind: OpKind::Receive,
            socket: self.id,
            args: [
                Arg::Int(max.clamp(1, 1 << 20) as i64),
                Arg::Nil,
                millis(limit),
                Arg::Nil,
            ],
        }));
        Poll::Pending
    }

    /// Withdraws the operations of this socket not handed out yet.
    fn cancel_waiting(&mut self) {
        if let Some(id) = self.read_op.take() {
            self.io.cancel(id);
        }
        if let Some(id) = self.write_op.take() {
            self.io.cancel(id);
        }
    }

    /// Withdraws a read this stream asked for that nginx has not started
    /// yet (`true` if there was one). For protocol drivers that poll for
    /// the next message ahead of time (tokio-postgres's connection, hyper's
    /// idle check): such a read, left queued, would be performed before
    /// whatever the task awaits next and wait for bytes that never come.
    /// The reader asks again when it is polled again.
    pub fn withdraw_read(&mut self) -> bool {
        match self.read_op {
            Some(id) if self.io.cancel(id) => {
                self.read_op = None;
                true
            }
            _ => false,
        }
    }

    fn poll_write_buffered(&mut self, data: &[u8]) -> Poll<io::Result<usize>> {
        // A read asked for before there was anything to send would be
        // performed first and wait for an answer to a request not sent yet.
        self.withdraw_read();
        if self.write_buffer.len() >= WRITE_BUFFER {
            ready!(self.poll_send_buffer())?;
        }
        self.write_buffer.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if !self.released {
            self.cancel_waiting();
            self.io.release(Request {
                kind: OpKind::Close,
                socket: self.id,
                args: [Arg::Nil, Arg::Nil, Arg::Nil, Arg::Nil],
            });
        }
    }
}

impl tokio::io::AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let data = ready!(this.poll_receive(buf.remaining()))?;
        buf.put_slice(&data);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_buffered(data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buffer()
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buffer()
    }
}

impl hyper::rt::Read for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let data = ready!(this.poll_receive(buf.remaining()))?;
        buf.put_slice(&data);
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_buffered(data)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buffer()
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buffer()
    }
}
