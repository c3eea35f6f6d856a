//! The PDK handle a plugin receives in every phase: Kong's `kong.*` API,
//! typed and byte-safe.
//!
//! [`Pdk`] groups Kong's namespaces the way Kong does:
//! `kong.request.get_header("x")` is `kong.request().get_header("x")`,
//! `kong.service.request.set_header(…)` is `kong.service_request().set_header(…)`.
//! Header values, paths and bodies are bytes (`Vec<u8>`/`&[u8]`), never
//! `String`: HTTP does not promise UTF-8, and nothing here converts lossily.
//!
//! Two implementations: the Lua PDK (crate-private) calls the real `kong` global
//! inside the worker, and [`MockPdk`](mock::MockPdk) serves canned requests and
//! records every call for `cargo test`.
//!
//! Every call returns a [`Result`]: a Lua error raised by Kong (a call not
//! allowed in the current phase, say) reaches the Rust code as an `Err`.
//!
//! What is deferred, and why:
//! - `kong.response.exit` yields inside Kong's access phase, and Rust cannot
//!   yield, so it is not a PDK call here but a phase's return value
//!   ([`Flow::Exit`](crate::Flow::Exit)), performed by the Lua side.
//! - Reading the request body may yield too: set
//!   [`Plugin::READS_REQUEST_BODY`](crate::Plugin::READS_REQUEST_BODY) and the
//!   Lua side reads it before entering Rust.
//! - Writes (`kong.response.set_header/add_header/clear_header/set_status`,
//!   `kong.service.request.set_header/add_header/clear_header/set_headers/
//!   set_path/set_raw_query/set_method/set_raw_body`) are queued and applied
//!   in order by the Lua side when the phase returns, because one call from
//!   Rust into Lua costs more than the write itself. Any read first applies
//!   what is queued, so a plugin reads what it wrote; a write Kong refuses
//!   fails the next read, or the phase (500). A failed phase's queued writes
//!   are dropped.
//!
//! What skips Lua: inside nginx, where Kong allows the call in the current
//! phase, `kong.request().get_header(name)`,
//! `kong.service_request().set_header(name, value)` (except `host` and
//! `:authority`) and `kong.response().set_header(name, value)` (except
//! `Transfer-Encoding`) go straight through the lua-nginx-module C function
//! Kong's own implementation ends in (`ngx` module); a direct write first
//! applies what is queued, so effects keep their order, and takes effect at
//! once (a later failure of the phase does not undo it, as for a Lua
//! plugin). Elsewhere (outside nginx, other phases, those names) they are
//! `kong.*` calls as above.

pub(crate) mod actions;
pub(crate) mod json;
pub(crate) mod lua;
pub mod mock;
pub(crate) mod ngx;

use crate::error::Result;
use serde_json::{Map, Value as Json};
use std::time::Duration;

/// Header name/value pairs. Names are as Kong reports them (lower-case for
/// request headers); a header sent several times appears once per value.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A header value as Kong's PDK writes it: an empty one becomes `" "`
/// (`normalize_header` in kong/pdk/private/checks.lua), so the header is
/// sent rather than removed.
pub(crate) fn kong_header_value(value: &[u8]) -> &[u8] {
    if value.is_empty() { b" " } else { value }
}

/// Only this crate implements the PDK traits (the Lua PDK, the mock), so a
/// method added to one of them is not a breaking change for plugins.
pub(crate) mod sealed {
    /// The seal of the PDK traits.
    pub trait Sealed {}
}

