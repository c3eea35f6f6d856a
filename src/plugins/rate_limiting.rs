//! `rs-rate-limiting`: Kong's `rate-limiting` plugin, in Rust.
//!
//! The configuration, the response headers and the refusal of Kong 3.9's
//! bundled `rate-limiting` (kong/plugins/rate-limiting), so an operator
//! switches by changing the plugin's name. Counters live in the
//! `kong_rate_limiting_counters` shared dict (`policy = "local"`: one
//! count per node, across its workers) or in Redis (`policy = "redis"`:
//! one count across every node using the same Redis), in one round trip
//! per request for all configured windows (`INCRBY` + `EXPIRE` per window,
//! pipelined), on connections kept alive in nginx's pool.
//!
//! Differences from Kong's plugin, plainly:
//! - `policy = "cluster"` (counters in Kong's database) is not offered.
//! - `sync_rate` is validated as Kong does, but counting is always
//!   synchronous (`-1`): a positive `sync_rate` counts exactly instead of
//!   batching increments to Redis every `sync_rate` seconds.
//! - Counters are keyed by the plugin entity's id (`kong.plugin.get_id()`)
//!   where Kong keys them by the plugin's route and service ids.
//! - The deprecated `redis_*` shorthand fields are not accepted; use the
//!   `redis` record (Kong 3.9's shape).
//! - `policy = "local"` counts with an atomic increment (Kong reads, then
//!   increments in a timer), so concurrent requests never overshoot the
//!   limit; a refused request takes its increment back, so, as with Kong,
//!   refused requests do not count.

use crate::pdk::{Pdk, Value};
use crate::redis::{Client as RedisClient, Config as RedisClientConfig};
use crate::{Flow, Plugin, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shared dict of the local policy: Kong declares it
/// (`lua_shared_dict kong_rate_limiting_counters 12m`), and so does the
/// kong-rs gateway.
pub const COUNTERS_DICT: &str = "kong_rate_limiting_counters";

/// The `kong.ctx.plugin` key through which a refusal reaches the Lua side
/// (`kong/plugins/rs-rate-limiting/handler.lua`), which answers it with
/// `kong.response.error(error_code, error_message)`: Kong's own error
/// body (content negotiation, `request_id`, custom error templates).
pub const REFUSED_CTX_KEY: &str = "rs_rate_limiting_refused";

/// Which entity the limits count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitBy {
    /// The authenticated consumer (or its credential); the client IP without one.
    #[default]
    Consumer,
    /// The authenticated credential; the client IP without one.
    Credential,
    /// The client IP (`kong.client.get_forwarded_ip()`).
    Ip,
    /// The service the request was routed to.
    Service,
    /// The value of the request header `header_name`.
    Header,
    /// The request path, when it equals `path`.
    Path,
}

/// Where the counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// A shared dict of this node: every worker counts together.
    #[default]
    Local,
    /// Redis: every node using the same Redis counts together.
    Redis,
}

/// The `redis` record (Kong 3.9's `kong.tools.redis.schema`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// A string representing a host name, such as example.com.
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// An integer representing a port number between 0 and 65535, inclusive.
    #[serde(default = "default_redis_port")]
    pub port: u16,
    /// An integer representing a timeout in milliseconds. Must be between 0 and 2^31-2.
    #[serde(default = "default_redis_timeout")]
    #[schemars(range(min = 0, max = 2147483646))]
    pub timeout: u32,
    /// Username to use for Redis connections. If undefined, ACL authentication won't be performed. This requires Redis v6.0.0+. To be compatible with Redis v5.x.y, you can set it to `default`.
    pub username: Option<String>,
    /// Password to use for Redis connections. If undefined, no AUTH commands are sent to Redis.
    pub password: Option<String>,
    /// Database to use for the Redis connection when using the `redis` strategy
    #[serde(default)]
    pub database: u32,
    /// If set to true, uses SSL to connect to Redis.
    #[serde(default)]
    pub ssl: bool,
    /// If set to true, verifies the validity of the server SSL certificate.
    #[serde(default)]
    pub ssl_verify: bool,
    /// A string representing an SNI (server name indication) value for TLS.
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: None,
            port: default_redis_port(),
            timeout: default_redis_timeout(),
            username: None,
            password: None,
            database: 0,
            ssl: false,
            ssl_verify: false,
            server_name: None,
        }
    }
}

