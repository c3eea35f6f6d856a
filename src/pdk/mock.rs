//! [`MockPdk`]: a PDK for `cargo test`, with no Lua and no nginx.
//!
//! In the spirit of go-pdk's test harness: you describe the client request,
//! run phases against the mock, then inspect what the plugin did — the
//! response and upstream request it shaped, the log lines it wrote, the
//! ordered list of every PDK call. [`MockPdk::fail`] makes one PDK function
//! raise, the way Kong raises when a call is not allowed in a phase.

use super::{
    Client, Ctx, Entity, Headers, Log, LogLevel, Nginx, PluginInfo, QueryValue, Request, Response,
    Router, ServiceRequest, ServiceResponse, SharedDict, Value, kong_header_value, number_bytes,
    ttl_seconds,
};
use crate::error::{Error, ErrorKind, Result};
use crate::plugin::{Flow, Phase, Plugin};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A recording, canned PDK. Public fields are the state; set them up before a
/// phase and read them after.
#[derive(Clone, Debug)]
pub struct MockPdk {
    /// The client request's method.
    pub method: String,
    /// `kong.plugin.get_id()`: the running plugin entity's id.
    pub plugin_id: Option<String>,
    /// The client request's path (no query).
    pub path: Vec<u8>,
    /// The raw query string (no `?`).
    pub query: Vec<u8>,
    /// The client request's headers (names matched case-insensitively).
    pub request_headers: Headers,
    /// The client request's body (`None`: the request has none).
    pub request_body: Option<Vec<u8>>,
    /// The body was larger than `client_body_buffer_size` and nginx
    /// buffered it to a file: `get_raw_body` then answers `None`, as Kong's
    /// answers `nil, err`.
    pub request_body_in_file: bool,
    /// `"http"` or `"https"`.
    pub scheme: String,
    /// The requested host.
    pub host: String,
    /// The port the client connected to.
    pub port: u16,
    /// The HTTP version.
    pub http_version: f64,
    /// Request start, ms since the epoch.
    pub start_time: f64,
    /// The client address.
    pub client_ip: String,
    /// The client address after trusted proxies.
    pub forwarded_ip: String,
    /// The client port.
    pub client_port: u16,
    /// The authenticated consumer (see [`MockPdk::with_consumer`]); set by
    /// `authenticate` as Kong sets it.
    pub consumer: Option<Entity>,
    /// The consumers `load_consumer` finds (entities as JSON: `id`,
    /// `username`, ...), as if in Kong's database.
    pub known_consumers: Vec<Json>,
    /// The credential used; set by `authenticate`.
    pub credential: Option<Entity>,
    /// What `kong.log.serialize()` returns; `None`: a Kong-shaped object
    /// built from this mock's request, response, route, service and
    /// consumer (see [`MockPdk::default_serialized`]).
    pub serialized: Option<Json>,
    /// The phase running, set by [`run_request`] (`None` outside it). When
    /// set, the calls Kong allows in one phase only check it with Kong's
    /// message: `client.authenticate` (access) and `log.serialize` (log).
    /// Other calls are not phase-checked by the mock (use
    /// [`MockPdk::fail`]).
    pub phase: Option<Phase>,
    /// The shared dicts (`ngx.shared`): none unless declared with
    /// [`MockPdk::with_shared_dict`]. Clones share them, as workers do.
    pub shared_dicts: MockSharedDicts,
    /// The matched route.
    pub route: Option<Entity>,
    /// The matched service.
    pub service: Option<Entity>,
    /// The response status.
    pub status: u16,
    /// The response headers.
    pub response_headers: Headers,
    /// The upstream request's headers (start as a copy of the client's with [`MockPdk::get`]).
    pub upstream_headers: Headers,
    /// The upstream request's path.
    pub upstream_path: Vec<u8>,
    /// The upstream request's query.
    pub upstream_query: Vec<u8>,
    /// The upstream request's method.
    pub upstream_method: String,
    /// The upstream request's body, when a plugin set it.
    pub upstream_body: Option<Vec<u8>>,
    /// The upstream response status (`None`: not proxied yet).
    pub service_status: Option<u16>,
    /// The upstream response headers.
    pub service_headers: Headers,
    /// The upstream response body.
    pub service_body: Option<Vec<u8>>,
    /// `kong.ctx.shared`.
    pub ctx_shared: Vec<(String, Value)>,
    /// `kong.ctx.plugin`.
    pub ctx_plugin: Vec<(String, Value)>,
    /// The nginx subsystem, `"http"` unless set to `"stream"`.
    pub subsystem: String,
    /// Every `kong.log.*` line.
    pub logs: Vec<(LogLevel, String)>,
    /// Every PDK call, in order, as `"namespace.function"` (shared dict
    /// calls: `"shared_dict"` when one is opened).
    pub calls: Vec<&'static str>,
    failures: Vec<(&'static str, String)>,
    // The dict `shared_dict` handed out last.
    open_dict: Option<MockSharedDict>,
}

impl Default for MockPdk {
    fn default() -> Self {
        MockPdk::get("/")
    }
}

impl MockPdk {
    /// A `GET` of `path_with_query` from 127.0.0.1 to `localhost:8000`, as
    /// routed to a route and service named `"test"`; the response is 200.
    pub fn get(path_with_query: &str) -> MockPdk {
        MockPdk::request("GET", path_with_query, None)
    }