/// The `kong` global, as seen from a phase method.
///
/// The PDK traits are sealed: plugins call them, only kong-rs implements
/// them ([`MockPdk`](crate::MockPdk) is the one for tests), so the PDK can
/// grow without breaking a plugin.
///
/// ```compile_fail
/// // A plugin crate cannot implement a PDK trait:
/// struct MyLog;
/// impl kong_rs::pdk::Log for MyLog {
///     fn log(&mut self, _: kong_rs::LogLevel, _: &str) -> kong_rs::Result<()> {
///         Ok(())
///     }
/// }
/// ```
pub trait Pdk: sealed::Sealed {
    /// `kong.log`.
    fn log(&mut self) -> &mut dyn Log;
    /// `kong.request`: the client's request.
    fn request(&mut self) -> &mut dyn Request;
    /// `kong.response`: the response to the client.
    fn response(&mut self) -> &mut dyn Response;
    /// `kong.service.request`: the request Kong sends upstream.
    fn service_request(&mut self) -> &mut dyn ServiceRequest;
    /// `kong.service.response`: the upstream's response.
    fn service_response(&mut self) -> &mut dyn ServiceResponse;
    /// `kong.client`: the client connection and the authenticated consumer.
    fn client(&mut self) -> &mut dyn Client;
    /// `kong.ctx.shared` and `kong.ctx.plugin`.
    fn ctx(&mut self) -> &mut dyn Ctx;
    /// `kong.nginx`.
    fn nginx(&mut self) -> &mut dyn Nginx;
    /// `kong.router`.
    fn router(&mut self) -> &mut dyn Router;
    /// `ngx.shared[name]`: the `lua_shared_dict` called `name`, shared by
    /// every worker of this nginx (see [`SharedDict`]). Kong declares
    /// `kong`, `kong_db_cache`, `kong_rate_limiting_counters`, … for its own
    /// use; a plugin's own dict is declared in kong.conf with
    /// `nginx_http_lua_shared_dict = <name> <size>`.
    ///
    /// # Errors
    /// When nginx has no shared dict called `name` (the message names it).
    fn shared_dict(&mut self, name: &str) -> Result<&mut dyn SharedDict>;
    /// `kong.plugin`: about the plugin configuration that is running.
    fn plugin(&mut self) -> &mut dyn PluginInfo;
}

/// Implements [`Pdk`] for a type that implements every namespace trait
/// itself: each accessor returns `self`.
macro_rules! namespaces {
    ($ty:ty) => {
        impl $crate::pdk::sealed::Sealed for $ty {}
        impl $crate::pdk::Pdk for $ty {
            fn log(&mut self) -> &mut dyn $crate::pdk::Log {
                self
            }
            fn request(&mut self) -> &mut dyn $crate::pdk::Request {
                self
            }
            fn response(&mut self) -> &mut dyn $crate::pdk::Response {
                self
            }
            fn service_request(&mut self) -> &mut dyn $crate::pdk::ServiceRequest {
                self
            }
            fn service_response(&mut self) -> &mut dyn $crate::pdk::ServiceResponse {
                self
            }
            fn client(&mut self) -> &mut dyn $crate::pdk::Client {
                self
            }
            fn ctx(&mut self) -> &mut dyn $crate::pdk::Ctx {
                self
            }
            fn nginx(&mut self) -> &mut dyn $crate::pdk::Nginx {
                self
            }
            fn router(&mut self) -> &mut dyn $crate::pdk::Router {
                self
            }
            fn shared_dict(
                &mut self,
                name: &str,
            ) -> $crate::error::Result<&mut dyn $crate::pdk::SharedDict> {
                self.open_shared_dict(name)
            }
            fn plugin(&mut self) -> &mut dyn $crate::pdk::PluginInfo {
                self
            }
        }
    };
}
pub(crate) use namespaces;

/// Log levels of `kong.log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `kong.log.err`
    Err,
    /// `kong.log.warn`
    Warn,
    /// `kong.log.notice`
    Notice,
    /// `kong.log.info`
    Info,
    /// `kong.log.debug`
    Debug,
}

impl LogLevel {
    /// The `kong.log` function name for this level.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Err => "err",
            LogLevel::Warn => "warn",
            LogLevel::Notice => "notice",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// `kong.log`: writes to the nginx error log, prefixed with the plugin name by Kong.
pub trait Log: sealed::Sealed {
    /// Logs `message` at `level`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()>;

