//! `rs-io-probe`: an async access phase that talks to the network, for the
//! I/O specs and benchmarks. What it does is chosen by `mode`:
//!
//! - `http`: GET `url` (+ the request's `x-path` header), answer with the
//!   upstream's status and body (`x-io-status` set);
//! - `redis_get` / `redis_incr`: `GET` the key in the request's `x-key`
//!   header, or `INCR`+`EXPIRE` it in one pipeline, answer the value;
//! - `postgres`: connect to PostgreSQL at `host:port` as `postgres_user`
//!   (`postgres_password`, `postgres_database`), run `SELECT $1::text`
//!   with the request's `x-key` header, answer the value (`x-pg-user`:
//!   the session's `current_user`);
//! - `sleep`: wait `sleep_ms`, then let the request through;
//! - `tcp_echo`: connect to `host:port`, send `x-send`, read the reply.
//!
//! A header read before the first await and one written after it check
//! that the PDK works across awaits. An error is answered 502 with the
//! message (so specs can read it) when `fail_open_502` is set; otherwise
//! it fails the phase (500), as a plugin does by default.

use kong_rs::postgres::Config as PgConfig;
use kong_rs::redis::{Client as RedisClient, Config as RedisConfig};
use kong_rs::{Flow, Pdk, Plugin, Result};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Loader calls of `cache` mode in this worker.
static LOADS: AtomicU64 = AtomicU64::new(0);

/// What the probe does.
#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// GET a URL and answer with its response.
    Http,
    /// GET a Redis key.
    RedisGet,
    /// INCR + EXPIRE a Redis key in one pipeline.
    RedisIncr,
    /// `SELECT $1::text` on PostgreSQL.
    Postgres,
    /// Sleep, then continue.
    Sleep,
    /// Send to a TCP server and answer its reply.
    TcpEcho,
    /// Answer at once, no I/O (the benchmark's measure of the async
    /// machinery itself).
    Exit,
    /// Sleep 1 ms, then panic (a panic inside a future).
    PanicAfterAwait,
    /// `kong.client.load_consumer` of the `x-consumer` header (id or
    /// username), then `authenticate` with it: answers the consumer read
    /// back with `get_consumer`, or 404.
    Consumer,
    /// `kong_rs::cache::get_or_load` keyed by the request path, loading
    /// with a GET of `url` (the path `/missing` loads "not found").
    Cache,
}

/// Config of `rs-io-probe`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct IoProbeConfig {
    /// What the probe does on each request.
    pub mode: Mode,
    /// Base URL for `http` mode, e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub url: Option<String>,
    /// Server host for the redis, postgres and tcp modes.
    #[serde(default)]
    pub host: Option<String>,
    /// Server port for the redis, postgres and tcp modes.
    #[serde(default)]
    pub port: Option<u16>,
    /// The PostgreSQL role `postgres` mode logs in as.
    #[serde(default)]
    pub postgres_user: Option<String>,
    /// Its password.
    #[serde(default)]
    pub postgres_password: Option<String>,
    /// The PostgreSQL database (the user's name when unset).
    #[serde(default)]
    pub postgres_database: Option<String>,
    /// Time limit of each exchange, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// How long `sleep` mode sleeps, in milliseconds.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Verify the server's certificate for https URLs.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// Answer an I/O error with 502 and its message instead of failing.
    #[serde(default)]
    pub fail_open_502: bool,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    2000
}

/// The `rs-io-probe` plugin.
pub struct IoProbe {
    config: IoProbeConfig,
    redis: Option<RedisClient>,
    postgres: Option<PgConfig>,
}

impl IoProbe {
    async fn http(&self, kong: &mut dyn Pdk, timeout: Duration) -> Result<Flow> {
        let path = kong.request().get_header("x-path")?.unwrap_or_default();
        let url = format!(
            "{}{}",
            self.config.url.as_deref().unwrap_or_default(),
            String::from_utf8_lossy(&path)
        );
        let response = kong_rs::http::Request::get(&url)?
            .timeout(timeout)
            .verify(self.config.tls_verify)
            .send()
            .await?;
        kong.response()
            .set_header("x-io-status", response.status.to_string().as_bytes())?;
        Ok(Flow::exit(response.status, response.body))
    }

    async fn postgres(&self, kong: &mut dyn Pdk, key: &[u8]) -> Result<Flow> {
        let config = self
            .postgres
            .as_ref()
            .ok_or("postgres mode needs host, port and postgres_user")?;
        let value = std::str::from_utf8(key).map_err(|_| "x-key is not UTF-8")?;
        let mut db = kong_rs::postgres::Connection::connect(config).await?;
        let rows = db
            .query(
                "SELECT $1::text AS value, current_user::text AS who",
                &[&value],
            )
            .await?;
        db.close().await?;
        let row = rows.first().ok_or("postgres: no row")?;
        kong.response()
            .set_header("x-pg-user", row.bytes("who")?.unwrap_or_default())?;
        let body = row.bytes("value")?.unwrap_or(b"(null)").to_vec();
        Ok(Flow::exit(200, body))
    }

