//! A PostgreSQL client for async phases: `tokio-postgres`'s protocol
//! (`connect_raw`, no runtime) over an nginx cosocket
//! ([`crate::io::TcpStream`]), password authentication (SCRAM-SHA-256,
//! MD5, cleartext), parameters and rows in PostgreSQL's binary format.
//!
//! ```no_run
//! # async fn example() -> kong_rs::Result<()> {
//! use kong_rs::postgres::{Config, Connection};
//! let mut config = Config::new("127.0.0.1", 5432, "kong");
//! config.password = Some("secret".into());
//! config.database = Some("kong".into());
//! let mut db = Connection::connect(&config).await?;
//! let user = "alice";
//! let rows = db
//!     .query("SELECT id, quota FROM users WHERE name = $1", &[&user])
//!     .await?;
//! let quota = match rows.first() {
//!     Some(row) => row.int("quota")?,
//!     None => None,
//! };
//! db.close().await?;
//! # let _ = quota;
//! # Ok(())
//! # }
//! ```
//!
//! **One connection per [`Connection::connect`]**, closed when the
//! [`Connection`] is closed or dropped: connections are not kept alive in
//! nginx's pool. `tokio-postgres`'s connection owns the stream and has no
//! way to hand it back, and a pooled PostgreSQL session would also carry
//! its state (prepared statements, `SET`s, an open transaction) into the
//! next request. Put a pooler (PgBouncer) next to PostgreSQL when
//! connection setup (a TCP handshake and authentication, ~1-3 ms with
//! SCRAM) matters.
//!
//! No TLS: the stream is plain TCP (`NoTls`).
//!
//! Every wait is nginx's: a query in flight costs the worker nothing, it
//! serves other requests meanwhile. Each connection's [`Config::timeout`]
//! bounds the connect (with authentication) and each call; a call that
//! times out or fails on the wire closes the connection (its state is
//! unknown), later calls on it are errors. PostgreSQL notices the closed
//! connection only when it next writes to it: a statement still running
//! at the timeout runs to its end there (bound it on the server with
//! `statement_timeout` for the role or database).

use crate::error::{Error, ErrorKind, Result};
use crate::io::{Connect, TcpStream, timeout};
use std::cell::RefCell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::row::RowIndex;
use tokio_postgres::tls::{NoTls, NoTlsStream};
use tokio_postgres::types::{FromSql, ToSql, Type};

/// PostgreSQL's types and the conversion traits of parameters and columns
/// (`tokio-postgres`'s `types` module): [`ToSql`] is
/// implemented for the Rust types a parameter can be (`&str`, `i32`,
/// `i64`, `&[u8]`, `bool`, `f64`, `Option<T>` for NULL, ...), and
/// [`FromSql`] for what [`Row::get`] returns.
pub use tokio_postgres::types;