    /// `kong.log.err`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn err(&mut self, message: &str) -> Result<()> {
        self.log(LogLevel::Err, message)
    }
    /// `kong.log.warn`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn warn(&mut self, message: &str) -> Result<()> {
        self.log(LogLevel::Warn, message)
    }
    /// `kong.log.notice`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn notice(&mut self, message: &str) -> Result<()> {
        self.log(LogLevel::Notice, message)
    }
    /// `kong.log.info`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn info(&mut self, message: &str) -> Result<()> {
        self.log(LogLevel::Info, message)
    }
    /// `kong.log.debug`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn debug(&mut self, message: &str) -> Result<()> {
        self.log(LogLevel::Debug, message)
    }

    /// `kong.log.serialize()`: what Kong's logging plugins log about the
    /// request (request, response, latencies, route, service, consumer,
    /// `authenticated_entity`, …, with values added by
    /// `kong.log.set_serialize_value`), as JSON. Kong allows it in the `log`
    /// phase only.
    ///
    /// The Lua table becomes JSON as `cjson.encode` would write it: a table
    /// whose keys are 1..n (or that carries cjson's `array_mt`) is an array,
    /// any other non-empty table an object, an empty one `{}` (`[]` with
    /// cjson's array metatables or `cjson.empty_array`); `ngx.null` is
    /// `null`; integral numbers are integers; non-numeric-or-string keys,
    /// functions and userdata are left out (`null` inside an array); a
    /// string that is not UTF-8 is `{"base64": "…"}` (lossless, as
    /// `rs-file-log` writes bytes); an object key that is not UTF-8 is
    /// converted lossily (U+FFFD).
    ///
    /// # Errors
    /// Outside the `log` phase, Kong's `function cannot be called in access
    /// phase (only in: log)`; when the table nests deeper than 100 levels.
    fn serialize(&mut self) -> Result<Json>;
}

/// A query-string argument's value (`kong.request.get_query_arg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryValue {
    /// `?flag` with no `=`: Kong returns `true`.
    Flag,
    /// `?name=value` (the value may be empty).
    Value(Vec<u8>),
}

/// `kong.request`: the request as the client sent it.
///
/// Every method's `# Errors`: when the Lua side raises, e.g. the call is not
/// available in the current phase.
pub trait Request: sealed::Sealed {
    /// `get_header(name)`: the first value of header `name` (case-insensitive),
    /// as Kong 3.6+ answers: a header sent twice (`X-Dup: a`, `X-Dup: b`)
    /// gives `a` (Kong before 3.6 on nginx >= 1.23 gave `a, b`).
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// `get_headers()`: every header, one pair per value.
    fn get_headers(&mut self) -> Result<Headers>;
    /// `get_method()`: `"GET"`, `"POST"`, …
    fn get_method(&mut self) -> Result<String>;
    /// `get_path()`: the normalised path, without the query.
    fn get_path(&mut self) -> Result<Vec<u8>>;
    /// `get_path_with_query()`: path and `?query` when there is one.
    fn get_path_with_query(&mut self) -> Result<Vec<u8>>;
    /// `get_raw_query()`: the query string without `?` (empty when none).
    fn get_raw_query(&mut self) -> Result<Vec<u8>>;
    /// `get_query_arg(name)`: the first value of query argument `name`.
    fn get_query_arg(&mut self, name: &str) -> Result<Option<QueryValue>>;
    /// `get_query()`: every query argument, one pair per value.
    fn get_query(&mut self) -> Result<Vec<(Vec<u8>, QueryValue)>>;
    /// `get_scheme()`: `"http"` or `"https"`.
    fn get_scheme(&mut self) -> Result<String>;
    /// `get_host()`: the host the client asked for.
    fn get_host(&mut self) -> Result<String>;
    /// `get_port()`: the port the client connected to.
    fn get_port(&mut self) -> Result<u16>;
    /// `get_http_version()`: `1.0`, `1.1`, `2.0`…
    fn get_http_version(&mut self) -> Result<Option<f64>>;
    /// `get_raw_body()`: the body, empty when the request has none. `None`
    /// when nginx buffered it to a file because it is larger than
    /// `client_body_buffer_size` (Kong's default: 8k), where Kong's
    /// `get_raw_body` answers `nil, "request body did not fit into client
    /// body buffer, …"`; a plugin decides what that means for it. Declare
    /// [`Plugin::READS_REQUEST_BODY`](crate::Plugin::READS_REQUEST_BODY) so
    /// the body is read before the phase (reading may yield).
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>>;
    /// `get_start_time()`: when the request started, in ms since the epoch.
    fn get_start_time(&mut self) -> Result<f64>;
}