fn default_redis_port() -> u16 {
    6379
}
fn default_redis_timeout() -> u32 {
    2000
}
fn default_true() -> bool {
    true
}
fn default_error_code() -> f64 {
    429.0
}
fn default_error_message() -> String {
    "API rate limit exceeded".to_string()
}
fn default_sync_rate() -> f64 {
    -1.0
}

/// Configuration of `rs-rate-limiting`: Kong 3.9's `rate-limiting` fields.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// The number of HTTP requests that can be made per second.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub second: Option<f64>,
    /// The number of HTTP requests that can be made per minute.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub minute: Option<f64>,
    /// The number of HTTP requests that can be made per hour.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub hour: Option<f64>,
    /// The number of HTTP requests that can be made per day.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub day: Option<f64>,
    /// The number of HTTP requests that can be made per month.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub month: Option<f64>,
    /// The number of HTTP requests that can be made per year.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub year: Option<f64>,
    /// The entity that is used when aggregating the limits.
    #[serde(default)]
    pub limit_by: LimitBy,
    /// A string representing an HTTP header name (required with `limit_by = header`).
    #[schemars(length(min = 1))]
    pub header_name: Option<String>,
    /// A string representing a URL path (required with `limit_by = path`).
    #[schemars(length(min = 1))]
    pub path: Option<String>,
    /// The rate-limiting policies to use for retrieving and incrementing the limits.
    #[serde(default)]
    pub policy: Policy,
    /// A boolean value that determines if the requests should be proxied even if Kong has troubles connecting a third-party data store. If `true`, requests will be proxied anyway, effectively disabling the rate-limiting function until the data store is working again. If `false`, then the clients will see `500` errors.
    #[serde(default = "default_true")]
    pub fault_tolerant: bool,
    /// Redis configuration
    #[serde(default)]
    pub redis: RedisConfig,
    /// Optionally hide informative response headers.
    #[serde(default)]
    pub hide_client_headers: bool,
    /// Set a custom error code to return when the rate limit is exceeded.
    #[serde(default = "default_error_code")]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub error_code: f64,
    /// Set a custom error message to return when the rate limit is exceeded.
    #[serde(default = "default_error_message")]
    pub error_message: String,
    /// How often to sync counter data to the central data store. A value of -1 results in synchronous behavior.
    #[serde(default = "default_sync_rate")]
    pub sync_rate: f64,
}

/// A rate-limiting window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
    /// One calendar month (UTC); its counters expire after 30 days.
    Month,
    /// One calendar year (UTC); its counters expire after 365 days.
    Year,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 6] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Month,
        Period::Year,
    ];

    /// The config field's name.
    pub fn name(self) -> &'static str {
        ["second", "minute", "hour", "day", "month", "year"][self as usize]
    }

    /// Kong's `expiration.lua`: the window's length in seconds, which is
    /// also its counters' ttl and the base of `RateLimit-Reset`.
    pub fn seconds(self) -> i64 {
        [1, 60, 3600, 86400, 2_592_000, 31_536_000][self as usize]
    }

    fn seconds_text(self) -> &'static str {
        ["1", "60", "3600", "86400", "2592000", "31536000"][self as usize]
    }

    fn limit_header(self) -> &'static str {
        [
            "X-RateLimit-Limit-Second",
            "X-RateLimit-Limit-Minute",
            "X-RateLimit-Limit-Hour",
            "X-RateLimit-Limit-Day",
            "X-RateLimit-Limit-Month",
            "X-RateLimit-Limit-Year",
        ][self as usize]
    }

    fn remaining_header(self) -> &'static str {
        [
            "X-RateLimit-Remaining-Second",
            "X-RateLimit-Remaining-Minute",
            "X-RateLimit-Remaining-Hour",
            "X-RateLimit-Remaining-Day",
            "X-RateLimit-Remaining-Month",
            "X-RateLimit-Remaining-Year",
        ][self as usize]
    }

    /// The start (Unix seconds, UTC) of the window holding `now`.
    pub fn start(self, now: i64) -> i64 {
        match self {
            Period::Second => now,
            Period::Minute | Period::Hour | Period::Day => now - now.rem_euclid(self.seconds()),
            Period::Month | Period::Year => {
                let (year, month, _) = civil_from_days(now.div_euclid(86400));
                let month = if self == Period::Year { 1 } else { month };
                days_from_civil(year, month, 1) * 86400
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    period: Period,
    limit: f64,
}

/// Kong's `rate-limiting`, in Rust: per-window counters in a shared dict
/// (policy `local`) or in Redis (policy `redis`), Kong's headers and 429.
#[derive(Debug)]
pub struct RateLimiting {
    windows: Vec<Window>,
    limit_by: LimitBy,
    header_name: String,
    path: Vec<u8>,
    redis: Option<RedisClient>,
    fault_tolerant: bool,
    hide_client_headers: bool,
    /// The plugin entity's id, read on the first request.
    scope: OnceCell<Box<[u8]>>,
}

/// A byte string built on the stack (keys, header values), spilling to
/// the heap only when it outgrows `N` bytes.
struct StackBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    spill: Vec<u8>,
}

impl<const N: usize> StackBuf<N> {
    fn new() -> Self {
        StackBuf {
            bytes: [0; N],
            len: 0,
            spill: Vec::new(),
        }
    }
    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
    fn push(&mut self, data: &[u8]) {
        if self.spill.is_empty() && self.len + data.len() <= N {
            self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.bytes[..self.len]);
            }
            self.spill.extend_from_slice(data);
        }
    }
    fn as_bytes(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.bytes[..self.len]
        } else {
            &self.spill
        }
    }
}