/// Where to connect, as whom, and the time limits.
#[derive(Clone)]
pub struct Config {
    /// Host name or address.
    pub host: String,
    /// Port (PostgreSQL's default is 5432).
    pub port: u16,
    /// The role to log in as.
    pub user: String,
    /// The password, when the server asks for one (`scram-sha-256`, `md5`
    /// or `password` in `pg_hba.conf`).
    pub password: Option<String>,
    /// The database; the user's name when `None` (PostgreSQL's default).
    pub database: Option<String>,
    /// `application_name` of the session, shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// The limit of the connect (TCP and authentication), and of each
    /// later call.
    pub timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("database", &self.database)
            .field("application_name", &self.application_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Config {
    /// Connect to `host:port` as `user`; no password, the user's database,
    /// application name `kong-rs`, 2 s timeout.
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Config {
        Config {
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            database: None,
            application_name: Some("kong-rs".into()),
            timeout: Duration::from_secs(2),
        }
    }

    /// A connection of ours in nginx's pool of a plain `host:port` would
    /// be wrong; nothing is ever put into this pool, so every connect is a
    /// new connection.
    fn pool(&self) -> String {
        format!("kong-rs:postgres:{}:{}", self.host, self.port)
    }
}

/// The stream `tokio-postgres` reads and writes, shared with
/// [`Connection`] so that a read it asked for after its last answer can be
/// withdrawn before the task awaits anything else.
struct SharedStream(Rc<RefCell<TcpStream>>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}

/// Withdraws a read `tokio-postgres` asked for and that is not performed
/// yet: after the last message of an answer its connection reads on,
/// waiting for the next one; left queued, that read would be performed
/// before whatever the task awaits next, and wait for bytes that never
/// come (see [`TcpStream::withdraw_read`]).
fn withdraw_read(stream: &Rc<RefCell<TcpStream>>, _cx: &mut Context<'_>) {
    stream.borrow_mut().withdraw_read();
}

type PgConnection = tokio_postgres::Connection<SharedStream, NoTlsStream>;

/// What a live connection holds: the client (requests), the connection
/// (the protocol, on the stream), and the stream itself.
struct Live {
    client: tokio_postgres::Client,
    connection: Pin<Box<PgConnection>>,
    stream: Rc<RefCell<TcpStream>>,
}

/// Why a call failed: an answer (the connection is fine) or the connection.
enum Failure {
    /// PostgreSQL refused the statement, a parameter or column did not
    /// convert: the connection is still usable.
    Answer(tokio_postgres::Error),
    /// The connection failed or ended.
    Connection(tokio_postgres::Error),
    /// The connection ended without an error of its own.
    Closed,
}

/// Polls `work` and the connection in this one task (there is no spawn):
/// the connection does the I/O, `work` waits for its answer.
async fn drive<T>(
    connection: &mut Pin<Box<PgConnection>>,
    stream: &Rc<RefCell<TcpStream>>,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    let mut work = pin!(work);
    let mut ended: Option<Result<(), tokio_postgres::Error>> = None;
    let result = poll_fn(|cx| {
        if ended.is_none()
            && let Poll::Ready(result) = connection.as_mut().poll(cx)
        {
            ended = Some(result);
        }
        match work.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            // Its answer will never come.
            Poll::Pending if ended.is_some() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match (result, ended) {
        (Some(Ok(value)), None) => {
            poll_fn(|cx| {
                withdraw_read(stream, cx);
                Poll::Ready(())
            })
            .await;
            Ok(value)
        }
        // The connection's error says more than "connection closed".
        (_, Some(Err(e))) => Err(Failure::Connection(e)),
        (Some(Err(e)), None) if e.as_db_error().is_some() || !e.is_closed() => {
            poll_fn(|cx| {
                withdraw_read(stream, cx);
                Poll::Ready(())
            })
            .await;
            Err(Failure::Answer(e))
        }
        (Some(Err(e)), None) => Err(Failure::Connection(e)),
        (None, _) | (_, Some(Ok(()))) => Err(Failure::Closed),
    }
}

/// `postgres host:port: ...`, with PostgreSQL's own message, severity
/// and SQLSTATE for an error it sent, and the causes' text otherwise.
fn pg_error(peer: &str, error: &tokio_postgres::Error) -> Error {
    if let Some(db) = error.as_db_error() {
        let mut message = format!(
            "postgres {peer}: {}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            message.push_str(&format!("; DETAIL: {detail}"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!("; HINT: {hint}"));
        }
        return Error::new(ErrorKind::Io, message);
    }
    let mut message = format!("postgres {peer}: {error}");
    let mut kind = ErrorKind::Io;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            kind = ErrorKind::Timeout;
        }
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    Error::new(kind, message)
}

/// A connection to PostgreSQL, for the async phase that made it.
pub struct Connection {
    live: Option<Live>,
    peer: Rc<str>,
    timeout: Duration,
    // Why the connection was closed, for the calls after.
    closed: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("open", &self.live.is_some())
            .finish()
    }
}

impl Connection {
    /// Connects and logs in (always a new connection, see the module's
    /// documentation), within [`Config::timeout`].
    ///
    /// # Errors
    /// Outside an async phase; the connection failed or timed out;
    /// PostgreSQL refused the login (a wrong password, an unknown role or
    /// database, `pg_hba.conf`): the message names `host:port` and has
    /// PostgreSQL's own message and SQLSTATE.
    pub async fn connect(config: &Config) -> Result<Connection> {
        let peer = format!("{}:{}", config.host, config.port);
        match timeout(config.timeout, Connection::open(config, &peer)).await {
            Ok(result) => result,
            Err(e) => Err(Error::new(
                e.kind(),
                format!("postgres {peer}: connecting: {e}"),
            )),
        }
    }

    async fn open(config: &Config, peer: &str) -> Result<Connection> {
        let options = Connect::new().timeout(config.timeout).pool(config.pool());
        let stream = TcpStream::connect_with(&config.host, config.port, &options)
            .await
            .map_err(|e| Error::new(e.kind(), format!("postgres {peer}: {}", e.message())))?;
        let stream = Rc::new(RefCell::new(stream));
        let mut pg = tokio_postgres::Config::new();
        pg.user(&config.user);
        if let Some(password) = &config.password {
            pg.password(password);
        }
        if let Some(database) = &config.database {
            pg.dbname(database);
        }
        if let Some(name) = &config.application_name {
            pg.application_name(name);
        }
        let (client, connection) = pg
            .connect_raw(SharedStream(stream.clone()), NoTls)
            .await
            .map_err(|e| pg_error(peer, &e))?;
        poll_fn(|cx| {
            withdraw_read(&stream, cx);
            Poll::Ready(())
        })
        .await;
        Ok(Connection {
            live: Some(Live {
                client,
                connection: Box::pin(connection),
                stream,
            }),
            peer: peer.into(),
            timeout: config.timeout,
            closed: None,
        })
    }

    /// `host:port`, as connected to.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Whether the connection is still usable: false after [`close`]
    /// failed, a timeout, or a failure on the wire.
    ///
    /// [`close`]: Connection::close
    pub fn is_open(&self) -> bool {
        self.live.is_some()
    }

    /// The limit of each later call (the connect's by default).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn live(&mut self) -> Result<&mut Live> {
        match &mut self.live {
            Some(live) => Ok(live),
            None => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "postgres {}: the connection is closed ({})",
                    self.peer,
                    self.closed.as_deref().unwrap_or("closed")
                ),
            )),
        }
    }

    /// Runs `work` on the client while driving the connection, within the
    /// timeout, and settles the outcome (see [`Connection::settle`]): the
    /// one path of `query`, `execute` and `batch_execute`.
    async fn call<T>(
        &mut self,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let limit = self.timeout;
        let Live {
            client,
            connection,
            stream,
        } = self.live()?;
        let outcome = timeout(limit, drive(connection, stream, work(client))).await;
        self.settle(outcome)
    }

    /// The outcome of a call: an error naming the peer; a connection that
    /// failed or timed out is closed.
    fn settle<T>(&mut self, outcome: Result<Result<T, Failure>>) -> Result<T> {
        let error = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Answer(e))) => return Err(pg_error(&self.peer, &e)),
            Ok(Err(Failure::Connection(e))) => pg_error(&self.peer, &e),
            Ok(Err(Failure::Closed)) => Error::new(
                ErrorKind::Io,
                format!("postgres {}: connection closed by the server", self.peer),
            ),
            Err(e) => Error::new(e.kind(), format!("postgres {}: {e}", self.peer)),
        };
        // Dropping it closes the socket: a statement may be half done.
        self.live = None;
        let prefix = format!("postgres {}: ", self.peer);
        let message = error.message();
        self.closed = Some(message.strip_prefix(&prefix).unwrap_or(message).to_string());
        Err(error)
    }

    /// Runs `sql` with `params` (`$1`, `$2`, ...) and returns its rows.
    ///
    /// # Errors
    /// PostgreSQL refused the statement or a parameter (its message and
    /// SQLSTATE; the connection stays usable); a parameter that does not
    /// convert to the column's type; the connection failed, closed or
    /// timed out (then it is closed): the message names `host:port`.
    pub async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let rows = self
            .call(async |client| client.query(sql, params).await)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Row {
                row,
                peer: self.peer.clone(),
            })
            .collect())
    }

    /// Runs `sql` with `params` and returns how many rows it changed
    /// (`INSERT`, `UPDATE`, `DELETE`; 0 for statements that change none).
    ///
    /// # Errors
    /// As [`Connection::query`].
    pub async fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.call(async |client| client.execute(sql, params).await)
            .await
    }

    /// Runs several statements separated by `;`, without parameters, in
    /// one round trip (PostgreSQL's simple query protocol: as one
    /// transaction unless they contain `BEGIN`/`COMMIT`).
    ///
    /// # Errors
    /// As [`Connection::query`]; the statements after a failed one are
    /// not run.
    pub async fn batch_execute(&mut self, sql: &str) -> Result<()> {
        self.call(async |client| client.batch_execute(sql).await)
            .await
    }

    /// Ends the session politely (PostgreSQL's `Terminate`) and closes the
    /// connection. Dropping a [`Connection`] closes it too, without the
    /// goodbye (the server logs an unexpected EOF).
    ///
    /// # Errors
    /// The goodbye could not be sent, or it timed out; the connection is
    /// closed all the same.
    pub async fn close(mut self) -> Result<()> {
        let Some(Live {
            client,
            mut connection,
            stream,
        }) = self.live.take()
        else {
            return Ok(());
        };
        // Without a client, the connection sends Terminate and finishes.
        drop(client);
        let finished = timeout(self.timeout, connection.as_mut()).await;
        drop(connection);
        drop(stream);
        match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(pg_error(&self.peer, &e)),
            Err(e) => Err(Error::new(
                e.kind(),
                format!("postgres {}: closing: {e}", self.peer),
            )),
        }
    }
}

