//! A Redis client for async phases: RESP2 (requests written directly,
//! replies decoded by the `redis-protocol` codec) over an nginx cosocket
//! ([`crate::io::TcpStream`]), connections kept alive in nginx's pool
//! (authenticated and on their database already).
//!
//! ```no_run
//! # async fn example() -> kong_rs::Result<()> {
//! use kong_rs::redis::{Client, Config};
//! // Once, in the plugin's constructor:
//! let client = Client::new(Config::new("127.0.0.1", 6379));
//! // Per request, in an async phase:
//! let mut redis = client.connect().await?;
//! // One round trip for both commands.
//! let replies = redis
//!     .pipeline(&[&["INCR", "hits"][..], &["EXPIRE", "hits", "60"][..]])
//!     .await?;
//! let hits = replies[0].as_int();
//! redis.release();
//! # let _ = hits;
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::io::{Connect, TcpStream, push_decimal};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Config {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user name (Redis 6+), with `password`.
    pub username: Option<String>,
    /// Password (`AUTH`).
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub database: u32,
    /// Each operation's timeout (connect, send, receive).
    pub timeout: Duration,
    /// TLS (by nginx).
    pub ssl: bool,
    /// Verify the server's certificate.
    pub ssl_verify: bool,
    /// SNI and certificate name; the host when `None`.
    pub server_name: Option<String>,
    /// Idle connections kept per worker.
    pub pool_size: u32,
    /// How long an idle connection is kept.
    pub keepalive: Duration,
}

impl Config {
    /// Defaults: database 0, no authentication, 2 s timeout, no TLS, pool
    /// of 32 connections kept 60 s.
    pub fn new(host: impl Into<String>, port: u16) -> Config {
        Config {
            host: host.into(),
            port,
            username: None,
            password: None,
            database: 0,
            timeout: Duration::from_secs(2),
            ssl: false,
            ssl_verify: false,
            server_name: None,
            pool_size: 32,
            keepalive: Duration::from_secs(60),
        }
    }

    /// The pool of connections set up this way: a connection authenticated
    /// as one user or on one database is never handed to another config.
    fn pool(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &self.username,
            &self.password,
            self.ssl,
            self.ssl_verify,
            &self.server_name,
        )
            .hash(&mut hasher);
        format!(
            "kong-rs:redis:{}:{}:{}:{:x}",
            self.host,
            self.port,
            self.database,
            hasher.finish()
        )
    }
}

/// A [`Config`] made ready for connecting many times: the pool name and
/// the peer's name are worked out once, not per request. Build one per
/// plugin instance (in the constructor) and [`Client::connect`] per
/// request.
#[derive(Clone, Debug)]
pub struct Client {
    config: Config,
    // The connect options: timeout and this config's pool.
    connect: Connect,
    peer: Rc<str>,
}

impl Client {
    /// A client for `config`.
    pub fn new(config: Config) -> Client {
        Client {
            connect: Connect::new().timeout(config.timeout).pool(config.pool()),
            peer: format!("{}:{}", config.host, config.port).into(),
            config,
        }
    }

    /// The configuration this client connects with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A connection from nginx's pool, or a new one: connected, on TLS when
    /// `ssl`, authenticated (`AUTH`) and on `database` (`SELECT`).
    ///
    /// # Errors
    /// Outside an async phase; the connection, the handshake, `AUTH` or
    /// `SELECT` failed (the message names the server).
    pub async fn connect(&self) -> Result<Connection> {
        let config = &self.config;
        let stream = TcpStream::connect_with(&config.host, config.port, &self.connect).await?;
        let fresh = stream.reused_times() == 0;
        let mut connection = Connection {
            peer: self.peer.clone(),
            stream,
            buffer: Vec::new(),
            keepalive: config.keepalive,
            pool_size: config.pool_size,
        };
        if fresh {
            if config.ssl {
                let name = config.server_name.as_deref().unwrap_or(&config.host);
                connection
                    .stream
                    .tls_handshake(Some(name), config.ssl_verify)
                    .await?;
            }
            if let Some(password) = &config.password {
                match &config.username {
                    Some(user) => connection.command(&["AUTH", user, password]).await?,
                    None => connection.command(&["AUTH", password]).await?,
                };
            }
            if config.database != 0 {
                let database = config.database.to_string();
                connection.command(&["SELECT", &database]).await?;
            }
        }
        Ok(connection)
    }
}

/// A reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Null (a missing key).
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk string.
    Data(Vec<u8>),
    /// A status (`OK`, `PONG`).
    Status(String),
    /// An error reply (in a pipeline; [`Connection::command`] makes it an `Err`).
    Error(String),
    /// An array.
    Array(Vec<Value>),
}

impl Value {
    /// The integer of an `Int`, or of `Data` holding a decimal integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Data(data) => std::str::from_utf8(data).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of `Data` or `Status`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Data(data) => Some(data),
            Value::Status(status) => Some(status.as_bytes()),
            _ => None,
        }
    }

    fn from_frame(frame: OwnedFrame) -> Value {
        match frame {
            OwnedFrame::SimpleString(s) => Value::Status(
                String::from_utf8(s)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            OwnedFrame::Error(e) => Value::Error(e),
            OwnedFrame::Integer(n) => Value::Int(n),
            OwnedFrame::BulkString(b) => Value::Data(b),
            OwnedFrame::Array(items) => {
                Value::Array(items.into_iter().map(Value::from_frame).collect())
            }
            OwnedFrame::Null => Value::Nil,
        }
    }
}

