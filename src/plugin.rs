//! The [`Plugin`] trait: a config type, a constructor, one method per phase.

use crate::error::Result;
use crate::pdk::Pdk;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

/// A Kong plugin written in Rust.
///
/// Kong hands every request the plugin's `conf` table; the bridge
/// deserialises it into [`Plugin::Config`] and calls [`Plugin::new`] **once
/// per configuration version** (the built instance is cached per `conf`
/// table), then calls the phase methods of that instance for every request.
///
/// Put `#[kong_rs::plugin]` on the `impl` block: it records which phase
/// methods you wrote in [`Plugin::PHASES`], so the Lua side registers only
/// those with Kong.
///
/// Phase methods must not block and can never yield (a Lua coroutine cannot
/// yield across a call into Rust). Effects that yield in Kong, such as
/// `kong.response.exit`, are *returned* as a [`Flow::Exit`] and performed by
/// the Lua side once Rust has returned.
///
/// `rewrite`, `access` and `preread` may be written as `async fn` to talk
/// to the network: the future's I/O ([`crate::io`], [`crate::http`],
/// [`crate::redis`]) is performed by nginx's cosockets while the worker
/// serves other requests; between awaits the PDK works as usual.
///
/// A phase method that returns `Err` or panics is logged with the plugin's
/// name and the phase, and the request is answered 500 where the response can
/// still be changed (rewrite, access, response); the request is never let
/// through unchecked.
pub trait Plugin: Sized + 'static {
    /// The configuration, deserialised from Kong's `conf` table. Its
    /// [`JsonSchema`] is turned into the Kong schema (`schema.lua`), so the
    /// type is the single description of the config.
    type Config: DeserializeOwned + JsonSchema;

    /// Per-request state, created with `Default` when the first phase of a
    /// request runs and handed to every later phase of the same request.
    /// Use `()` when the plugin needs none: that costs nothing.
    type State: Default + 'static;

    /// The plugin name, as listed in `KONG_PLUGINS` (e.g. `"rs-hello"`).
    const NAME: &'static str;

    /// The plugin version, `"x.y.z"`.
    const VERSION: &'static str;

    /// Kong's execution order: higher runs first.
    const PRIORITY: i32;

    /// The phases this plugin implements, in Kong's order. Written by
    /// `#[kong_rs::plugin]`; do not set it by hand.
    const PHASES: &'static [Phase];

    /// The phases written as `async fn` (rewrite, access, preread), run as
    /// tasks whose I/O nginx performs (see [`crate::io`]). Written by
    /// `#[kong_rs::plugin]`; do not set it by hand.
    const ASYNC_PHASES: &'static [Phase] = &[];

    /// Whether rewrite/access need the request body: when true the Lua side
    /// reads it before entering Rust (reading it may yield), so
    /// `kong.request().get_raw_body()` works from Rust.
    const READS_REQUEST_BODY: bool = false;

    /// Builds an instance from a config: validate and precompute here.
    ///
    /// # Errors
    /// A message fit for the user who submitted the config: the Admin API
    /// answers it in a 400 (`schema.lua`'s `custom_validator` calls this very
    /// function).
    fn new(config: Self::Config) -> Result<Self>;

    /// `ssl_certificate_by_lua`: runs once per TLS handshake, before any request.
    ///
    /// # Errors
    /// An `Err` is logged; the handshake goes on.
    fn certificate(&self, _kong: &mut dyn Pdk) -> Result<()> {
        Ok(())
    }

    /// `preread` (Kong's stream subsystem: TCP and TLS routes served through
    /// `stream_listen`): runs once per connection, after the TLS handshake
    /// and before Kong connects upstream. Return [`Flow::Exit`] to close the
    /// connection with one of the codes Kong's stream `kong.response.exit`
    /// accepts (200, 400, 403, 500, 502, 503). Only a few PDK calls exist in
    /// stream (`kong.client`, `kong.nginx.get_subsystem`, `kong.log`,
    /// `kong.ctx`, `kong.router`); the HTTP ones fail there as in Kong.
    /// Implementing it lets the plugin be enabled on `tcp`, `tls`, `udp`
    /// and `tls_passthrough` routes (the generated schema allows every
    /// protocol instead of the HTTP ones only). In stream, `log` runs after
    /// the connection closed.
    ///
    /// # Errors
    /// An `Err` is logged and the connection closed (code 500).
    fn preread(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `rewrite`: before routing. Kong runs it only for global plugins.
    ///
    /// # Errors
    /// An `Err` is logged and the request answered 500.
    fn rewrite(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `access`: after routing, before the upstream is called. Authentication,
    /// validation, rate limiting and request transformation live here.
    ///
    /// # Errors
    /// An `Err` is logged and the request answered 500; the upstream is not called.
    fn access(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `async fn rewrite` in a `#[kong_rs::plugin]` block becomes this
    /// method (the macro renames it and lists the phase in
    /// [`Plugin::ASYNC_PHASES`]).
    ///
    /// # Errors
    /// As [`Plugin::rewrite`].
    #[doc(hidden)]
    #[allow(async_fn_in_trait)]
    async fn rewrite_async(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `async fn access`, renamed by `#[kong_rs::plugin]`: see
    /// [`Plugin::rewrite_async`].
    ///
    /// # Errors
    /// As [`Plugin::access`].
    #[doc(hidden)]
    #[allow(async_fn_in_trait)]
    async fn access_async(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `async fn preread`, renamed by `#[kong_rs::plugin]`: see
    /// [`Plugin::rewrite_async`].
    ///
    /// # Errors
    /// As [`Plugin::preread`].
    #[doc(hidden)]
    #[allow(async_fn_in_trait)]
    async fn preread_async(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `header_filter`: the response status and headers are known and can be
    /// changed; the body has not been sent.
    ///
    /// # Errors
    /// An `Err` is logged and the response status becomes 500.
    fn header_filter(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }

    /// `body_filter`: called for each chunk of the response body; `eof` is
    /// true on the last call. Return `Some(bytes)` to replace the chunk.
    ///
    /// # Errors
    /// An `Err` is logged; the headers are already sent, so the status stays.
    fn body_filter(
        &self,
        _kong: &mut dyn Pdk,
        _state: &mut Self::State,
        _chunk: &[u8],
        _eof: bool,
    ) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// `response`: Kong buffers the whole upstream response (implementing this
    /// turns buffered proxying on); `kong.service_response().get_raw_body()`
    /// holds it and the response may be rewritten or replaced.
    ///
    /// # Errors
    /// An `Err` is logged and the request answered 500.
    fn response(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// `log`: after the response was sent. Logging and metrics.
    ///
    /// # Errors
    /// An `Err` is logged; the client already has its response.
    fn log(&self, _kong: &mut dyn Pdk, _state: &mut Self::State) -> Result<()> {
        Ok(())
    }
}

/// A Kong plugin phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `certificate` (TLS handshake).
    Certificate,
    /// `preread` (stream connections).
    Preread,
    /// `rewrite` (before routing).
    Rewrite,
    /// `access` (before proxying).
    Access,
    /// `header_filter` (response headers).
    HeaderFilter,
    /// `body_filter` (response body chunks).
    BodyFilter,
    /// `response` (buffered response).
    Response,
    /// `log` (after the response).
    Log,
}

impl Phase {
    /// Every phase, in the order Kong runs them.
    pub const ALL: [Phase; 8] = [
        Phase::Certificate,
        Phase::Preread,
        Phase::Rewrite,
        Phase::Access,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Response,
        Phase::Log,
    ];

    /// The handler method name Kong calls for this phase (`"header_filter"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Certificate => "certificate",
            Phase::Preread => "preread",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Response => "response",
            Phase::Log => "log",
        }
    }
}

impl Phase {
    /// Whether `kong.response.exit` works in this phase (Kong's
    /// `kong/pdk/response.lua`): a [`Flow::Exit`] is performed there, and a
    /// failed plugin is answered 500; elsewhere a failure is only logged.
    pub fn can_respond(self) -> bool {
        matches!(
            self,
            Phase::Preread | Phase::Rewrite | Phase::Access | Phase::HeaderFilter | Phase::Response
        )
    }

    /// Whether the glue reads the request body before this phase for a
    /// plugin with [`Plugin::READS_REQUEST_BODY`] (reading it may yield).
    pub fn reads_request_body(self) -> bool {
        matches!(self, Phase::Rewrite | Phase::Access)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens after a phase method returns.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub enum Flow {
    /// Go on with the next plugin and, eventually, the upstream.
    #[default]
    Continue,
    /// Answer the client now; the Lua side calls `kong.response.exit` with it
    /// (deferred because `exit` yields, and Rust cannot yield).
    Exit(Exit),
}

impl Flow {
    /// Shorthand for `Flow::Exit(Exit::new(status).body(body))`.
    pub fn exit(status: u16, body: impl Into<Vec<u8>>) -> Flow {
        Flow::Exit(Exit::new(status).body(body))
    }
}

/// A response to send instead of proxying: the arguments of `kong.response.exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// HTTP status, 100-599.
    pub status: u16,
    /// Body bytes; `None` sends none (or Kong's default for the status).
    pub body: Option<Vec<u8>>,
    /// Headers to set on the response, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Exit {
    /// An exit with `status`, no body and no headers.
    pub fn new(status: u16) -> Exit {
        Exit {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Exit {
        self.body = Some(body.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Exit {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `#[kong_rs::plugin]` (a proc-macro crate, which cannot use this
    /// type) keeps its own list of phase methods: it must be this one.
    #[test]
    fn the_macro_knows_every_phase_by_the_same_name() {
        let source = include_str!("../macros/src/lib.rs");
        let start = source
            .find("const PHASES")
            .expect("the macro's PHASES table");
        let table = &source[start..];
        let table = &table[..table.find("];").expect("end of the table")];
        for phase in Phase::ALL {
            let entry = format!("(\"{}\", \"{:?}\")", phase.name(), phase);
            assert!(table.contains(&entry), "macros/src/lib.rs lacks {entry}");
        }
        assert_eq!(table.matches("(\"").count(), Phase::ALL.len(), "{table}");
    }
}