/// The raw value of a column of `bytea` or a text type.
struct RawBytes<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawBytes<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawBytes(raw))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BYTEA
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
                | Type::JSON
                | Type::XML
        ) || ty.name() == "citext"
    }
}

/// Any value, only to tell NULL from the rest.
struct AnyValue;

impl<'a> FromSql<'a> for AnyValue {
    fn from_sql(
        _: &Type,
        _: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyValue)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A value of `smallint`, `integer` or `bigint`.
struct AnyInt(i64);

impl<'a> FromSql<'a> for AnyInt {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(AnyInt(match *ty {
            Type::INT2 => i64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => i64::from(i32::from_sql(ty, raw)?),
            _ => i64::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }
}

/// A row of a query's result. Columns are named by index (from 0) or by
/// name (`&str`); a NULL is `None`.
pub struct Row {
    row: tokio_postgres::Row,
    peer: Rc<str>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("columns", &self.columns())
            .finish()
    }
}

impl Row {
    /// How many columns.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// The columns' names, in order.
    pub fn columns(&self) -> Vec<&str> {
        self.row.columns().iter().map(|c| c.name()).collect()
    }

    /// The PostgreSQL type of column `index` (from 0), if it exists.
    pub fn column_type(&self, index: usize) -> Option<&Type> {
        self.row.columns().get(index).map(|c| c.type_())
    }