    /// A request with `method`, `path_with_query` and an optional body.
    pub fn request(method: &str, path_with_query: &str, body: Option<&[u8]>) -> MockPdk {
        let (path, query) = match path_with_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_with_query, ""),
        };
        let entity = |id: &str| Some(Entity::new(id, Some("test")));
        MockPdk {
            method: method.to_string(),
            plugin_id: Some("00000000-0000-4000-8000-000000000003".to_string()),
            path: path.as_bytes().to_vec(),
            query: query.as_bytes().to_vec(),
            request_headers: vec![("host".to_string(), b"localhost".to_vec())],
            request_body: body.map(<[u8]>::to_vec),
            request_body_in_file: false,
            scheme: "http".to_string(),
            host: "localhost".to_string(),
            port: 8000,
            http_version: 1.1,
            start_time: 1_700_000_000_000.0,
            client_ip: "127.0.0.1".to_string(),
            forwarded_ip: "127.0.0.1".to_string(),
            client_port: 40000,
            consumer: None,
            known_consumers: Vec::new(),
            credential: None,
            serialized: None,
            phase: None,
            shared_dicts: MockSharedDicts::default(),
            route: entity("00000000-0000-4000-8000-000000000001"),
            service: entity("00000000-0000-4000-8000-000000000002"),
            status: 200,
            response_headers: Vec::new(),
            upstream_headers: vec![("host".to_string(), b"localhost".to_vec())],
            upstream_path: path.as_bytes().to_vec(),
            upstream_query: query.as_bytes().to_vec(),
            upstream_method: method.to_string(),
            upstream_body: None,
            service_status: None,
            service_headers: Vec::new(),
            service_body: None,
            ctx_shared: Vec::new(),
            ctx_plugin: Vec::new(),
            subsystem: "http".to_string(),
            logs: Vec::new(),
            calls: Vec::new(),
            failures: Vec::new(),
            open_dict: None,
        }
    }

    /// Sets the authenticated consumer from its JSON (as the Admin API
    /// returns it: `{"id": …, "username": …}`); `null` fields are dropped,
    /// as Kong's entities have none.
    pub fn with_consumer(mut self, consumer: Json) -> MockPdk {
        self.consumer = Some(entity_of(&consumer, "username"));
        self
    }

    /// Declares an empty shared dict `name` (`lua_shared_dict`), shared
    /// with every clone of this mock.
    pub fn with_shared_dict(self, name: &str) -> MockPdk {
        self.shared_dicts.declare(name);
        self
    }

    /// What `serialize()` returns when [`MockPdk::serialized`] is `None`:
    /// Kong's shape (kong/pdk/log.lua) from the mock's state — `request`
    /// (`method`, `uri`, `url`, `headers` with `authorization` redacted,
    /// `querystring`), `upstream_uri`, `response` (`status`, `headers`),
    /// `route`, `service`, `consumer`, `authenticated_entity`, `client_ip`,
    /// `started_at`, `source`, zero `latencies`, empty `tries`. Sizes,
    /// request id and workspace are left out.
    pub fn default_serialized(&self) -> Json {
        let mut uri = self.path.clone();
        if !self.query.is_empty() {
            uri.push(b'?');
            uri.extend_from_slice(&self.query);
        }
        let uri = String::from_utf8_lossy(&uri).into_owned();
        let mut upstream_uri = self.upstream_path.clone();
        if !self.upstream_query.is_empty() {
            upstream_uri.push(b'?');
            upstream_uri.extend_from_slice(&self.upstream_query);
        }
        let mut request_headers = header_map(&self.request_headers, true);
        for secret in ["authorization", "proxy-authorization"] {
            if let Some(value) = request_headers.get_mut(secret) {
                *value = json!("REDACTED");
            }
        }
        let mut querystring = Map::new();
        for (name, value) in parse_query(&self.query) {
            let value = match value {
                QueryValue::Flag => Json::Bool(true),
                QueryValue::Value(v) => Json::String(String::from_utf8_lossy(&v).into_owned()),
            };
            multi_insert(
                &mut querystring,
                String::from_utf8_lossy(&name).into_owned(),
                value,
            );
        }
        let mut root = json!({
            "request": {
                "method": self.method,
                "uri": uri,
                "url": format!("{}://{}:{}{}", self.scheme, self.host, self.port, uri),
                "headers": request_headers,
                "querystring": querystring,
            },
            "upstream_uri": String::from_utf8_lossy(&upstream_uri),
            "response": {
                "status": self.status,
                "headers": header_map(&self.response_headers, false),
            },
            "latencies": { "kong": 0, "proxy": 0, "request": 0, "receive": 0 },
            "tries": [],
            "client_ip": self.forwarded_ip,
            "started_at": self.start_time as i64,
            "source": if self.service_status.is_some() { "upstream" } else { "kong" },
        });
        let object = root.as_object_mut().expect("an object");
        for (key, entity) in [
            ("route", &self.route),
            ("service", &self.service),
            ("consumer", &self.consumer),
        ] {
            if let Some(entity) = entity {
                object.insert(key.into(), entity.to_json());
            }
        }
        if let Some(credential) = &self.credential {
            let consumer_id = credential
                .field("consumer_id")
                .cloned()
                .or_else(|| self.consumer.as_ref().map(|c| json!(c.id)));
            let mut entity = Map::new();
            entity.insert("id".into(), json!(credential.id));
            if let Some(consumer_id) = consumer_id {
                entity.insert("consumer_id".into(), consumer_id);
            }
            object.insert("authenticated_entity".into(), Json::Object(entity));
        }
        root
    }

    /// Kong's phase check for a call allowed in `allowed` only.
    fn check_phase(&self, allowed: Phase) -> Result<()> {
        match self.phase {
            Some(phase) if phase != allowed => Err(Error::new(
                ErrorKind::Pdk,
                format!(
                    "function cannot be called in {} phase (only in: {})",
                    phase.name(),
                    allowed.name()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Adds a client request header (also seen by the upstream request).
    pub fn with_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> MockPdk {
        let value = value.into();
        self.request_headers
            .push((name.to_ascii_lowercase(), value.clone()));
        self.upstream_headers
            .push((name.to_ascii_lowercase(), value));
        self
    }

    /// Makes the PDK function `call` (e.g. `"response.set_header"`) raise
    /// `message` on every call, as Kong does for a call made in a phase that
    /// forbids it.
    pub fn fail(mut self, call: &'static str, message: &str) -> MockPdk {
        self.failures.push((call, message.to_string()));
        self
    }

    /// The first value of response header `name`.
    pub fn response_header(&self, name: &str) -> Option<&[u8]> {
        first(&self.response_headers, name)
    }

    /// The first value of upstream request header `name`.
    pub fn upstream_header(&self, name: &str) -> Option<&[u8]> {
        first(&self.upstream_headers, name)
    }

    /// Log lines at `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.as_str())
            .collect()
    }

    fn enter(&mut self, call: &'static str) -> Result<()> {
        self.calls.push(call);
        match self.failures.iter().find(|(name, _)| *name == call) {
            Some((_, message)) => Err(Error::msg(message.clone())),
            None => Ok(()),
        }
    }
}

/// Runs a plugin's request phases against a mock the way Kong would: build
/// the instance from `config`, then rewrite, access — stopping at an exit,
/// whose status, headers and body become the response — then header_filter
/// and log. Returns the flow access (or rewrite) ended with.
///
/// With `kong.subsystem` set to `"stream"` it runs a connection instead:
/// preread, then log (whether preread exited or not).
///
/// # Errors
/// The constructor's or a phase's error, as the bridge would log it.
pub fn run_request<P: Plugin>(config: P::Config, kong: &mut MockPdk) -> Result<Flow> {
    let result = run_phases::<P>(config, kong);
    kong.phase = None;
    result
}

fn run_phases<P: Plugin>(config: P::Config, kong: &mut MockPdk) -> Result<Flow> {
    let plugin = P::new(config)?;
    let mut state = P::State::default();
    if kong.subsystem == "stream" {
        kong.phase = Some(Phase::Preread);
        let flow = plugin.preread(kong, &mut state)?;
        if let Flow::Exit(exit) = &flow {
            kong.status = exit.status;
        }
        kong.phase = Some(Phase::Log);
        plugin.log(kong, &mut state)?;
        return Ok(flow);
    }
    kong.phase = Some(Phase::Rewrite);
    let mut flow = plugin.rewrite(kong, &mut state)?;
    if flow == Flow::Continue {
        kong.phase = Some(Phase::Access);
        flow = plugin.access(kong, &mut state)?;
    }
    match &flow {
        Flow::Continue => {
            kong.service_status = Some(kong.status);
        }
        Flow::Exit(exit) => {
            kong.status = exit.status;
            for (name, value) in &exit.headers {
                set(&mut kong.response_headers, name, value);
            }
        }
    }
    kong.phase = Some(Phase::HeaderFilter);
    plugin.header_filter(kong, &mut state)?;
    kong.phase = Some(Phase::Log);
    plugin.log(kong, &mut state)?;
    Ok(flow)
}

/// Kong's header table: name -> value, or an array of values.
fn header_map(headers: &Headers, lower: bool) -> Map<String, Json> {
    let mut map = Map::new();
    for (name, value) in headers {
        let name = if lower {
            name.to_ascii_lowercase()
        } else {
            name.clone()
        };
        let value = Json::String(String::from_utf8_lossy(value).into_owned());
        multi_insert(&mut map, name, value);
    }
    map
}

fn multi_insert(map: &mut Map<String, Json>, key: String, value: Json) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Json::Array(values)) => values.push(value),
        Some(first) => *first = Json::Array(vec![first.take(), value]),
    }
}