/// `kong.response`: the response Kong sends to the client.
///
/// Every method's `# Errors`: when the Lua side raises, e.g. headers were
/// already sent or the value is not allowed.
pub trait Response: sealed::Sealed {
    /// `get_status()`.
    fn get_status(&mut self) -> Result<u16>;
    /// `get_header(name)`: the first value.
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// `get_headers()`: every header, one pair per value.
    fn get_headers(&mut self) -> Result<Headers>;
    /// `set_status(status)`.
    fn set_status(&mut self, status: u16) -> Result<()>;
    /// `set_header(name, value)`: replaces any existing value; an empty value
    /// is sent as `" "`, as Kong does (kong/pdk/private/checks.lua).
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// `add_header(name, value)`: adds a value, keeping existing ones.
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// `clear_header(name)`.
    fn clear_header(&mut self, name: &str) -> Result<()>;
}

/// `kong.service.request`: the request Kong will send upstream.
///
/// Every method's `# Errors`: when the Lua side raises, e.g. the call is
/// made after the request was sent.
pub trait ServiceRequest: sealed::Sealed {
    /// `set_header(name, value)`; an empty value is sent as `" "`, as Kong
    /// does (kong/pdk/private/checks.lua).
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// `add_header(name, value)`.
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()>;
    /// `clear_header(name)`.
    fn clear_header(&mut self, name: &str) -> Result<()>;
    /// `set_headers(headers)`: sets each header, replacing existing values.
    fn set_headers(&mut self, headers: &[(&str, &[u8])]) -> Result<()>;
    /// `set_path(path)`.
    fn set_path(&mut self, path: &[u8]) -> Result<()>;
    /// `set_raw_query(query)`.
    fn set_raw_query(&mut self, query: &[u8]) -> Result<()>;
    /// `set_query(args)`: replaces the query with these arguments.
    fn set_query(&mut self, args: &[(&[u8], &[u8])]) -> Result<()>;
    /// `set_method(method)`.
    fn set_method(&mut self, method: &str) -> Result<()>;
    /// `set_raw_body(body)`.
    fn set_raw_body(&mut self, body: &[u8]) -> Result<()>;
}

/// `kong.service.response`: what the upstream answered.
///
/// Every method's `# Errors`: when the Lua side raises.
pub trait ServiceResponse: sealed::Sealed {
    /// `get_status()`: `None` before the upstream answered.
    fn get_status(&mut self) -> Result<Option<u16>>;
    /// `get_header(name)`: the first value.
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// `get_headers()`.
    fn get_headers(&mut self) -> Result<Headers>;
    /// `get_raw_body()`: only in the `response` phase (buffered proxying).
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>>;
}

/// A Kong entity: its id, its name and, for consumers and credentials,
/// every field it has (routes, services, consumers, credentials).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entity {
    /// The entity's UUID (empty when the table has no string `id`).
    pub id: String,
    /// Its `name` (`username` for consumers), when it has one.
    pub name: Option<String>,
    /// Every field of the entity as Kong holds it (`id`, `username`,
    /// `custom_id`, `created_at`, `tags`, … for a consumer; whatever the
    /// authenticating plugin gave for a credential), converted as
    /// [`Log::serialize`] converts tables. Filled by
    /// [`Client::get_consumer`] and [`Client::get_credential`]; empty for
    /// [`Router::get_route`] and [`Router::get_service`], which are read on
    /// hot paths and give `id` and `name` only.
    pub fields: Map<String, Json>,
}