    /// Column `column` as any [`FromSql`] type: `i32` for `integer`,
    /// `String` or `&str` for text, `Vec<u8>` or `&[u8]` for `bytea`,
    /// `bool`, `f64`, ..., `Option<T>` where it may be NULL.
    ///
    /// # Errors
    /// No such column; its type does not convert to `T` (e.g. an
    /// `integer` as `i64`), or it is NULL and `T` is not an `Option`.
    pub fn get<'a, I, T>(&'a self, column: I) -> Result<T>
    where
        I: RowIndex + fmt::Display,
        T: FromSql<'a>,
    {
        let name = column.to_string();
        self.row.try_get(column).map_err(|e| {
            let mut message = format!("postgres {}: column {name}: {e}", self.peer);
            if let Some(cause) = std::error::Error::source(&e) {
                message.push_str(&format!(": {cause}"));
            }
            Error::msg(message)
        })
    }

    /// The bytes of a `bytea` or text column (any bytes: no UTF-8 check
    /// for `bytea`); `None` for NULL.
    ///
    /// # Errors
    /// No such column, or one of another type.
    pub fn bytes<I: RowIndex + fmt::Display>(&self, column: I) -> Result<Option<&[u8]>> {
        Ok(self.get::<_, Option<RawBytes>>(column)?.map(|raw| raw.0))
    }

    /// A text column (`text`, `varchar`, `char(n)`, `name`, ...); `None`
    /// for NULL.
    ///
    /// # Errors
    /// No such column, or one of another type.
    pub fn text<I: RowIndex + fmt::Display>(&self, column: I) -> Result<Option<&str>> {
        self.get(column)
    }