/// An entity from JSON as the Lua PDK reads it back: an object without its
/// `null` fields.
fn entity_of(json: &Json, name_field: &str) -> Entity {
    match json {
        Json::Object(fields) => {
            let fields = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Entity::from_fields(fields, name_field)
        }
        _ => Entity::default(),
    }
}

fn first<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn set(headers: &mut Headers, name: &str, value: &[u8]) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_vec()));
}

fn ctx_get(table: &[(String, Value)], key: &str) -> Value {
    table
        .iter()
        .find(|(k, _)| k == key)
        .map_or(Value::Nil, |(_, v)| v.clone())
}

fn ctx_set(table: &mut Vec<(String, Value)>, key: &str, value: Value) {
    table.retain(|(k, _)| k != key);
    if value != Value::Nil {
        table.push((key.to_string(), value));
    }
}

fn parse_query(query: &[u8]) -> Vec<(Vec<u8>, QueryValue)> {
    query
        .split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.iter().position(|b| *b == b'=') {
            Some(eq) => (
                part[..eq].to_vec(),
                QueryValue::Value(part[eq + 1..].to_vec()),
            ),
            None => (part.to_vec(), QueryValue::Flag),
        })
        .collect()
}

crate::pdk::namespaces!(MockPdk);

impl Log for MockPdk {
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()> {
        self.enter("log")?;
        self.logs.push((level, message.to_string()));
        Ok(())
    }
    fn serialize(&mut self) -> Result<Json> {
        self.enter("log.serialize")?;
        self.check_phase(Phase::Log)?;
        Ok(match &self.serialized {
            Some(value) => value.clone(),
            None => self.default_serialized(),
        })
    }
}