    async fn cached(&self, kong: &mut dyn Pdk, timeout: Duration) -> Result<Flow> {
        let path = String::from_utf8_lossy(&kong.request().get_path()?).into_owned();
        let url = self.config.url.clone().unwrap_or_default();
        let missing = path.ends_with("/missing");
        let options = kong_rs::cache::CacheOptions {
            ttl: Duration::from_secs(60),
            neg_ttl: Duration::from_secs(60),
        };
        let value = kong_rs::cache::get_or_load(
            &format!("rs-io-probe:{path}"),
            options,
            move || async move {
                LOADS.fetch_add(1, Ordering::Relaxed);
                if missing {
                    return Ok(None);
                }
                let response = kong_rs::http::Request::get(&url)?
                    .timeout(timeout)
                    .send()
                    .await?;
                Ok(Some(response.body))
            },
        )
        .await?;
        kong.response().set_header(
            "x-cache-loads",
            LOADS.load(Ordering::Relaxed).to_string().as_bytes(),
        )?;
        Ok(match value {
            Some(body) => Flow::exit(200, body),
            None => Flow::exit(404, "not found"),
        })
    }

    async fn run(&self, kong: &mut dyn Pdk, key: Vec<u8>) -> Result<Flow> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        match self.config.mode {
            // Boxed: hyper's futures are large, and the Redis modes (the
            // benchmark's) should not carry their size.
            Mode::Http => Box::pin(self.http(kong, timeout)).await,
            Mode::RedisGet | Mode::RedisIncr => {
                let config = self
                    .redis
                    .as_ref()
                    .ok_or("redis modes need host and port")?;
                let mut redis = config.connect().await?;
                let value = if self.config.mode == Mode::RedisGet {
                    redis.command(&[&b"GET"[..], &key]).await?
                } else {
                    let replies = redis
                        .pipeline(&[
                            &[&b"INCR"[..], &key][..],
                            &[&b"EXPIRE"[..], &key, b"60"][..],
                        ])
                        .await?;
                    replies
                        .into_iter()
                        .next()
                        .unwrap_or(kong_rs::redis::Value::Nil)
                };
                redis.release();
                let body = match value {
                    kong_rs::redis::Value::Int(n) => n.to_string().into_bytes(),
                    kong_rs::redis::Value::Data(data) => data,
                    kong_rs::redis::Value::Nil => b"(nil)".to_vec(),
                    other => format!("{other:?}").into_bytes(),
                };
                Ok(Flow::exit(200, body))
            }
            Mode::Exit => Ok(Flow::exit(200, "(nil)")),
            Mode::Consumer => {
                let wanted = kong.request().get_header("x-consumer")?.unwrap_or_default();
                let wanted = String::from_utf8_lossy(&wanted).into_owned();
                let Some(consumer) = kong.client().load_consumer(&wanted, true).await? else {
                    return Ok(Flow::exit(404, "no such consumer"));
                };
                kong.client()
                    .authenticate(Some(&consumer.to_json()), None)?;
                let seen = kong
                    .client()
                    .get_consumer()?
                    .ok_or("authenticated, yet no consumer")?;
                let body = serde_json::json!({ "id": seen.id, "username": seen.name });
                Ok(Flow::exit(200, body.to_string()))
            }
            Mode::PanicAfterAwait => {
                kong_rs::io::sleep(Duration::from_millis(1)).await?;
                panic!("rs-io-probe panics after an await, on purpose");
            }
            Mode::Cache => Box::pin(self.cached(kong, timeout)).await,
            Mode::Postgres => Box::pin(self.postgres(kong, &key)).await,
            Mode::Sleep => {
                kong_rs::io::sleep(Duration::from_millis(self.config.sleep_ms)).await?;
                Ok(Flow::Continue)
            }
            Mode::TcpEcho => {
                let host = self.config.host.as_deref().ok_or("tcp_echo needs host")?;
                let port = self.config.port.ok_or("tcp_echo needs port")?;
                let send = kong.request().get_header("x-send")?.unwrap_or_default();
                let reply = kong_rs::io::timeout(timeout, async {
                    let mut stream = kong_rs::io::TcpStream::connect(host, port).await?;
                    stream.send(&send).await?;
                    stream.receive(4096).await
                })
                .await??;
                Ok(Flow::exit(200, reply))
            }
        }
    }
}

#[kong_rs::plugin]
impl Plugin for IoProbe {
    type Config = IoProbeConfig;
    type State = ();
    const NAME: &'static str = "rs-io-probe";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 900;

    fn new(config: IoProbeConfig) -> Result<Self> {
        if config.mode == Mode::Http && config.url.is_none() {
            return Err("mode http needs url".into());
        }
        let redis = match (&config.host, config.port) {
            (Some(host), Some(port)) => {
                let mut redis = RedisConfig::new(host.clone(), port);
                redis.timeout = Duration::from_millis(config.timeout_ms);
                Some(RedisClient::new(redis))
            }
            _ => None,
        };
        let postgres = match (&config.host, config.port, &config.postgres_user) {
            (Some(host), Some(port), Some(user)) => {
                let mut postgres = PgConfig::new(host.clone(), port, user.clone());
                postgres.password = config.postgres_password.clone();
                postgres.database = config.postgres_database.clone();
                postgres.timeout = Duration::from_millis(config.timeout_ms);
                Some(postgres)
            }
            _ => None,
        };
        if config.mode == Mode::Postgres && postgres.is_none() {
            return Err("mode postgres needs host, port and postgres_user".into());
        }
        Ok(IoProbe {
            config,
            redis,
            postgres,
        })
    }

    async fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        // Read before the first await, written after the last.
        let key = kong.request().get_header("x-key")?.unwrap_or_default();
        let result = self.run(kong, key).await;
        kong.response().set_header("x-io-probe", b"done")?;
        match result {
            Err(error) if self.config.fail_open_502 => Ok(Flow::exit(502, error.to_string())),
            other => other,
        }
    }
}