impl<const N: usize> std::fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// A number as Lua's `tostring` writes it (`%.14g`; integral values
/// without a fraction).
fn write_number<const N: usize>(out: &mut StackBuf<N>, n: f64) {
    out.clear();
    if n.fract() == 0.0 && n.abs() < 1e15 {
        out.push(itoa::Buffer::new().format(n as i64).as_bytes());
    } else {
        let _ = write!(out, "{n}");
    }
}

/// The usage of one window: what was counted before this request.
#[derive(Debug, Clone, Copy)]
struct Usage {
    window: Window,
    start: i64,
    before: f64,
}

const MAX_WINDOWS: usize = Period::ALL.len();

#[crate::plugin]
impl Plugin for RateLimiting {
    type Config = RateLimitingConfig;
    type State = ();
    const NAME: &'static str = "rs-rate-limiting";
    const VERSION: &'static str = "0.1.0";
    // Kong's rate-limiting runs at 910.
    const PRIORITY: i32 = 910;

    fn new(config: RateLimitingConfig) -> Result<Self> {
        let limits = [
            config.second,
            config.minute,
            config.hour,
            config.day,
            config.month,
            config.year,
        ];
        let windows: Vec<Window> = Period::ALL
            .iter()
            .zip(limits)
            .filter_map(|(&period, limit)| limit.map(|limit| Window { period, limit }))
            .collect();
        if windows.is_empty() {
            return Err(
                "at least one of these fields must be non-empty: 'config.second', \
                        'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"
                    .into(),
            );
        }
        for window in &windows {
            if window.limit.is_nan() || window.limit <= 0.0 {
                return Err(
                    format!("{}: value must be greater than 0", window.period.name()).into(),
                );
            }
        }
        for (i, lower) in windows.iter().enumerate() {
            for upper in &windows[i + 1..] {
                if upper.limit < lower.limit {
                    return Err(format!(
                        "The limit for {}({:.1}) cannot be lower than the limit for {}({:.1})",
                        upper.period.name(),
                        upper.limit,
                        lower.period.name(),
                        lower.limit
                    )
                    .into());
                }
            }
        }
        if config.policy != Policy::Redis && config.sync_rate != -1.0 {
            return Err("sync_rate can only be used with the redis policy".into());
        }
        if config.policy == Policy::Redis && config.sync_rate != -1.0 && config.sync_rate < 0.02 {
            return Err("sync_rate must be greater than 0.02, or -1 to disable".into());
        }
        if config.error_code.is_nan() || config.error_code <= 0.0 {
            return Err("error_code: value must be greater than 0".into());
        }
        let header_name = match (config.limit_by, config.header_name) {
            (LimitBy::Header, None) => {
                return Err("header_name: required field missing (limit_by is header)".into());
            }
            (_, Some(name)) => {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
                {
                    return Err(format!("header_name: bad header name {name:?}").into());
                }
                name.to_ascii_lowercase()
            }
            (_, None) => String::new(),
        };
        let path = match (config.limit_by, config.path) {
            (LimitBy::Path, None) => {
                return Err("path: required field missing (limit_by is path)".into());
            }
            (_, Some(path)) => {
                if !path.starts_with('/') {
                    return Err(format!("path: should start with: / (got {path:?})").into());
                }
                path.into_bytes()
            }
            (_, None) => Vec::new(),
        };
        let redis = match config.policy {
            Policy::Local => None,
            Policy::Redis => {
                let r = config.redis;
                let Some(host) = r.host.filter(|h| !h.is_empty()) else {
                    return Err("redis.host: required field missing (policy is redis)".into());
                };
                let mut client = RedisClientConfig::new(host, r.port);
                client.username = r.username.filter(|u| !u.is_empty());
                client.password = r.password.filter(|p| !p.is_empty());
                client.database = r.database;
                client.timeout = Duration::from_millis(u64::from(r.timeout));
                client.ssl = r.ssl;
                client.ssl_verify = r.ssl_verify;
                client.server_name = r.server_name;
                // What Kong's plugin keeps: set_keepalive(10000, 100).
                client.pool_size = 100;
                client.keepalive = Duration::from_secs(10);
                Some(RedisClient::new(client))
            }
        };
        Ok(RateLimiting {
            windows,
            limit_by: config.limit_by,
            header_name,
            path,
            redis,
            fault_tolerant: config.fault_tolerant,
            hide_client_headers: config.hide_client_headers,
            scope: OnceCell::new(),
        })
    }