impl Request for MockPdk {
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.enter("request.get_header")?;
        Ok(first(&self.request_headers, name).map(<[u8]>::to_vec))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.enter("request.get_headers")?;
        Ok(self.request_headers.clone())
    }
    fn get_method(&mut self) -> Result<String> {
        self.enter("request.get_method")?;
        Ok(self.method.clone())
    }
    fn get_path(&mut self) -> Result<Vec<u8>> {
        self.enter("request.get_path")?;
        Ok(self.path.clone())
    }
    fn get_path_with_query(&mut self) -> Result<Vec<u8>> {
        self.enter("request.get_path_with_query")?;
        let mut out = self.path.clone();
        if !self.query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(&self.query);
        }
        Ok(out)
    }
    fn get_raw_query(&mut self) -> Result<Vec<u8>> {
        self.enter("request.get_raw_query")?;
        Ok(self.query.clone())
    }
    fn get_query_arg(&mut self, name: &str) -> Result<Option<QueryValue>> {
        self.enter("request.get_query_arg")?;
        Ok(parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v))
    }
    fn get_query(&mut self) -> Result<Vec<(Vec<u8>, QueryValue)>> {
        self.enter("request.get_query")?;
        Ok(parse_query(&self.query))
    }
    fn get_scheme(&mut self) -> Result<String> {
        self.enter("request.get_scheme")?;
        Ok(self.scheme.clone())
    }
    fn get_host(&mut self) -> Result<String> {
        self.enter("request.get_host")?;
        Ok(self.host.clone())
    }
    fn get_port(&mut self) -> Result<u16> {
        self.enter("request.get_port")?;
        Ok(self.port)
    }
    fn get_http_version(&mut self) -> Result<Option<f64>> {
        self.enter("request.get_http_version")?;
        Ok(Some(self.http_version))
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        self.enter("request.get_raw_body")?;
        if self.request_body_in_file {
            return Ok(None);
        }
        Ok(Some(self.request_body.clone().unwrap_or_default()))
    }
    fn get_start_time(&mut self) -> Result<f64> {
        self.enter("request.get_start_time")?;
        Ok(self.start_time)
    }
}

impl Response for MockPdk {
    fn get_status(&mut self) -> Result<u16> {
        self.enter("response.get_status")?;
        Ok(self.status)
    }
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.enter("response.get_header")?;
        Ok(first(&self.response_headers, name).map(<[u8]>::to_vec))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.enter("response.get_headers")?;
        Ok(self.response_headers.clone())
    }
    fn set_status(&mut self, status: u16) -> Result<()> {
        self.enter("response.set_status")?;
        self.status = status;
        Ok(())
    }
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.enter("response.set_header")?;
        set(&mut self.response_headers, name, kong_header_value(value));
        Ok(())
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.enter("response.add_header")?;
        self.response_headers
            .push((name.to_string(), kong_header_value(value).to_vec()));
        Ok(())
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.enter("response.clear_header")?;
        self.response_headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        Ok(())
    }
}