impl Entity {
    /// An entity with `id` and `name` and no other field.
    pub fn new(id: impl Into<String>, name: Option<&str>) -> Entity {
        Entity {
            id: id.into(),
            name: name.map(str::to_string),
            fields: Map::new(),
        }
    }

    /// The entity whose fields are `fields`: `id` and `name` are read from
    /// the `id` and `name_field` fields (`"username"` for a consumer)
    /// when they are strings.
    pub fn from_fields(fields: Map<String, Json>, name_field: &str) -> Entity {
        let text = |key: &str| fields.get(key).and_then(Json::as_str).map(str::to_string);
        Entity {
            id: text("id").unwrap_or_default(),
            name: text(name_field),
            fields,
        }
    }

    /// A consumer from its JSON, e.g. as the Admin API returns it
    /// (`{"id": …, "username": …, "created_at": …}`); the name is the
    /// `username`. A value that is not an object gives an empty entity.
    pub fn consumer(json: Json) -> Entity {
        match json {
            Json::Object(fields) => Entity::from_fields(fields, "username"),
            _ => Entity::default(),
        }
    }

    /// The value of field `name`, if the entity has it.
    pub fn field(&self, name: &str) -> Option<&Json> {
        self.fields.get(name)
    }

    /// The entity as a JSON object, e.g. for
    /// [`Client::authenticate`]: its fields, or `{"id", "name"}` when it
    /// has none.
    pub fn to_json(&self) -> Json {
        if !self.fields.is_empty() {
            return Json::Object(self.fields.clone());
        }
        let mut fields = Map::new();
        fields.insert("id".into(), Json::String(self.id.clone()));
        if let Some(name) = &self.name {
            fields.insert("name".into(), Json::String(name.clone()));
        }
        Json::Object(fields)
    }
}

/// Copies `value` into `out` and returns its length, or fails naming `what`.
fn copy_into(value: &[u8], out: &mut [u8], what: &str) -> Result<usize> {
    match out.get_mut(..value.len()) {
        Some(room) => {
            room.copy_from_slice(value);
            Ok(value.len())
        }
        None => Err(crate::Error::msg(format!(
            "{what}: {} bytes do not fit into a buffer of {}",
            value.len(),
            out.len()
        ))),
    }
}