    async fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut identifier = StackBuf::<128>::new();
        self.identifier(kong, &mut identifier)?;
        let identifier = identifier.as_bytes();
        let scope = self.scope(kong)?;

        let mut usage = [None::<Usage>; MAX_WINDOWS];
        let counted = match &self.redis {
            None => self.count_locally(kong, scope, identifier, now, &mut usage),
            Some(redis) => {
                self.count_in_redis(redis, scope, identifier, now, &mut usage)
                    .await
            }
        };
        if let Err(error) = counted {
            if !self.fault_tolerant {
                return Err(error);
            }
            kong.log().err(&format!("failed to get usage: {error}"))?;
            return Ok(Flow::Continue);
        }
        let usage = &usage[..self.windows.len()];
        let refused = usage
            .iter()
            .flatten()
            .any(|u| u.window.limit - u.before <= 0.0);
        if refused && self.redis.is_none() {
            // As Kong's local policy: a refused request does not count.
            self.take_back(kong, scope, identifier, usage);
        }
        if !self.hide_client_headers {
            self.set_headers(kong, now, usage, refused)?;
        }
        if refused {
            kong.ctx()
                .plugin_set(REFUSED_CTX_KEY, Value::Boolean(true))?;
        }
        Ok(Flow::Continue)
    }
}

impl RateLimiting {
    /// What the limits count, as Kong's `get_identifier`, into `out` (by
    /// ip, the common case, without allocating).
    fn identifier<const N: usize>(&self, kong: &mut dyn Pdk, out: &mut StackBuf<N>) -> Result<()> {
        let found = match self.limit_by {
            LimitBy::Ip => None,
            LimitBy::Consumer => {
                let client = kong.client();
                match client.get_consumer()? {
                    Some(consumer) => Some(consumer.id.into_bytes()),
                    None => client.get_credential()?.map(|c| c.id.into_bytes()),
                }
            }
            LimitBy::Credential => kong.client().get_credential()?.map(|c| c.id.into_bytes()),
            LimitBy::Service => kong.router().get_service()?.map(|s| s.id.into_bytes()),
            LimitBy::Header => kong.request().get_header(&self.header_name)?,
            LimitBy::Path => {
                let path = kong.request().get_path()?;
                (path == self.path).then_some(path)
            }
        };
        match found {
            Some(id) if !id.is_empty() => out.push(&id),
            _ => {
                let mut ip = [0u8; 64];
                let len = kong.client().get_forwarded_ip_into(&mut ip)?;
                out.push(&ip[..len]);
            }
        }
        Ok(())
    }