/// A connection to Redis.
pub struct Connection {
    stream: TcpStream,
    // Bytes received and not decoded yet.
    buffer: Vec<u8>,
    keepalive: Duration,
    pool_size: u32,
    peer: Rc<str>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connection {
    /// Connects (or takes a kept-alive connection from the pool); a new
    /// connection does its TLS handshake, `AUTH` and `SELECT` first.
    ///
    /// # Errors
    /// Outside an async phase; the connection failed or timed out; Redis
    /// refused `AUTH` or `SELECT`: the message names `host:port`.
    pub async fn connect(config: &Config) -> Result<Connection> {
        Client::new(config.clone()).connect().await
    }

    /// Sends one command and reads its reply.
    ///
    /// # Errors
    /// I/O failures, and an error reply (`ERR ...`, `WRONGTYPE ...`).
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        let mut replies = self.pipeline(&[args]).await?;
        match replies.pop() {
            Some(Value::Error(message)) => {
                Err(Error::msg(format!("redis {}: {message}", self.peer)))
            }
            Some(value) => Ok(value),
            None => Err(Error::msg(format!("redis {}: no reply", self.peer))),
        }
    }

    /// Sends several commands in one write and reads their replies, in
    /// order: one round trip. Error replies are [`Value::Error`] in place.
    ///
    /// # Errors
    /// I/O failures, or a reply that is not RESP2.
    pub async fn pipeline<A: AsRef<[u8]>, C: AsRef<[A]>>(
        &mut self,
        commands: &[C],
    ) -> Result<Vec<Value>> {
        // Sent together with the first receive: one round trip to nginx.
        self.stream.queue_with(|out| {
            // One allocation for the whole pipeline.
            out.reserve(commands.iter().map(|c| encoded_bound(c.as_ref())).sum());
            for command in commands {
                encode_command(out, command.as_ref());
            }
        });
        let mut replies = Vec::with_capacity(commands.len());
        let mut start = 0;
        while replies.len() < commands.len() {
            match decode(&self.buffer[start..]) {
                Ok(Some((frame, used))) => {
                    replies.push(Value::from_frame(frame));
                    start += used;
                }
                Ok(None) => {
                    self.buffer.drain(..start);
                    start = 0;
                    let data = self.stream.receive(64 * 1024).await?;
                    if data.is_empty() {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("redis {}: connection closed", self.peer),
                        ));
                    }
                    if self.buffer.is_empty() {
                        self.buffer = data;
                    } else {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(e) => {
                    return Err(Error::msg(format!(
                        "redis {}: not a RESP2 reply: {e}",
                        self.peer
                    )));
                }
            }
        }
        self.buffer.drain(..start);
        Ok(replies)
    }

    /// Gives the connection back to the pool (after every reply was read).
    pub fn release(self) {
        if self.buffer.is_empty() {
            self.stream.keepalive(self.keepalive, self.pool_size);
        }
    }
}

/// Appends one command as RESP2 (an array of bulk strings: what Redis
/// expects of clients) to `out`, without building frames first.
/// The most bytes `args` take encoded: each argument takes at most 25
/// bytes of framing.
fn encoded_bound<A: AsRef<[u8]>>(args: &[A]) -> usize {
    16 + args.iter().map(|a| a.as_ref().len() + 25).sum::<usize>()
}

fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.reserve(encoded_bound(args));
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        push_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_pipelines_auth_and_errors() {
        let server = crate::test_support::RedisServer::start(&["--requirepass", "sesame"]);
        let port = server.port;
        let result = crate::io::block_on(async move {
            let mut config = Config::new("127.0.0.1", port);
            config.password = Some("sesame".into());
            config.database = 2;
            let mut redis = Connection::connect(&config).await?;
            assert_eq!(
                redis.command(&["SET", "k", "v\r\n\0"]).await?,
                Value::Status("OK".into())
            );
            assert_eq!(
                redis.command(&["GET", "k"]).await?,
                Value::Data(b"v\r\n\0".to_vec())
            );
            assert_eq!(redis.command(&["GET", "missing"]).await?, Value::Nil);
            let replies = redis
                .pipeline(&[
                    &["INCR", "n"][..],
                    &["INCR", "n"][..],
                    &["EXPIRE", "n", "60"][..],
                ])
                .await?;
            assert_eq!(replies, vec![Value::Int(1), Value::Int(2), Value::Int(1)]);
            let err = redis.command(&["INCR", "k"]).await.unwrap_err();
            assert!(
                err.to_string().contains(&format!("127.0.0.1:{port}")),
                "{err}"
            );
            let mut wrong = Config::new("127.0.0.1", port);
            wrong.password = Some("nope".into());
            let refused = Connection::connect(&wrong).await.unwrap_err();
            assert!(refused.to_string().contains("WRONGPASS"), "{refused}");
            redis.release();
            Ok::<_, Error>(())
        });
        drop(server);
        result.unwrap().unwrap();
    }
}