/// `kong.client`: the connection and the authenticated consumer.
///
/// Every method's `# Errors`: when the Lua side raises.
pub trait Client: sealed::Sealed {
    /// `get_ip()`: the peer address.
    fn get_ip(&mut self) -> Result<String>;
    /// `get_forwarded_ip()`: the client address after trusted proxies.
    fn get_forwarded_ip(&mut self) -> Result<String>;
    /// `get_forwarded_ip()` written into `out`, without allocating (for a
    /// hot path: a rate limiter's key); returns its length. 64 bytes hold
    /// any IPv4 or IPv6 address.
    ///
    /// # Errors
    /// As `get_forwarded_ip`; or the address does not fit into `out`.
    fn get_forwarded_ip_into(&mut self, out: &mut [u8]) -> Result<usize> {
        let ip = self.get_forwarded_ip()?;
        copy_into(ip.as_bytes(), out, "client.get_forwarded_ip")
    }
    /// `get_port()`: the peer port.
    fn get_port(&mut self) -> Result<u16>;
    /// `get_consumer()`: the authenticated consumer (`name` is its
    /// username), with all its fields in [`Entity::fields`]. Kong allows it
    /// from `access` on.
    fn get_consumer(&mut self) -> Result<Option<Entity>>;
    /// `get_credential()`: the credential that authenticated it (`name` is
    /// its `name` field, if any), with all its fields in
    /// [`Entity::fields`].
    fn get_credential(&mut self) -> Result<Option<Entity>>;
    /// `authenticate(consumer, credential)`: makes `consumer` (a consumer
    /// entity, at least its `id`, e.g. as the Admin API returns it) and/or
    /// `credential` (a table of the authenticating plugin's; Kong's log
    /// serializer reads its `id` and `consumer_id`) the request's
    /// authenticated ones, as an authentication plugin does. `None`
    /// clears that one. Kong then runs the plugins configured for that
    /// consumer (by its `id`) and `get_consumer`/`get_credential` return
    /// them. Kong does not look the consumer up: a plugin that only knows a
    /// username or key must find the entity itself (Kong's
    /// `kong.client.load_consumer` reads the database and may yield, so it
    /// is not offered here).
    ///
    /// JSON becomes Lua as `cjson.decode` would make it, except that an
    /// object's `null` fields are left out (Kong's entities carry none)
    /// and arrays get cjson's `array_mt`. Does not yield: it sets
    /// `ngx.ctx` fields. Pending deferred writes are applied first.
    ///
    /// # Errors
    /// Kong's: outside the `access` phase (`function cannot be called in
    /// header_filter phase (only in: access)`); both `None` (`either
    /// credential or consumer must be provided`); a value that is not an
    /// object or array (`consumer must be a table or nil`, `credential must
    /// be a table or nil`).
    fn authenticate(&mut self, consumer: Option<&Json>, credential: Option<&Json>) -> Result<()>;
    /// `load_consumer(id, by_username)`: the consumer with this id (or, when
    /// `by_username`, this username, if no id matches), `None` when there is
    /// none. On Kong it reads the database, which may yield: the call is a
    /// future, to await in an async phase (see [`crate::io`]); it does not
    /// borrow the PDK.
    ///
    /// # Errors
    /// Awaited outside an async phase; Kong's error (a malformed id, the
    /// database unavailable).
    fn load_consumer(&mut self, id: &str, by_username: bool)
    -> LocalFuture<Result<Option<Entity>>>;
}

/// A PDK call that may yield in Kong, as a future that does not borrow the
/// PDK: await it in an async phase.
pub type LocalFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// A value stored in `kong.ctx`, shared with Lua plugins.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `nil`.
    Nil,
    /// A boolean.
    Boolean(bool),
    /// An integral number.
    Integer(i64),
    /// A floating point number.
    Number(f64),
    /// A Lua string: bytes.
    String(Vec<u8>),
    /// A Lua table, as its key/value pairs (order unspecified).
    Table(Vec<(Value, Value)>),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::String(value.as_bytes().to_vec())
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Boolean(value)
    }
}

/// `kong.ctx.shared` (shared by all plugins of a request) and `kong.ctx.plugin`
/// (this plugin's own, per request).
///
/// Every method's `# Errors`: when the Lua side raises, or a Lua value has a
/// type [`Value`] cannot hold (functions, userdata).
pub trait Ctx: sealed::Sealed {
    /// `kong.ctx.shared[key]`.
    fn shared_get(&mut self, key: &str) -> Result<Value>;
    /// `kong.ctx.shared[key] = value`.
    fn shared_set(&mut self, key: &str, value: Value) -> Result<()>;
    /// `kong.ctx.plugin[key]`.
    fn plugin_get(&mut self, key: &str) -> Result<Value>;
    /// `kong.ctx.plugin[key] = value`.
    fn plugin_set(&mut self, key: &str, value: Value) -> Result<()>;
}

/// `kong.nginx`. Kong's PDK has no `kong.nginx.get_var` (only the
/// plugin-server shim had one); nginx variables a plugin needs come through
/// the other namespaces.
pub trait Nginx: sealed::Sealed {
    /// `kong.nginx.get_subsystem()`: `"http"` or `"stream"`.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn get_subsystem(&mut self) -> Result<String>;
}

/// `kong.router`: what the router matched.
///
/// Every method's `# Errors`: when the Lua side raises.
pub trait Router: sealed::Sealed {
    /// `get_route()`: the matched route.
    fn get_route(&mut self) -> Result<Option<Entity>>;
    /// `get_service()`: the matched route's service.
    fn get_service(&mut self) -> Result<Option<Entity>>;
}