impl ServiceRequest for MockPdk {
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.enter("service.request.set_header")?;
        set(&mut self.upstream_headers, name, kong_header_value(value));
        Ok(())
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.enter("service.request.add_header")?;
        self.upstream_headers
            .push((name.to_string(), kong_header_value(value).to_vec()));
        Ok(())
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.enter("service.request.clear_header")?;
        self.upstream_headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        Ok(())
    }
    fn set_headers(&mut self, headers: &[(&str, &[u8])]) -> Result<()> {
        self.enter("service.request.set_headers")?;
        for (name, value) in headers {
            set(&mut self.upstream_headers, name, kong_header_value(value));
        }
        Ok(())
    }
    fn set_path(&mut self, path: &[u8]) -> Result<()> {
        self.enter("service.request.set_path")?;
        self.upstream_path = path.to_vec();
        Ok(())
    }
    fn set_raw_query(&mut self, query: &[u8]) -> Result<()> {
        self.enter("service.request.set_raw_query")?;
        self.upstream_query = query.to_vec();
        Ok(())
    }
    fn set_query(&mut self, args: &[(&[u8], &[u8])]) -> Result<()> {
        self.enter("service.request.set_query")?;
        let parts: Vec<Vec<u8>> = args
            .iter()
            .map(|(k, v)| [*k, b"=".as_slice(), *v].concat())
            .collect();
        self.upstream_query = parts.join(&b'&');
        Ok(())
    }
    fn set_method(&mut self, method: &str) -> Result<()> {
        self.enter("service.request.set_method")?;
        self.upstream_method = method.to_string();
        Ok(())
    }
    fn set_raw_body(&mut self, body: &[u8]) -> Result<()> {
        self.enter("service.request.set_raw_body")?;
        self.upstream_body = Some(body.to_vec());
        Ok(())
    }
}

impl ServiceResponse for MockPdk {
    fn get_status(&mut self) -> Result<Option<u16>> {
        self.enter("service.response.get_status")?;
        Ok(self.service_status)
    }
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.enter("service.response.get_header")?;
        Ok(first(&self.service_headers, name).map(<[u8]>::to_vec))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.enter("service.response.get_headers")?;
        Ok(self.service_headers.clone())
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        self.enter("service.response.get_raw_body")?;
        Ok(self.service_body.clone())
    }
}

impl Client for MockPdk {
    fn get_ip(&mut self) -> Result<String> {
        self.enter("client.get_ip")?;
        Ok(self.client_ip.clone())
    }
    fn get_forwarded_ip(&mut self) -> Result<String> {
        self.enter("client.get_forwarded_ip")?;
        Ok(self.forwarded_ip.clone())
    }
    fn get_port(&mut self) -> Result<u16> {
        self.enter("client.get_port")?;
        Ok(self.client_port)
    }
    fn get_consumer(&mut self) -> Result<Option<Entity>> {
        self.enter("client.get_consumer")?;
        Ok(self.consumer.clone())
    }
    fn get_credential(&mut self) -> Result<Option<Entity>> {
        self.enter("client.get_credential")?;
        Ok(self.credential.clone())
    }
    fn load_consumer(
        &mut self,
        id: &str,
        by_username: bool,
    ) -> super::LocalFuture<Result<Option<Entity>>> {
        let found = self
            .known_consumers
            .iter()
            .find(|c| c.get("id").and_then(Json::as_str) == Some(id))
            .or_else(|| {
                by_username
                    .then(|| {
                        self.known_consumers
                            .iter()
                            .find(|c| c.get("username").and_then(Json::as_str) == Some(id))
                    })
                    .flatten()
            })
            .cloned()
            .map(Entity::consumer);
        Box::pin(std::future::ready(Ok(found)))
    }
    fn authenticate(&mut self, consumer: Option<&Json>, credential: Option<&Json>) -> Result<()> {
        self.enter("client.authenticate")?;
        self.check_phase(Phase::Access)?;
        fn table_or_nil(value: Option<&Json>) -> std::result::Result<Option<&Json>, ()> {
            match value {
                None | Some(Json::Null) => Ok(None),
                Some(value @ (Json::Object(_) | Json::Array(_))) => Ok(Some(value)),
                Some(_) => Err(()),
            }
        }
        let pdk_error = |message: &str| Error::new(ErrorKind::Pdk, message);
        let consumer =
            table_or_nil(consumer).map_err(|()| pdk_error("consumer must be a table or nil"))?;
        let credential = table_or_nil(credential)
            .map_err(|()| pdk_error("credential must be a table or nil"))?;
        if consumer.is_none() && credential.is_none() {
            return Err(pdk_error("either credential or consumer must be provided"));
        }
        self.consumer = consumer.map(|c| entity_of(c, "username"));
        self.credential = credential.map(|c| entity_of(c, "name"));
        Ok(())
    }
}