    /// The plugin entity's id, read once per instance.
    fn scope<'a>(&'a self, kong: &mut dyn Pdk) -> Result<&'a [u8]> {
        if let Some(scope) = self.scope.get() {
            return Ok(scope);
        }
        match kong.plugin().get_id()? {
            Some(id) => Ok(self
                .scope
                .get_or_init(|| id.into_bytes().into_boxed_slice())),
            None => Ok(b"global"),
        }
    }

    /// `rs-ratelimit:<plugin id>:<identifier>:<window start, ms>:<period>`.
    fn key<const N: usize>(
        out: &mut StackBuf<N>,
        scope: &[u8],
        identifier: &[u8],
        start: i64,
        period: Period,
    ) {
        out.clear();
        out.push(b"rs-ratelimit:");
        out.push(scope);
        out.push(b":");
        out.push(identifier);
        out.push(b":");
        out.push(itoa::Buffer::new().format(start * 1000).as_bytes());
        out.push(b":");
        out.push(period.name().as_bytes());
    }

    fn count_locally(
        &self,
        kong: &mut dyn Pdk,
        scope: &[u8],
        identifier: &[u8],
        now: i64,
        usage: &mut [Option<Usage>; MAX_WINDOWS],
    ) -> Result<()> {
        let dict = kong.shared_dict(COUNTERS_DICT)?;
        let mut key = StackBuf::<256>::new();
        for (slot, &window) in usage.iter_mut().zip(&self.windows) {
            let start = window.period.start(now);
            Self::key(&mut key, scope, identifier, start, window.period);
            let ttl = Duration::from_secs(window.period.seconds() as u64);
            let count = dict.incr(key.as_bytes(), 1, Some(0), Some(ttl))?;
            *slot = Some(Usage {
                window,
                start,
                before: (count - 1) as f64,
            });
        }
        Ok(())
    }

    /// Undoes the local increments of a refused request.
    fn take_back(
        &self,
        kong: &mut dyn Pdk,
        scope: &[u8],
        identifier: &[u8],
        usage: &[Option<Usage>],
    ) {
        let Ok(dict) = kong.shared_dict(COUNTERS_DICT) else {
            return;
        };
        let mut key = StackBuf::<256>::new();
        for u in usage.iter().flatten() {
            Self::key(&mut key, scope, identifier, u.start, u.window.period);
            // The key may have expired in between: then there is nothing to undo.
            let _ = dict.incr(key.as_bytes(), -1, None, None);
        }
    }

    /// One round trip: `INCRBY key 1` + `EXPIRE key <window>` per window.
    async fn count_in_redis(
        &self,
        client: &RedisClient,
        scope: &[u8],
        identifier: &[u8],
        now: i64,
        usage: &mut [Option<Usage>; MAX_WINDOWS],
    ) -> Result<()> {
        // Every window's key in one buffer (one allocation), the commands
        // on the stack.
        let mut keys = Vec::with_capacity(self.windows.len() * (64 + identifier.len()));
        let mut ends = [0usize; MAX_WINDOWS];
        let mut key = StackBuf::<256>::new();
        for ((slot, end), &window) in usage.iter_mut().zip(&mut ends).zip(&self.windows) {
            let start = window.period.start(now);
            Self::key(&mut key, scope, identifier, start, window.period);
            keys.extend_from_slice(key.as_bytes());
            *end = keys.len();
            *slot = Some(Usage {
                window,
                start,
                before: 0.0,
            });
        }
        let mut commands: [[&[u8]; 3]; 2 * MAX_WINDOWS] = [[b""; 3]; 2 * MAX_WINDOWS];
        let mut begin = 0;
        for (i, window) in self.windows.iter().enumerate() {
            let key = &keys[begin..ends[i]];
            begin = ends[i];
            commands[2 * i] = [b"INCRBY", key, b"1"];
            commands[2 * i + 1] = [b"EXPIRE", key, window.period.seconds_text().as_bytes()];
        }
        let mut redis = client.connect().await?;
        let replies = redis.pipeline(&commands[..2 * self.windows.len()]).await?;
        redis.release();
        for (slot, reply) in usage.iter_mut().flatten().zip(replies.iter().step_by(2)) {
            let count = reply
                .as_int()
                .ok_or_else(|| crate::Error::msg(format!("redis: INCRBY answered {reply:?}")))?;
            slot.before = (count - 1) as f64;
        }
        Ok(())
    }

    /// Kong's headers: per window `X-RateLimit-Limit-<Period>` and
    /// `X-RateLimit-Remaining-<Period>`; for the window with the fewest
    /// requests left (the longer one on a tie) `RateLimit-Limit`,
    /// `RateLimit-Remaining` and `RateLimit-Reset`; `Retry-After` when
    /// refused.
    fn set_headers(
        &self,
        kong: &mut dyn Pdk,
        now: i64,
        usage: &[Option<Usage>],
        refused: bool,
    ) -> Result<()> {
        let response = kong.response();
        let mut value = StackBuf::<32>::new();
        let mut chosen: Option<(f64, f64, i64)> = None; // limit, remaining, window seconds
        let mut reset = 0;
        for u in usage.iter().flatten() {
            let left = u.window.limit - u.before;
            // Kong takes this request off every window when none is
            // exceeded, and off the exceeded ones when refusing.
            let exceeded = left <= 0.0;
            let remaining = if !refused || exceeded {
                left - 1.0
            } else {
                left
            }
            .max(0.0);
            let seconds = u.window.period.seconds();
            let better = match chosen {
                None => true,
                Some((_, best, best_seconds)) => {
                    remaining < best || (remaining == best && seconds > best_seconds)
                }
            };
            if better {
                chosen = Some((u.window.limit, remaining, seconds));
                reset = (seconds - (now - u.start)).max(1);
            }
            write_number(&mut value, u.window.limit);
            response.set_header(u.window.period.limit_header(), value.as_bytes())?;
            write_number(&mut value, remaining);
            response.set_header(u.window.period.remaining_header(), value.as_bytes())?;
        }
        if let Some((limit, remaining, _)) = chosen {
            write_number(&mut value, limit);
            response.set_header("RateLimit-Limit", value.as_bytes())?;
            write_number(&mut value, remaining);
            response.set_header("RateLimit-Remaining", value.as_bytes())?;
            write_number(&mut value, reset as f64);
            response.set_header("RateLimit-Reset", value.as_bytes())?;
            if refused {
                response.set_header("Retry-After", value.as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MockPdk, MockSharedDicts, Phase};
    use std::rc::Rc;

    fn config(json: serde_json::Value) -> RateLimitingConfig {
        serde_json::from_value(json).expect("a valid config")
    }

    fn plugin(json: serde_json::Value) -> Rc<RateLimiting> {
        Rc::new(RateLimiting::new(config(json)).expect("accepted"))
    }

    /// One request's access phase against `kong`; returns the mock after it.
    fn access(plugin: &Rc<RateLimiting>, mut kong: MockPdk) -> (Result<Flow>, MockPdk) {
        let plugin = plugin.clone();
        crate::io::block_on(async move {
            kong.phase = Some(Phase::Access);
            let flow = plugin.access_async(&mut kong, &mut ()).await;
            (flow, kong)
        })
        .expect("the task runs")
    }

    fn request(dicts: &MockSharedDicts) -> MockPdk {
        let mut kong = MockPdk::get("/anything");
        kong.shared_dicts = dicts.clone();
        kong.shared_dicts.declare(COUNTERS_DICT);
        kong
    }

    fn header(kong: &MockPdk, name: &str) -> Option<String> {
        kong.response_header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn refused(kong: &MockPdk) -> bool {
        kong.ctx_plugin
            .iter()
            .any(|(k, v)| k == REFUSED_CTX_KEY && *v == Value::Boolean(true))
    }

    #[test]
    fn local_policy_lets_the_limit_through_then_refuses_with_kongs_headers() {
        let plugin = plugin(serde_json::json!({ "minute": 3, "limit_by": "ip" }));
        let dicts = MockSharedDicts::new();
        for n in 1..=3 {
            let (flow, kong) = access(&plugin, request(&dicts));
            assert_eq!(flow.unwrap(), Flow::Continue);
            assert!(!refused(&kong), "request {n}");
            assert_eq!(
                header(&kong, "x-ratelimit-limit-minute").as_deref(),
                Some("3")
            );
            let left = (3 - n).to_string();
            assert_eq!(
                header(&kong, "x-ratelimit-remaining-minute"),
                Some(left.clone())
            );
            assert_eq!(header(&kong, "ratelimit-limit").as_deref(), Some("3"));
            assert_eq!(header(&kong, "ratelimit-remaining"), Some(left));
            let reset: i64 = header(&kong, "ratelimit-reset").unwrap().parse().unwrap();
            assert!((1..=60).contains(&reset), "{reset}");
            assert!(header(&kong, "retry-after").is_none());
        }
        for _ in 0..3 {
            let (flow, kong) = access(&plugin, request(&dicts));
            assert_eq!(
                flow.unwrap(),
                Flow::Continue,
                "the Lua side answers the refusal"
            );
            assert!(refused(&kong));
            assert_eq!(
                header(&kong, "x-ratelimit-remaining-minute").as_deref(),
                Some("0")
            );
            assert_eq!(header(&kong, "ratelimit-remaining").as_deref(), Some("0"));
            assert_eq!(
                header(&kong, "retry-after"),
                header(&kong, "ratelimit-reset")
            );
        }
        // Refused requests took their increment back, as Kong's local policy never counts them.
        let kong = request(&dicts);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let key = format!(
            "rs-ratelimit:{}:127.0.0.1:{}:minute",
            kong.plugin_id.as_deref().unwrap(),
            Period::Minute.start(now) * 1000
        );
        let value = dicts.value(COUNTERS_DICT, key.as_bytes());
        // (unless the minute turned during the test)
        if Period::Minute.start(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        ) == Period::Minute.start(now)
        {
            assert_eq!(value.as_deref(), Some(&b"3"[..]));
        }
    }

    #[test]
    fn the_window_with_the_fewest_requests_left_names_the_ratelimit_headers() {
        let plugin = plugin(serde_json::json!({ "second": 5, "hour": 5, "limit_by": "ip" }));
        let dicts = MockSharedDicts::new();
        let (_, kong) = access(&plugin, request(&dicts));
        // both have 4 left: the longer window wins the tie
        assert_eq!(header(&kong, "ratelimit-remaining").as_deref(), Some("4"));
        let reset: i64 = header(&kong, "ratelimit-reset").unwrap().parse().unwrap();
        assert!(reset > 1, "the hour's reset, got {reset}");
        assert_eq!(
            header(&kong, "x-ratelimit-limit-second").as_deref(),
            Some("5")
        );
        assert_eq!(
            header(&kong, "x-ratelimit-limit-hour").as_deref(),
            Some("5")
        );
    }

    #[test]
    fn hide_client_headers_sets_none_but_still_refuses() {
        let plugin =
            plugin(serde_json::json!({ "hour": 1, "limit_by": "ip", "hide_client_headers": true }));
        let dicts = MockSharedDicts::new();
        let (_, kong) = access(&plugin, request(&dicts));
        assert!(
            kong.response_headers.is_empty(),
            "{:?}",
            kong.response_headers
        );
        let (_, kong) = access(&plugin, request(&dicts));
        assert!(refused(&kong));
        assert!(kong.response_headers.is_empty());
    }

    #[test]
    fn limit_by_variants_count_separately_and_fall_back_to_the_ip() {
        let dicts = MockSharedDicts::new();
        let by_header = plugin(
            serde_json::json!({ "hour": 1, "limit_by": "header", "header_name": "X-Tenant" }),
        );
        let (_, kong) = access(&by_header, request(&dicts).with_header("x-tenant", "a"));
        assert!(!refused(&kong));
        let (_, kong) = access(&by_header, request(&dicts).with_header("x-tenant", "b"));
        assert!(!refused(&kong), "another tenant");
        let (_, kong) = access(&by_header, request(&dicts).with_header("x-tenant", "a"));
        assert!(refused(&kong), "tenant a again");
        let (_, kong) = access(&by_header, request(&dicts));
        assert!(!refused(&kong), "no header: the client IP");

        let by_path = plugin(serde_json::json!({ "hour": 1, "limit_by": "path", "path": "/p" }));
        let mut kong = request(&dicts);
        kong.path = b"/p".to_vec();
        let (_, kong) = access(&by_path, kong);
        assert!(!refused(&kong));
        assert!(kong.calls.contains(&"request.get_path"));

        let dicts = MockSharedDicts::new();
        let by_consumer = plugin(serde_json::json!({ "hour": 1 }));
        let alice = request(&dicts)
            .with_consumer(serde_json::json!({"id": "c-alice", "username": "alice"}));
        let (_, kong) = access(&by_consumer, alice.clone());
        assert!(!refused(&kong));
        let (_, kong) = access(&by_consumer, alice);
        assert!(refused(&kong));
        let (_, kong) = access(&by_consumer, request(&dicts));
        assert!(!refused(&kong), "anonymous: by IP");

        let by_service = plugin(serde_json::json!({ "hour": 1, "limit_by": "service" }));
        let (_, kong) = access(&by_service, request(&dicts));
        assert!(!refused(&kong));
        assert!(kong.calls.contains(&"router.get_service"));
    }

    #[test]
    fn a_missing_dict_is_a_500_unless_fault_tolerant() {
        let strict = plugin(serde_json::json!({ "hour": 1, "fault_tolerant": false }));
        let (flow, _) = access(&strict, MockPdk::get("/"));
        assert!(flow.unwrap_err().to_string().contains(COUNTERS_DICT));
        let tolerant = plugin(serde_json::json!({ "hour": 1 }));
        let (flow, kong) = access(&tolerant, MockPdk::get("/"));
        assert_eq!(flow.unwrap(), Flow::Continue);
        assert!(kong.response_headers.is_empty());
        assert!(
            kong.logs
                .iter()
                .any(|(_, m)| m.starts_with("failed to get usage"))
        );
    }

    #[test]
    fn the_constructor_refuses_what_kongs_schema_refuses() {
        let refuse = |json: serde_json::Value| {
            RateLimiting::new(config(json))
                .unwrap_err()
                .message()
                .to_string()
        };
        assert!(refuse(serde_json::json!({})).starts_with("at least one of these fields"));
        assert_eq!(
            refuse(serde_json::json!({ "second": 10, "minute": 5 })),
            "The limit for minute(5.0) cannot be lower than the limit for second(10.0)"
        );
        assert_eq!(
            refuse(serde_json::json!({ "second": 1, "sync_rate": 1 })),
            "sync_rate can only be used with the redis policy"
        );
        assert_eq!(
            refuse(serde_json::json!({ "second": 1, "policy": "redis",
                                       "redis": { "host": "r" }, "sync_rate": 0.01 })),
            "sync_rate must be greater than 0.02, or -1 to disable"
        );
        assert!(
            refuse(serde_json::json!({ "second": 1, "policy": "redis" })).contains("redis.host")
        );
        assert!(
            refuse(serde_json::json!({ "second": 1, "limit_by": "header" }))
                .contains("header_name")
        );
        assert!(refuse(serde_json::json!({ "second": 1, "limit_by": "path" })).contains("path"));
        assert!(
            RateLimiting::new(config(serde_json::json!({
                "second": 1, "policy": "redis", "redis": { "host": "r" }, "sync_rate": 0.5
            })))
            .is_ok()
        );
    }

    #[test]
    fn windows_start_on_utc_boundaries() {
        // 2024-02-29T13:45:30Z
        let t = 1_709_214_330;
        assert_eq!(Period::Second.start(t), t);
        assert_eq!(Period::Minute.start(t), 1_709_214_300);
        assert_eq!(Period::Hour.start(t), 1_709_211_600);
        assert_eq!(Period::Day.start(t), 1_709_164_800);
        assert_eq!(Period::Month.start(t), 1_706_745_600); // 2024-02-01
        assert_eq!(Period::Year.start(t), 1_704_067_200); // 2024-01-01
        assert_eq!(
            civil_from_days(days_from_civil(1999, 12, 31)),
            (1999, 12, 31)
        );
    }

    #[test]
    fn only_an_async_access_is_registered() {
        assert_eq!(RateLimiting::PHASES, &[Phase::Access]);
        assert_eq!(RateLimiting::ASYNC_PHASES, &[Phase::Access]);
    }

    #[test]
    fn redis_policy_counts_across_instances_in_one_round_trip_and_fails_as_configured() {
        let server = crate::test_support::RedisServer::start(&[]);
        let port = server.port;
        let conf = |tolerant: bool| {
            serde_json::json!({ "minute": 3, "hour": 1000, "limit_by": "ip", "policy": "redis",
                                "fault_tolerant": tolerant,
                                "redis": { "host": "127.0.0.1", "port": port } })
        };
        // two nodes: two instances of the same plugin entity
        let nodes = [plugin(conf(true)), plugin(conf(true))];
        let mut passed = 0;
        for n in 0..6 {
            let (flow, kong) = access(&nodes[n % 2], MockPdk::get("/"));
            assert_eq!(flow.unwrap(), Flow::Continue);
            if !refused(&kong) {
                passed += 1;
            }
            assert!(header(&kong, "ratelimit-limit").is_some());
        }
        // (a minute may turn in between: then at most twice the limit)
        assert!(passed == 3 || passed == 6, "{passed}");
        drop(server);
        let (flow, kong) = access(&nodes[0], MockPdk::get("/"));
        assert_eq!(flow.unwrap(), Flow::Continue, "fault tolerant: passes");
        assert!(kong.response_headers.is_empty(), "and says nothing");
        let strict = plugin(conf(false));
        let (flow, _) = access(&strict, MockPdk::get("/"));
        assert!(
            flow.unwrap_err()
                .to_string()
                .contains(&format!("127.0.0.1:{port}"))
        );
    }
}
