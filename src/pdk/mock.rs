//! [`MockPdk`]: a PDK for `cargo test`, with no Lua and no nginx.
//!
//! In the spirit of go-pdk's test harness: you describe the client request,
//! run phases against the mock, then inspect what the plugin did — the
//! response and upstream request it shaped, the log lines it wrote, the
//! ordered list of every PDK call. [`MockPdk::fail`] makes one PDK function
//! raise, the way Kong raises when a call is not allowed in a phase.

use super::{
    Client, Ctx, Entity, Headers, Log, LogLevel, Nginx, QueryValue, Request, Response, Router,
    ServiceRequest, ServiceResponse, Value, kong_header_value,
};
use crate::error::{Error, Result};
use crate::plugin::{Flow, Plugin};

/// A recording, canned PDK. Public fields are the state; set them up before a
/// phase and read them after.
#[derive(Clone, Debug)]
pub struct MockPdk {
    /// The client request's method.
    pub method: String,
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
    /// The authenticated consumer.
    pub consumer: Option<Entity>,
    /// The credential used.
    pub credential: Option<Entity>,
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
    /// Every PDK call, in order, as `"namespace.function"`.
    pub calls: Vec<&'static str>,
    failures: Vec<(&'static str, String)>,
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
        let entity = |id: &str| {
            Some(Entity {
                id: id.to_string(),
                name: Some("test".to_string()),
            })
        };
        MockPdk {
            method: method.to_string(),
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
            credential: None,
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
    let plugin = P::new(config)?;
    let mut state = P::State::default();
    if kong.subsystem == "stream" {
        let flow = plugin.preread(kong, &mut state)?;
        if let Flow::Exit(exit) = &flow {
            kong.status = exit.status;
        }
        plugin.log(kong, &mut state)?;
        return Ok(flow);
    }
    let mut flow = plugin.rewrite(kong, &mut state)?;
    if flow == Flow::Continue {
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
    plugin.header_filter(kong, &mut state)?;
    plugin.log(kong, &mut state)?;
    Ok(flow)
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