impl Ctx for MockPdk {
    fn shared_get(&mut self, key: &str) -> Result<Value> {
        self.enter("ctx.shared.get")?;
        Ok(ctx_get(&self.ctx_shared, key))
    }
    fn shared_set(&mut self, key: &str, value: Value) -> Result<()> {
        self.enter("ctx.shared.set")?;
        ctx_set(&mut self.ctx_shared, key, value);
        Ok(())
    }
    fn plugin_get(&mut self, key: &str) -> Result<Value> {
        self.enter("ctx.plugin.get")?;
        Ok(ctx_get(&self.ctx_plugin, key))
    }
    fn plugin_set(&mut self, key: &str, value: Value) -> Result<()> {
        self.enter("ctx.plugin.set")?;
        ctx_set(&mut self.ctx_plugin, key, value);
        Ok(())
    }
}

impl Nginx for MockPdk {
    fn get_subsystem(&mut self) -> Result<String> {
        self.enter("nginx.get_subsystem")?;
        Ok(self.subsystem.clone())
    }
}

impl PluginInfo for MockPdk {
    fn get_id(&mut self) -> Result<Option<String>> {
        self.enter("plugin.get_id")?;
        Ok(self.plugin_id.clone())
    }
}

impl Router for MockPdk {
    fn get_route(&mut self) -> Result<Option<Entity>> {
        self.enter("router.get_route")?;
        Ok(self.route.clone())
    }
    fn get_service(&mut self) -> Result<Option<Entity>> {
        self.enter("router.get_service")?;
        Ok(self.service.clone())
    }
}

impl MockPdk {
    /// `ngx.shared[name]`, for `Pdk::shared_dict`.
    fn open_shared_dict(&mut self, name: &str) -> Result<&mut dyn SharedDict> {
        self.enter("shared_dict")?;
        if !self.shared_dicts.lock().dicts.contains_key(name) {
            return Err(Error::new(
                ErrorKind::Pdk,
                format!(
                    "no shared dict named {name:?} (declare it with MockPdk::with_shared_dict)"
                ),
            ));
        }
        let dict = MockSharedDict {
            dicts: self.shared_dicts.clone(),
            name: name.to_string(),
        };
        Ok(self.open_dict.insert(dict))
    }
}

/// The shared dicts of [`MockPdk`] (`ngx.shared`), with a clock of their
/// own: it starts at zero and moves only with [`MockSharedDicts::advance`],
/// so a test decides exactly when a ttl runs out (a key expires when the
/// clock reaches its expiry, as in nginx). Cloning shares the dicts (a
/// handle), so several mocks, i.e. requests or workers, can share them.
#[derive(Clone, Debug, Default)]
pub struct MockSharedDicts {
    state: Arc<Mutex<DictsState>>,
}

#[derive(Debug, Default)]
struct DictsState {
    now: Duration,
    dicts: BTreeMap<String, BTreeMap<Vec<u8>, Entry>>,
}

#[derive(Clone, Debug)]
struct Entry {
    value: Stored,
    expires: Option<Duration>,
}

#[derive(Clone, Debug)]
enum Stored {
    Bytes(Vec<u8>),
    Number(f64),
}

impl DictsState {
    /// Dict `name`'s live entries (expired ones dropped).
    fn dict(&mut self, name: &str) -> &mut BTreeMap<Vec<u8>, Entry> {
        let now = self.now;
        let dict = self.dicts.entry(name.to_string()).or_default();
        dict.retain(|_, entry| entry.expires.is_none_or(|at| at > now));
        dict
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        let seconds = ttl_seconds(ttl);
        (seconds > 0.0).then(|| self.now + Duration::from_secs_f64(seconds))
    }
}

impl MockSharedDicts {
    /// No dicts, the clock at zero.
    pub fn new() -> MockSharedDicts {
        MockSharedDicts::default()
    }

    fn lock(&self) -> MutexGuard<'_, DictsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares dict `name` (empty), unless it exists.
    pub fn declare(&self, name: &str) {
        self.lock().dicts.entry(name.to_string()).or_default();
    }

    /// Moves the dicts' clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.lock().now += by;
    }

    /// The dicts' clock: the time advanced so far.
    pub fn now(&self) -> Duration {
        self.lock().now
    }

    /// What `get(key)` on dict `name` would read, without recording a call
    /// (`None` also when there is no such dict).
    pub fn value(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        let mut state = self.lock();
        if !state.dicts.contains_key(name) {
            return None;
        }
        state.dict(name).get(key).map(|entry| match &entry.value {
            Stored::Bytes(bytes) => bytes.clone(),
            Stored::Number(n) => number_bytes(*n),
        })
    }
}

/// One dict of [`MockSharedDicts`], as `shared_dict` hands it out.
#[derive(Clone, Debug)]
struct MockSharedDict {
    dicts: MockSharedDicts,
    name: String,
}

impl super::sealed::Sealed for MockSharedDict {}

impl MockSharedDict {
    fn check_key(&self, method: &str, key: &[u8]) -> Result<()> {
        let err = match key.len() {
            0 => "empty key",
            65536.. => "key too long",
            _ => return Ok(()),
        };
        Err(self.fail(method, err))
    }

    fn fail(&self, method: &str, err: &str) -> Error {
        Error::new(
            ErrorKind::Pdk,
            format!("ngx.shared.{}:{method}: {err}", self.name),
        )
    }
}