/// `kong.plugin`: the plugin configuration (the plugin entity) whose phase
/// is running.
pub trait PluginInfo: sealed::Sealed {
    /// `kong.plugin.get_id()`: the id of the plugin entity being run (the
    /// same on every node and every worker, and across changes of its
    /// config), `None` outside a plugin's phase. It is constant for one
    /// instance of your [`Plugin`](crate::Plugin): read it once and keep
    /// it, e.g. to name keys of counters shared between nodes.
    ///
    /// # Errors
    /// When the Lua side raises.
    fn get_id(&mut self) -> Result<Option<String>>;
}

/// `ngx.shared.DICT`: a `lua_shared_dict`, one memory zone shared by every
/// worker of this nginx (and kept across `kong reload`), for counters,
/// locks and small caches. No call yields.
///
/// Keys and values are bytes. A value stored as a number (by
/// [`incr`](SharedDict::incr), or by Lua code) reads back as its decimal
/// text (`b"42"`; integral numbers without a fraction, others in Rust's
/// shortest form, e.g. `b"0.5"`), a boolean stored by Lua as `b"true"` or
/// `b"false"`.
///
/// A `ttl` of `None` never expires; `Some(ttl)` expires after `ttl`,
/// rounded up to whole milliseconds (ngx.shared's resolution; a zero or
/// sub-millisecond `ttl` is 1 ms, since ngx.shared's 0 would mean
/// "never"). An expired key reads as missing.
///
/// Every method's `# Errors`: what `ngx.shared` answers with `nil, err`
/// (`"no memory"` when the zone is full and nothing can be evicted,
/// `"key too long"` above 65535 bytes, `"empty key"`), as an `Err` naming
/// the dict and the method.
pub trait SharedDict: sealed::Sealed {
    /// The dict's name.
    fn name(&self) -> &str;
    /// `dict:get(key)`: the value, `None` when the key is missing or
    /// expired.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// `dict:set(key, value, ttl)`: stores `value`, replacing any value
    /// (evicting least recently used keys when the zone is full).
    fn set(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()>;
    /// `dict:add(key, value, ttl)`: stores `value` only when the key is
    /// missing (or expired); `false` when it exists (ngx.shared's
    /// `"exists"`), so it can serve as a lock.
    fn add(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool>;
    /// `dict:incr(key, by, init, ttl)`: adds `by` to the number stored at
    /// `key` and returns the result. A missing key starts at `init` (and
    /// then expires after `ttl`, ngx.shared's `init_ttl`; an existing key
    /// keeps its expiry). Numbers are Lua numbers (doubles): exact up to
    /// 2^53.
    ///
    /// Errors (besides the common ones): a missing key without `init`
    /// (`"not found"`), a value that is not a number (`"not a number"`),
    /// a `ttl` without `init` (ngx.shared's `must provide "init" when
    /// providing "init_ttl"`).
    fn incr(
        &mut self,
        key: &[u8],
        by: i64,
        init: Option<i64>,
        ttl: Option<Duration>,
    ) -> Result<i64>;
    /// `dict:delete(key)`: removes the key (nothing when it is missing).
    fn delete(&mut self, key: &[u8]) -> Result<()>;
}

/// A ttl as ngx.shared's seconds: `0` (never) for `None`, otherwise at
/// least one millisecond, rounded up to whole milliseconds.
pub(crate) fn ttl_seconds(ttl: Option<Duration>) -> f64 {
    match ttl {
        None => 0.0,
        Some(ttl) => {
            let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
            ms as f64 / 1000.0
        }
    }
}

/// A number as a shared dict value reads back: integral ones as integers,
/// others in Rust's shortest round-trip form.
pub(crate) fn number_bytes(n: f64) -> Vec<u8> {
    if n.fract() == 0.0 && n.abs() < 9.2e18 {
        (n as i64).to_string().into_bytes()
    } else {
        n.to_string().into_bytes()
    }
}