    /// An integer column of any width (`smallint`, `integer`, `bigint`);
    /// `None` for NULL.
    ///
    /// # Errors
    /// No such column, or one of another type.
    pub fn int<I: RowIndex + fmt::Display>(&self, column: I) -> Result<Option<i64>> {
        Ok(self.get::<_, Option<AnyInt>>(column)?.map(|n| n.0))
    }

    /// Whether a column is NULL.
    ///
    /// # Errors
    /// No such column.
    pub fn is_null<I: RowIndex + fmt::Display>(&self, column: I) -> Result<bool> {
        Ok(self.get::<_, Option<AnyValue>>(column)?.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    const PASSWORD: &str = "s3cret pass";

    /// Debian's PostgreSQL server binaries (`postgresql`, installed by
    /// scripts/setup), newest version first.
    fn pg_bin() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
            .collect();
        versions.sort();
        versions.pop().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin \
                 (initdb, postgres): scripts/setup installs them (Debian's `postgresql` package)"
            )
        })
    }

    /// The user PostgreSQL runs as: `postgres` when we are root (it
    /// refuses to run as root), else ourselves.
    fn run_as() -> Option<(u32, u32)> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or_else(|_| {
                    panic!("no `postgres` system user (PostgreSQL refuses to run as root): scripts/setup installs the `postgresql` package, which creates it")
                })
        };
        Some((id("-u"), id("-g")))
    }

    /// A PostgreSQL server of its own in a fresh directory, on a free
    /// 127.0.0.1 port, a password required over TCP (`scram-sha-256`,
    /// `md5` for the role `md5user`); stopped and removed on drop, also
    /// when the test fails.
    struct Server {
        dir: PathBuf,
        child: Option<Child>,
        port: u16,
    }

    impl Server {
        fn start() -> Server {
            let bin = pg_bin();
            let user = run_as();
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kong-rs-postgres-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            // The guard exists from here: whatever fails below, it cleans up.
            let mut server = Server {
                dir: dir.clone(),
                child: None,
                port: 0,
            };
            let command = |program: &Path| {
                let mut command = Command::new(program);
                if let Some((uid, gid)) = user {
                    command.uid(uid).gid(gid);
                }
                command.current_dir(&dir);
                command
            };
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
            }
            std::fs::write(dir.join("pwfile"), format!("{PASSWORD}\n")).expect("pwfile");
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(dir.join("pwfile"), Some(uid), Some(gid)).expect("chown");
            }
            let out = command(&bin.join("initdb"))
                .args([
                    "-D", "data", "-U", "kong", "--pwfile", "pwfile", "-E", "UTF8",
                ])
                .args([
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--no-sync",
                ])
                .output()
                .expect("run initdb");
            assert!(
                out.status.success(),
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // Written as root or as the owner: the file keeps its owner.
            std::fs::write(
                dir.join("data/pg_hba.conf"),
                "local all all trust\n\
                 host all md5user 127.0.0.1/32 md5\n\
                 host all all 127.0.0.1/32 scram-sha-256\n",
            )
            .expect("pg_hba.conf");
            server.port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = std::fs::File::create(dir.join("log")).expect("log");
            server.child = Some(
                command(&bin.join("postgres"))
                    .args(["-D", "data", "-p", &server.port.to_string(), "-k"])
                    .arg(&dir)
                    .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                    .args(["-c", "password_encryption=scram-sha-256"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("run postgres"),
            );
            let started = Instant::now();
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok()
                    && dir.join("data/postmaster.pid").exists()
                {
                    // Accepting TCP is not yet accepting logins: wait
                    // for the log line.
                    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                    if log.contains("ready to accept connections") {
                        return server;
                    }
                }
                if let Some(child) = server.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "postgres exited ({status}): {}",
                        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                    );
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "postgres did not start: {}",
                    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }

        fn config(&self) -> Config {
            let mut config = Config::new("127.0.0.1", self.port, "kong");
            config.password = Some(PASSWORD.into());
            config.database = Some("postgres".into());
            config.timeout = Duration::from_secs(5);
            config
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                // Fast shutdown; SIGKILL if it does not go.
                let pid = child.id() as libc::pid_t;
                // SAFETY: kill on our own child's pid.
                unsafe { libc::kill(pid, libc::SIGINT) };
                let asked = Instant::now();
                while !matches!(child.try_wait(), Ok(Some(_))) {
                    if asked.elapsed() > Duration::from_secs(10) {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn queries_nulls_bytea_errors_and_authentication() {
        let server = Server::start();
        let config = server.config();
        let port = server.port;
        let result = crate::io::block_on(async move {
            let mut db = Connection::connect(&config).await?;
            assert_eq!(db.peer(), format!("127.0.0.1:{port}"));

            // Parameters of several types, a NULL, typed and raw access.
            let name = "kong-rs";
            let rows = db
                .query(
                    "SELECT $1::text AS name, $2::int4 + 1 AS next, NULL::text AS nothing, \
                     $3::int8 AS big",
                    &[&name, &41i32, &(1i64 << 40)],
                )
                .await?;
            assert_eq!(rows.len(), 1);
            let row = &rows[0];
            assert_eq!(row.columns(), vec!["name", "next", "nothing", "big"]);
            assert_eq!(row.text("name")?, Some("kong-rs"));
            assert_eq!(row.text(0)?, Some("kong-rs"));
            assert_eq!(row.int("next")?, Some(42));
            assert_eq!(row.get::<_, i32>("next")?, 42);
            assert_eq!(row.int("big")?, Some(1 << 40));
            assert_eq!(row.text("nothing")?, None);
            assert!(row.is_null("nothing")?);
            assert!(!row.is_null("name")?);
            assert_eq!(row.get::<_, Option<String>>(2)?, None);
            assert_eq!(row.column_type(1), Some(&Type::INT4));
            // Asking for the wrong type or a missing column: errors.
            let wrong = row.text("next").unwrap_err();
            assert!(wrong.to_string().contains("column next"), "{wrong}");
            let missing = row.int("nope").unwrap_err();
            assert!(missing.to_string().contains("nope"), "{missing}");
            let null = row.get::<_, String>("nothing").unwrap_err();
            assert!(null.to_string().contains("nothing"), "{null}");

            // A table, rows changed, non-UTF-8 bytes both ways.
            db.batch_execute(
                "CREATE TEMP TABLE blobs (id int PRIMARY KEY, data bytea, note text); \
                 INSERT INTO blobs VALUES (1, NULL, 'empty')",
            )
            .await?;
            let blob: &[u8] = b"\xff\x00\xfe\r\n\x80";
            let changed = db
                .execute(
                    "INSERT INTO blobs VALUES ($1, $2, $3), ($4, $5, $6)",
                    &[&2i32, &blob, &"bin", &3i32, &Option::<&[u8]>::None, &"null"],
                )
                .await?;
            assert_eq!(changed, 2);
            let rows = db
                .query("SELECT id, data, note FROM blobs ORDER BY id", &[])
                .await?;
            assert_eq!(rows.len(), 3);
            assert_eq!(rows[0].bytes("data")?, None);
            assert_eq!(rows[1].bytes("data")?, Some(blob));
            assert_eq!(rows[1].get::<_, Vec<u8>>("data")?, blob.to_vec());
            assert_eq!(rows[1].bytes("note")?, Some(&b"bin"[..]));
            assert_eq!(rows[2].bytes(1)?, None);
            let updated = db
                .execute("UPDATE blobs SET note = 'x' WHERE id > $1", &[&1i32])
                .await?;
            assert_eq!(updated, 2);

            // A statement PostgreSQL refuses: its message, the peer; the
            // connection stays usable.
            let bad = db.query("SELEC 1", &[]).await.unwrap_err();
            let text = bad.to_string();
            assert!(
                text.starts_with(&format!("postgres 127.0.0.1:{port}: ")),
                "{text}"
            );
            assert!(text.contains("syntax error"), "{text}");
            assert!(text.contains("42601"), "{text}");
            let dup = db
                .execute("INSERT INTO blobs VALUES (1, NULL, NULL)", &[])
                .await
                .unwrap_err();
            assert!(dup.to_string().contains("23505"), "{dup}");
            // A parameter of the wrong type is refused before it is sent.
            let param = db.query("SELECT $1::int4", &[&"one"]).await.unwrap_err();
            assert!(
                param.to_string().contains(&format!("127.0.0.1:{port}")),
                "{param}"
            );
            assert!(db.is_open());
            let rows = db.query("SELECT count(*) FROM blobs", &[]).await?;
            assert_eq!(rows[0].int(0)?, Some(3));

            // Logged in as the right user, by SCRAM-SHA-256 (pg_hba.conf
            // asks it, the password is stored so); a second role logs in
            // by MD5.
            let rows = db
                .query(
                    "SELECT current_user::text, current_database()::text, \
                     (SELECT rolpassword FROM pg_authid WHERE rolname = current_user)",
                    &[],
                )
                .await?;
            assert_eq!(rows[0].text(0)?, Some("kong"));
            assert_eq!(rows[0].text(1)?, Some("postgres"));
            let stored = rows[0].text(2)?.unwrap_or_default();
            assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
            db.batch_execute(
                "SET password_encryption = 'md5'; \
                 CREATE ROLE md5user LOGIN PASSWORD 'md5 pass'",
            )
            .await?;
            let rows = db
                .query(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&"md5user"],
                )
                .await?;
            let stored = rows[0].text(0)?.unwrap_or_default();
            assert!(stored.starts_with("md5"), "{stored}");
            db.close().await?;
            let mut md5 = config.clone();
            md5.user = "md5user".into();
            md5.password = Some("md5 pass".into());
            let mut db = Connection::connect(&md5).await?;
            let rows = db.query("SELECT current_user::text", &[]).await?;
            assert_eq!(rows[0].text(0)?, Some("md5user"));
            db.close().await?;
            md5.password = Some("md5 wrong".into());
            let refused = Connection::connect(&md5).await.unwrap_err();
            assert!(refused.to_string().contains("28P01"), "{refused}");

            // A wrong password is refused, naming the peer.
            let mut wrong = config.clone();
            wrong.password = Some("nope".into());
            let refused = Connection::connect(&wrong).await.unwrap_err();
            let text = refused.to_string();
            assert!(
                text.contains(&format!("postgres 127.0.0.1:{port}")),
                "{text}"
            );
            assert!(text.contains("password authentication failed"), "{text}");
            assert!(text.contains("28P01"), "{text}");
            // No password at all, where one is needed.
            let mut none = config.clone();
            none.password = None;
            let refused = Connection::connect(&none).await.unwrap_err();
            assert!(
                refused.to_string().contains(&format!("127.0.0.1:{port}")),
                "{refused}"
            );
            // A database that does not exist.
            let mut nodb = config.clone();
            nodb.database = Some("nodb".into());
            let refused = Connection::connect(&nodb).await.unwrap_err();
            assert!(refused.to_string().contains("\"nodb\""), "{refused}");

            // A statement running past the timeout: an error, and the
            // connection is closed (its state is unknown).
            let mut db = Connection::connect(&config).await?;
            db.set_timeout(Duration::from_millis(300));
            let started = Instant::now();
            let slow = db.query("SELECT pg_sleep(5)", &[]).await.unwrap_err();
            assert_eq!(slow.kind(), ErrorKind::Timeout, "{slow}");
            assert!(started.elapsed() < Duration::from_secs(3));
            assert!(
                slow.to_string().contains(&format!("127.0.0.1:{port}")),
                "{slow}"
            );
            assert!(!db.is_open());
            let after = db.query("SELECT 1", &[]).await.unwrap_err();
            assert!(after.to_string().contains("closed"), "{after}");

            // Queries after one another and other awaits in between: no
            // stale read left behind.
            let mut db = Connection::connect(&config).await?;
            for n in 0..5i32 {
                let rows = db.query("SELECT $1::int4 * 2", &[&n]).await?;
                assert_eq!(rows[0].int(0)?, Some(i64::from(n) * 2));
                crate::io::sleep(Duration::from_millis(1)).await?;
            }
            db.close().await?;
            Ok::<_, Error>(())
        });
        drop(server);
        result.expect("task").expect("postgres");
    }

    #[test]
    fn a_refused_connection_names_the_peer() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let err = crate::io::block_on(async move {
            Connection::connect(&Config::new("127.0.0.1", port, "kong")).await
        })
        .expect("task")
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("postgres"), "{text}");
        assert!(text.contains("refused"), "{text}");
    }
}