impl SharedDict for MockSharedDict {
    fn name(&self) -> &str {
        &self.name
    }
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key("get", key)?;
        Ok(self.dicts.value(&self.name, key))
    }
    fn set(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check_key("set", key)?;
        let mut state = self.dicts.lock();
        let expires = state.expiry(ttl);
        let entry = Entry {
            value: Stored::Bytes(value.to_vec()),
            expires,
        };
        state.dict(&self.name).insert(key.to_vec(), entry);
        Ok(())
    }
    fn add(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.check_key("add", key)?;
        let mut state = self.dicts.lock();
        let expires = state.expiry(ttl);
        let dict = state.dict(&self.name);
        if dict.contains_key(key) {
            return Ok(false);
        }
        let entry = Entry {
            value: Stored::Bytes(value.to_vec()),
            expires,
        };
        dict.insert(key.to_vec(), entry);
        Ok(true)
    }
    fn incr(
        &mut self,
        key: &[u8],
        by: i64,
        init: Option<i64>,
        ttl: Option<Duration>,
    ) -> Result<i64> {
        self.check_key("incr", key)?;
        if ttl.is_some() && init.is_none() {
            return Err(self.fail("incr", "must provide \"init\" when providing \"init_ttl\""));
        }
        let mut state = self.dicts.lock();
        let expires = state.expiry(ttl);
        let dict = state.dict(&self.name);
        let entry = match (dict.get_mut(key), init) {
            (Some(entry), _) => entry,
            (None, Some(init)) => dict.entry(key.to_vec()).or_insert(Entry {
                value: Stored::Number(init as f64),
                expires,
            }),
            (None, None) => return Err(self.fail("incr", "not found")),
        };
        match &mut entry.value {
            Stored::Number(n) => {
                *n += by as f64;
                Ok(*n as i64)
            }
            Stored::Bytes(_) => Err(self.fail("incr", "not a number")),
        }
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.check_key("delete", key)?;
        self.dicts.lock().dict(&self.name).remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pdk;

    fn k(mock: &mut MockPdk) -> &mut dyn Pdk {
        mock
    }

    #[test]
    fn authenticate_sets_the_consumer_and_credential_with_kong_errors() {
        let mut kong = MockPdk::get("/");
        let consumer = json!({"id": "c1", "username": "alice", "custom_id": null, "tags": ["a"]});
        let credential = json!({"id": "k1", "consumer_id": "c1"});
        k(&mut kong)
            .client()
            .authenticate(Some(&consumer), Some(&credential))
            .unwrap();
        let got = k(&mut kong).client().get_consumer().unwrap().unwrap();
        assert_eq!(got.id, "c1");
        assert_eq!(got.name.as_deref(), Some("alice"));
        assert_eq!(got.field("tags"), Some(&json!(["a"])));
        assert_eq!(got.field("custom_id"), None, "null fields are dropped");
        let cred = k(&mut kong).client().get_credential().unwrap().unwrap();
        assert_eq!(cred.field("consumer_id"), Some(&json!("c1")));
        // a credential alone clears the consumer, as on Kong
        k(&mut kong)
            .client()
            .authenticate(None, Some(&json!({"id": "k2"})))
            .unwrap();
        assert_eq!(k(&mut kong).client().get_consumer().unwrap(), None);

        let err = |r: Result<()>| r.unwrap_err().to_string();
        assert_eq!(
            err(k(&mut kong).client().authenticate(None, None)),
            "either credential or consumer must be provided"
        );
        assert_eq!(
            err(k(&mut kong)
                .client()
                .authenticate(Some(&json!("bob")), None)),
            "consumer must be a table or nil"
        );
        assert_eq!(
            err(k(&mut kong).client().authenticate(None, Some(&json!(42)))),
            "credential must be a table or nil"
        );
        kong.phase = Some(Phase::HeaderFilter);
        assert_eq!(
            err(k(&mut kong).client().authenticate(Some(&consumer), None)),
            "function cannot be called in header_filter phase (only in: access)"
        );
    }

    #[test]
    fn serialize_is_configurable_and_log_phase_only() {
        let mut kong = MockPdk::get("/p?a=1&a=2&f")
            .with_header("Authorization", "secret")
            .with_consumer(json!({"id": "c1", "username": "alice"}));
        kong.phase = Some(Phase::Access);
        let err = k(&mut kong).log().serialize().unwrap_err();
        assert_eq!(
            err.to_string(),
            "function cannot be called in access phase (only in: log)"
        );
        kong.phase = Some(Phase::Log);
        let s = k(&mut kong).log().serialize().unwrap();
        assert_eq!(s["request"]["method"], "GET");
        assert_eq!(s["request"]["uri"], "/p?a=1&a=2&f");
        assert_eq!(s["request"]["url"], "http://localhost:8000/p?a=1&a=2&f");
        assert_eq!(s["request"]["headers"]["authorization"], "REDACTED");
        assert_eq!(
            s["request"]["querystring"],
            json!({"a": ["1", "2"], "f": true})
        );
        assert_eq!(s["response"]["status"], 200);
        assert_eq!(s["consumer"], json!({"id": "c1", "username": "alice"}));
        assert_eq!(s["route"]["id"], "00000000-0000-4000-8000-000000000001");
        assert_eq!(s["source"], "kong");
        kong.serialized = Some(json!({"custom": true}));
        assert_eq!(
            k(&mut kong).log().serialize().unwrap(),
            json!({"custom": true})
        );
    }

    #[test]
    fn shared_dicts_store_bytes_count_and_expire_on_the_mock_clock() {
        let mut kong = MockPdk::get("/").with_shared_dict("cache");
        let err = k(&mut kong).shared_dict("nope").err().unwrap();
        assert!(err.to_string().contains("\"nope\""), "{err}");

        let dict = k(&mut kong).shared_dict("cache").unwrap();
        assert_eq!(dict.name(), "cache");
        assert_eq!(dict.get(b"k").unwrap(), None);
        dict.set(b"k", b"\xffv", Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(dict.get(b"k").unwrap(), Some(b"\xffv".to_vec()));
        assert!(!dict.add(b"k", b"other", None).unwrap());
        assert_eq!(dict.incr(b"n", 1, Some(0), None).unwrap(), 1);
        assert_eq!(dict.incr(b"n", 41, None, None).unwrap(), 42);
        assert_eq!(dict.get(b"n").unwrap(), Some(b"42".to_vec()));
        let not_found = dict.incr(b"missing", 1, None, None).unwrap_err();
        assert_eq!(not_found.to_string(), "ngx.shared.cache:incr: not found");
        let nan = dict.incr(b"k", 1, Some(0), None).unwrap_err();
        assert_eq!(nan.to_string(), "ngx.shared.cache:incr: not a number");
        let ttl = dict
            .incr(b"x", 1, None, Some(Duration::from_secs(1)))
            .unwrap_err();
        assert!(ttl.to_string().contains("must provide \"init\""), "{ttl}");
        assert!(dict.get(b"").is_err());

        // another request (a clone) sees the same dicts
        let mut other = kong.clone();
        let dicts = kong.shared_dicts.clone();
        dicts.advance(Duration::from_millis(1999));
        let dict = k(&mut other).shared_dict("cache").unwrap();
        assert_eq!(dict.get(b"k").unwrap(), Some(b"\xffv".to_vec()));
        dicts.advance(Duration::from_millis(1));
        assert_eq!(dict.get(b"k").unwrap(), None, "expired at 2 s");
        assert!(dict.add(b"k", b"again", Some(Duration::ZERO)).unwrap());
        dicts.advance(Duration::from_millis(1));
        assert_eq!(dict.get(b"k").unwrap(), None, "a zero ttl is 1 ms");
        dict.delete(b"n").unwrap();
        assert_eq!(dicts.value("cache", b"n"), None);
        assert!(other.calls.contains(&"shared_dict"));
    }

    /// Authenticates in access, tries again in header_filter, serializes in
    /// log.
    struct Auth;

    impl Plugin for Auth {
        type Config = ();
        type State = Vec<String>;
        const NAME: &'static str = "auth";
        const VERSION: &'static str = "0.1.0";
        const PRIORITY: i32 = 1000;
        const PHASES: &'static [Phase] = &[Phase::Access, Phase::HeaderFilter, Phase::Log];

        fn new((): ()) -> Result<Self> {
            Ok(Auth)
        }
        fn access(&self, kong: &mut dyn Pdk, state: &mut Vec<String>) -> Result<Flow> {
            let consumer = json!({"id": "c1", "username": "alice"});
            kong.client().authenticate(Some(&consumer), None)?;
            if let Err(e) = kong.log().serialize() {
                state.push(e.to_string());
            }
            Ok(Flow::Continue)
        }
        fn header_filter(&self, kong: &mut dyn Pdk, state: &mut Vec<String>) -> Result<()> {
            let consumer = kong.client().get_consumer()?.map(|c| c.to_json());
            if let Err(e) = kong.client().authenticate(consumer.as_ref(), None) {
                state.push(e.to_string());
            }
            Ok(())
        }
        fn log(&self, kong: &mut dyn Pdk, state: &mut Vec<String>) -> Result<()> {
            let serialized = kong.log().serialize()?;
            let line = format!(
                "{} {}",
                serialized["consumer"]["username"],
                state.join("; ")
            );
            kong.log().info(&line)
        }
    }

    #[test]
    fn run_request_sets_the_phase_for_the_phase_checked_calls() {
        let mut kong = MockPdk::get("/");
        assert_eq!(run_request::<Auth>((), &mut kong).unwrap(), Flow::Continue);
        assert_eq!(
            kong.logs_at(LogLevel::Info),
            [
                "\"alice\" function cannot be called in access phase (only in: log); \
                 function cannot be called in header_filter phase (only in: access)"
            ]
        );
        assert_eq!(kong.phase, None);
    }
}
