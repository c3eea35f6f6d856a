//! [`LuaPdk`]: the PDK backed by the `kong` global of the running worker.
//!
//! Each `kong.*` function is looked up once per worker (per Lua state) and
//! kept as a function handle; a call from Rust is then one Lua call, with no
//! table walks. Byte strings cross as Lua strings, both ways, unchanged.

use super::actions::{self, Actions, Args, Op};
use super::json::{CjsonMarkers, json_to_lua, lua_to_json};
use super::ngx::NgxRequest;
use super::{
    Client, Ctx, Entity, Headers, Log, LogLevel, Nginx, PluginInfo, QueryValue, Request, Response,
    Router, ServiceRequest, ServiceResponse, SharedDict, Value, kong_header_value, number_bytes,
    ttl_seconds,
};
use crate::error::{Error, Result};
use crate::plugin::Phase;
use crate::running::{Running, call_on, eval_on};
use bstr::{BStr, BString};
use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Table, Value as LuaValue};
use serde_json::Value as Json;
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

macro_rules! pdk_functions {
    ($($id:ident = $path:literal,)*) => {
        /// The `kong.*` functions the bridge calls, by index into the handle cache.
        #[derive(Clone, Copy, Debug)]
        #[allow(clippy::enum_variant_names)]
        enum F { $($id,)* }
        /// Their paths below the `kong` global, in the same order.
        const PATHS: &[&str] = &[$($path,)*];

        impl F {
            const ALL: &[F] = &[$(F::$id,)*];

            /// The function at `path` (below `kong`).
            fn at(path: &str) -> Option<F> {
                PATHS.iter().position(|p| *p == path).map(|i| F::ALL[i])
            }

            /// The function performing write op `op`, from `actions::OPS`,
            /// looked up by path once per process.
            fn for_op(op: Op) -> Option<F> {
                static BY_OP: std::sync::OnceLock<Vec<Option<F>>> = std::sync::OnceLock::new();
                BY_OP
                    .get_or_init(|| actions::OPS.iter().map(|(_, path, _)| F::at(path)).collect())
                    .get(op as usize - 1)
                    .copied()
                    .flatten()
            }
        }
    };
}

pdk_functions! {
    ReqGetHeader = "request.get_header",
    ReqGetHeaders = "request.get_headers",
    ReqGetMethod = "request.get_method",
    ReqGetPath = "request.get_path",
    ReqGetPathWithQuery = "request.get_path_with_query",
    ReqGetRawQuery = "request.get_raw_query",
    ReqGetQueryArg = "request.get_query_arg",
    ReqGetQuery = "request.get_query",
    ReqGetScheme = "request.get_scheme",
    ReqGetHost = "request.get_host",
    ReqGetPort = "request.get_port",
    ReqGetHttpVersion = "request.get_http_version",
    ReqGetRawBody = "request.get_raw_body",
    ReqGetStartTime = "request.get_start_time",
    RespGetStatus = "response.get_status",
    RespGetHeader = "response.get_header",
    RespGetHeaders = "response.get_headers",
    RespSetStatus = "response.set_status",
    RespSetHeader = "response.set_header",
    RespAddHeader = "response.add_header",
    RespClearHeader = "response.clear_header",
    SreqSetHeader = "service.request.set_header",
    SreqAddHeader = "service.request.add_header",
    SreqClearHeader = "service.request.clear_header",
    SreqSetPath = "service.request.set_path",
    SreqSetRawQuery = "service.request.set_raw_query",
    SreqSetQuery = "service.request.set_query",
    SreqSetMethod = "service.request.set_method",
    SreqSetRawBody = "service.request.set_raw_body",
    SrespGetStatus = "service.response.get_status",
    SrespGetHeader = "service.response.get_header",
    SrespGetHeaders = "service.response.get_headers",
    SrespGetRawBody = "service.response.get_raw_body",
    CliGetIp = "client.get_ip",
    CliGetForwardedIp = "client.get_forwarded_ip",
    CliGetPort = "client.get_port",
    CliGetConsumer = "client.get_consumer",
    CliGetCredential = "client.get_credential",
    CliAuthenticate = "client.authenticate",
    LogSerialize = "log.serialize",
    NgxGetSubsystem = "nginx.get_subsystem",
    RouterGetRoute = "router.get_route",
    RouterGetService = "router.get_service",
    PluginGetId = "plugin.get_id",
}

struct Handles {
    functions: Vec<OnceCell<Function>>,
    // `function(key) return kong.ctx[key] end`
    ctx: OnceCell<Function>,
    log: OnceCell<Function>,
    // cjson's array markers, for JSON <-> Lua tables.
    cjson: OnceCell<CjsonMarkers>,
    // The shared dicts opened so far, by name (nginx's dicts are fixed for
    // the life of the worker).
    dicts: RefCell<Vec<Rc<DictHandles>>>,
}

/// One `ngx.shared.DICT` and its methods, looked up once per worker.
struct DictHandles {
    name: String,
    dict: Table,
    get: Function,
    set: Function,
    add: Function,
    incr: Function,
    delete: Function,
    // The zone, for direct calls (HTTP subsystem inside nginx).
    zone: Option<super::ngx::Zone>,
}

/// Logs through `kong.log`, resolved on every call: Kong answers `kong.log`
/// with the logger of the plugin that is running (`ngx.ctx.KONG_LOG`, see
/// kong/pdk/init.lua), so a cached `kong.log.err` would tag every plugin's
/// lines with the name of the first one that logged. Not a tail call, so
/// Kong's `%file_src:%line_src` (the caller of `kong.log.err`) names this
/// chunk, `kong-rs:1`, rather than `[C]:-1`.
const LOG_SHIM: &str = "return function(level, message) kong.log[level](message) end";

impl Handles {
    fn new() -> Self {
        Handles {
            functions: PATHS.iter().map(|_| OnceCell::new()).collect(),
            ctx: OnceCell::new(),
            log: OnceCell::new(),
            cjson: OnceCell::new(),
            dicts: RefCell::new(Vec::new()),
        }
    }
}

/// The per-worker cache of `kong.*` function handles, shared by every plugin
/// of one native module. Filled lazily, one function at a time.
pub(crate) struct PdkCache {
    handles: Handles,
    // The thread a raw phase runs on (see crate::running).
    running: Rc<Running>,
    // Whether this Lua state is lua-nginx-module's (HTTP). A worker runs the
    // stream subsystem in a Lua state of its own, where the direct calls of
    // super::ngx (lua-nginx-module's HTTP functions) must never be made.
    http: bool,
}

impl PdkCache {
    /// The cache of `lua`'s module; the subsystem is read from
    /// `ngx.config.subsystem` (absent outside nginx: not HTTP).
    pub(crate) fn new(lua: &Lua, running: Rc<Running>) -> Self {
        let subsystem = lua
            .load("return ngx and ngx.config and ngx.config.subsystem")
            .eval::<Option<String>>()
            .ok()
            .flatten();
        PdkCache {
            handles: Handles::new(),
            running,
            http: subsystem.as_deref() == Some("http"),
        }
    }
}

/// The PDK of a phase running inside the worker.
///
/// Reads call the matching `kong.*` function. Writes (response and upstream
/// request headers, status, path, query, method, body) are *deferred*: they
/// are packed into one buffer that the Lua side applies, in order, when Rust
/// returns, because one call from Rust into Lua costs more than the write
/// itself. Any other PDK call first applies what is pending, so a plugin
/// always reads what it wrote and the order of effects is kept; a write Kong
/// rejects surfaces as an `Err` of that next call, or, at the end of the
/// phase, as a failed phase (500).
///
/// Buffer format, per write: op (u8), name length (u32 LE), name, value
/// length (u32 LE), value.
pub struct LuaPdk<'lua> {
    lua: &'lua Lua,
    // The Lua thread to call Lua on (null: mlua's current state), see
    // crate::running.
    thread: *mut mlua::lua_State,
    // Function handles and the subsystem, shared by the module's phases.
    cache: &'lua PdkCache,
    actions: Actions,
    // kong.ctx.shared / kong.ctx.plugin of this request, fetched on first use.
    shared: Option<Table>,
    plugin: Option<Table>,
    // The request body the Lua side already read, if it handed it over
    // (`Some(None)`: it did not fit into the client body buffer).
    body: Option<Option<mlua::LuaString>>,
    // The phase this PDK serves: it decides which direct calls (super::ngx)
    // Kong would allow; `None` allows none.
    phase: Option<Phase>,
    // The nginx request for direct calls, found on first use; `None` inside
    // when unavailable.
    ngx: OnceCell<Option<NgxRequest>>,
    // The shared dict last opened (`shared_dict` hands out `&mut` to it).
    dict: Option<LuaSharedDict<'lua>>,
}

/// Direct calls on/off for this process, i.e. this worker (on by default);
/// the in-worker benchmark switches them off to measure the Lua path side by
/// side. An atomic, not a thread-local: TLS in a shared object costs a
/// `__tls_get_addr` call per access.
static DIRECT_CALLS: AtomicBool = AtomicBool::new(true);

/// Switches the direct calls of [`super::ngx`] on or off for this process
/// (worker); returns whether they are available here at all.
pub(crate) fn set_direct_calls(enabled: bool) -> bool {
    DIRECT_CALLS.store(enabled, Ordering::Relaxed);
    super::ngx::available()
}

/// Which `kong.*` call a direct call stands for: each is allowed in the
/// phases Kong allows it in (kong/pdk/private/phases.lua); elsewhere the
/// call goes through `kong.*`, whose phase check raises the error.
#[derive(Clone, Copy)]
enum Direct {
    /// `kong.request.get_header`: every request phase.
    RequestRead,
    /// `kong.service.request.set_header`: rewrite, access (and balancer).
    ServiceRequestWrite,
    /// `kong.response.set_header`: rewrite, access, header_filter, response.
    ResponseWrite,
}

impl Direct {
    fn allowed_in(self, phase: Phase) -> bool {
        match self {
            Direct::RequestRead => !matches!(phase, Phase::Certificate | Phase::Preread),
            Direct::ServiceRequestWrite => matches!(phase, Phase::Rewrite | Phase::Access),
            Direct::ResponseWrite => matches!(
                phase,
                Phase::Rewrite | Phase::Access | Phase::HeaderFilter | Phase::Response
            ),
        }
    }
}

/// A short Lua string (an address) copied straight off the Lua stack into
/// a fixed buffer: no allocation, no reference kept (mlua's borrowed
/// bytes allocate).
struct ShortBytes {
    buf: [u8; 64],
    len: usize,
}

impl ShortBytes {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn copy(bytes: &[u8]) -> mlua::Result<Self> {
        let mut buf = [0u8; 64];
        let len = super::copy_into(bytes, &mut buf, "a short Lua string")
            .map_err(|e| mlua::Error::runtime(e.to_string()))?;
        Ok(ShortBytes { buf, len })
    }
}

impl mlua::FromLua for ShortBytes {
    fn from_lua(value: mlua::Value, _: &Lua) -> mlua::Result<Self> {
        match value {
            mlua::Value::String(s) => ShortBytes::copy(&s.as_bytes()),
            other => Err(mlua::Error::runtime(format!(
                "expected a string, got a {}",
                other.type_name()
            ))),
        }
    }

    unsafe fn from_stack(idx: std::ffi::c_int, lua: &mlua::state::RawLua) -> mlua::Result<Self> {
        use mlua::ffi;
        let state = lua.state();
        // SAFETY: mlua hands over a valid index of its current state; the
        // bytes are copied before anything can collect the string.
        unsafe {
            if ffi::lua_type(state, idx) != ffi::LUA_TSTRING {
                let found =
                    std::ffi::CStr::from_ptr(ffi::lua_typename(state, ffi::lua_type(state, idx)));
                return Err(mlua::Error::runtime(format!(
                    "expected a string, got a {}",
                    found.to_string_lossy()
                )));
            }
            let mut len = 0;
            let data = ffi::lua_tolstring(state, idx, &mut len);
            ShortBytes::copy(std::slice::from_raw_parts(data.cast::<u8>(), len))
        }
    }
}

impl<'lua> LuaPdk<'lua> {
    pub(crate) fn new(lua: &'lua Lua, cache: &'lua PdkCache) -> Self {
        LuaPdk {
            lua,
            thread: cache.running.thread(),
            cache,
            actions: Actions::default(),
            shared: None,
            plugin: None,
            body: None,
            phase: None,
            ngx: OnceCell::new(),
            dict: None,
        }
    }

    /// Sets the phase this PDK serves, which allows the direct calls Kong
    /// allows in it.
    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = Some(phase);
    }

    /// The nginx request for direct call `call`, if available and allowed
    /// in this phase.
    fn direct(&self, call: Direct) -> Option<NgxRequest> {
        if !self.cache.http || !self.phase.is_some_and(|phase| call.allowed_in(phase)) {
            return None;
        }
        *self.ngx.get_or_init(|| {
            DIRECT_CALLS
                .load(Ordering::Relaxed)
                .then(|| NgxRequest::current(self.running_thread()))
                .flatten()
        })
    }

    /// Hands over the request body the Lua side read (READS_REQUEST_BODY),
    /// so `get_raw_body` need not call back into Lua: `None` when
    /// `kong.request.get_raw_body()` answered `nil` (the body did not fit
    /// into the client body buffer).
    pub(crate) fn set_request_body(&mut self, body: Option<mlua::LuaString>) {
        self.body = Some(body);
    }

    /// Queues a write for the Lua side.
    fn defer(&mut self, op: Op, name: &[u8], value: &[u8]) -> Result<()> {
        if op == Op::SreqSetRawBody {
            // The request body changes: what was handed over is stale.
            self.body = None;
        }
        self.actions.push(op, name, value)
    }

    /// The writes not applied yet, for the Lua side to apply after the phase.
    pub(crate) fn take_actions(&mut self) -> Option<Vec<u8>> {
        (!self.actions.is_empty()).then(|| self.actions.take())
    }

    /// Applies the pending writes now, by calling the `kong.*` functions.
    fn flush(&mut self) -> Result<()> {
        if self.actions.is_empty() {
            return Ok(());
        }
        let actions = self.actions.take();
        for (op, name, value) in actions::decode(&actions)? {
            let (_, path, args) = actions::OPS[op as usize - 1];
            let id =
                F::for_op(op).ok_or_else(|| Error::msg(format!("no handle for kong.{path}")))?;
            match args {
                Args::Name => {
                    self.call::<()>(id, self.lua.create_string(name).map_err(Error::lua)?)?
                }
                Args::Value => {
                    self.call::<()>(id, self.lua.create_string(value).map_err(Error::lua)?)?
                }
                Args::Status => {
                    let status: u16 = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| Error::msg("corrupt status action"))?;
                    self.call::<()>(id, status)?
                }
                Args::NameValue => self.call::<()>(
                    id,
                    (
                        self.lua.create_string(name).map_err(Error::lua)?,
                        self.lua.create_string(value).map_err(Error::lua)?,
                    ),
                )?,
            }
        }
        Ok(())
    }

    /// The Lua state this PDK calls into.
    pub(crate) fn lua(&self) -> &'lua Lua {
        self.lua
    }

    fn function(&self, id: F) -> Result<&Function> {
        let cell = &self.cache.handles.functions[id as usize];
        if let Some(function) = cell.get() {
            return Ok(function);
        }
        let path = PATHS[id as usize];
        let function = match self.walk(path)? {
            LuaValue::Function(function) => function,
            other => {
                return Err(Error::msg(format!(
                    "kong.{path} is not a function (got {}): is the kong global set up?",
                    other.type_name()
                )));
            }
        };
        Ok(cell.get_or_init(|| function))
    }

    /// `kong.<path>`, looked up on the running thread (Kong's tables may
    /// resolve fields through metamethods).
    fn walk(&self, path: &str) -> Result<LuaValue> {
        eval_on(self.lua, self.thread, &format!("return kong.{path}"))
            .map_err(|e| Error::lua(e).context(format_args!("kong.{path}")))
    }

    fn call<R: FromLuaMulti>(&self, id: F, args: impl IntoLuaMulti) -> Result<R> {
        let function = self.function(id)?;
        call_on(self.lua, self.thread, function, args)
            .map_err(|e| Error::lua(e).context(format_args!("kong.{}", PATHS[id as usize])))
    }

    /// The Lua thread this phase runs on.
    fn running_thread(&self) -> *mut mlua::lua_State {
        if self.thread.is_null() {
            self.lua.exec_raw_lua(|raw| raw.state())
        } else {
            self.thread
        }
    }

    /// `kong.ctx[key]`: a per-request table Kong's `kong.ctx` resolves
    /// through lua-nginx-module, hence a call on the running thread.
    fn ctx_field(&self, key: &str) -> Result<Table> {
        let get = match self.cache.handles.ctx.get() {
            Some(get) => get,
            None => {
                let get: Function = eval_on(
                    self.lua,
                    self.thread,
                    "return function(key) return kong.ctx[key] end",
                )
                .map_err(Error::lua)?;
                self.cache.handles.ctx.get_or_init(|| get)
            }
        };
        let table: Option<Table> = call_on(self.lua, self.thread, get, key)
            .map_err(|e| Error::lua(e).context(format_args!("kong.ctx.{key}")))?;
        table.ok_or_else(|| Error::msg(format!("kong.ctx.{key} is not a table")))
    }

    /// `kong.ctx.plugin` of the current request (Kong resolves it per
    /// request; one phase call is one request, so it is kept for the call).
    pub(crate) fn plugin_ctx(&mut self) -> Result<Table> {
        if let Some(table) = &self.plugin {
            return Ok(table.clone());
        }
        let table = self.ctx_field("plugin")?;
        self.plugin = Some(table.clone());
        Ok(table)
    }

    fn shared_ctx(&mut self) -> Result<Table> {
        if let Some(table) = &self.shared {
            return Ok(table.clone());
        }
        let table = self.ctx_field("shared")?;
        self.shared = Some(table.clone());
        Ok(table)
    }

    /// Calls a function that returns `value` or `nil, err` (Kong's convention)
    /// and turns the `err` into an `Err`.
    fn call_checked<R: mlua::FromLua>(&self, id: F, args: impl IntoLuaMulti) -> Result<Option<R>> {
        let (value, err): (Option<R>, Option<String>) = self.call(id, args)?;
        match (value, err) {
            (None, Some(err)) => Err(Error::msg(format!("kong.{}: {err}", PATHS[id as usize]))),
            (value, _) => Ok(value),
        }
    }
}

/// Flattens Kong's header table (`name -> string | { string, … }`).
fn headers_from(table: Table) -> Result<Headers> {
    let mut headers = Headers::new();
    for pair in table.pairs::<BString, LuaValue>() {
        let (name, value) = pair.map_err(Error::lua)?;
        let name = String::from_utf8(name.into())
            .map_err(|_| Error::msg("header name is not valid UTF-8"))?;
        match value {
            LuaValue::Table(values) => {
                for value in values.sequence_values::<BString>() {
                    headers.push((name.clone(), value.map_err(Error::lua)?.into()));
                }
            }
            LuaValue::String(value) => headers.push((name, value.as_bytes().to_vec())),
            other => {
                return Err(Error::msg(format!(
                    "header {name} has a {} value",
                    other.type_name()
                )));
            }
        }
    }
    Ok(headers)
}

fn query_value(value: LuaValue) -> Result<QueryValue> {
    match value {
        LuaValue::Boolean(true) => Ok(QueryValue::Flag),
        LuaValue::String(s) => Ok(QueryValue::Value(s.as_bytes().to_vec())),
        other => Err(Error::msg(format!(
            "query argument has a {} value",
            other.type_name()
        ))),
    }
}

fn entity_from(table: Option<Table>, name_field: &str) -> Result<Option<Entity>> {
    let Some(table) = table else { return Ok(None) };
    Ok(Some(Entity {
        id: table
            .get::<Option<String>>("id")
            .map_err(Error::lua)?
            .unwrap_or_default(),
        name: table.get(name_field).map_err(Error::lua)?,
        fields: serde_json::Map::new(),
    }))
}

/// An entity with every field (consumers, credentials); `kong.client`
/// returns whatever table the authenticating plugin gave, so `id` and the
/// name are taken only when they are strings.
fn full_entity_from(
    value: LuaValue,
    name_field: &str,
    markers: &CjsonMarkers,
) -> Result<Option<Entity>> {
    match value {
        LuaValue::Nil => Ok(None),
        LuaValue::Table(_) => match lua_to_json(&value, markers, 0)? {
            Some(Json::Object(fields)) => Ok(Some(Entity::from_fields(fields, name_field))),
            // a table of indices only (or empty with cjson's array_mt)
            _ => Ok(Some(Entity::default())),
        },
        other => Err(Error::msg(format!(
            "the authenticated entity is a {}, not a table",
            other.type_name()
        ))),
    }
}

fn value_from_lua(value: LuaValue, depth: usize) -> Result<Value> {
    if depth > 32 {
        return Err(Error::msg("ctx value nests deeper than 32 tables"));
    }
    Ok(match value {
        LuaValue::Nil => Value::Nil,
        LuaValue::Boolean(b) => Value::Boolean(b),
        LuaValue::Integer(i) => Value::Integer(i),
        LuaValue::Number(n) => Value::Number(n),
        LuaValue::String(s) => Value::String(s.as_bytes().to_vec()),
        LuaValue::Table(t) => {
            let mut pairs = Vec::new();
            for pair in t.pairs::<LuaValue, LuaValue>() {
                let (k, v) = pair.map_err(Error::lua)?;
                pairs.push((value_from_lua(k, depth + 1)?, value_from_lua(v, depth + 1)?));
            }
            Value::Table(pairs)
        }
        other => {
            return Err(Error::msg(format!(
                "a {} in kong.ctx cannot be read from Rust",
                other.type_name()
            )));
        }
    })
}

fn value_to_lua(lua: &Lua, value: Value) -> Result<LuaValue> {
    Ok(match value {
        Value::Nil => LuaValue::Nil,
        Value::Boolean(b) => LuaValue::Boolean(b),
        Value::Integer(i) => LuaValue::Integer(i),
        Value::Number(n) => LuaValue::Number(n),
        Value::String(s) => LuaValue::String(lua.create_string(s).map_err(Error::lua)?),
        Value::Table(pairs) => {
            let table = lua
                .create_table_with_capacity(0, pairs.len())
                .map_err(Error::lua)?;
            for (k, v) in pairs {
                table
                    .raw_set(value_to_lua(lua, k)?, value_to_lua(lua, v)?)
                    .map_err(Error::lua)?;
            }
            LuaValue::Table(table)
        }
    })
}

crate::pdk::namespaces!(LuaPdk<'_>);

impl<'lua> LuaPdk<'lua> {
    /// cjson's array markers, looked up once.
    fn markers(&self) -> &CjsonMarkers {
        self.cache
            .handles
            .cjson
            .get_or_init(|| CjsonMarkers::load(self.lua, self.thread))
    }

    /// JSON as a Lua argument (`None`: `nil`).
    fn json_arg(&self, value: Option<&Json>) -> Result<LuaValue> {
        match value {
            None | Some(Json::Null) => Ok(LuaValue::Nil),
            Some(value) => json_to_lua(self.lua, value, self.markers(), 0),
        }
    }

    /// `ngx.shared[name]`, its methods looked up once per worker.
    fn dict_handles(&self, name: &str) -> Result<Rc<DictHandles>> {
        if let Some(found) = self
            .cache
            .handles
            .dicts
            .borrow()
            .iter()
            .find(|d| d.name == name)
        {
            return Ok(found.clone());
        }
        let missing = || {
            Error::new(
                crate::ErrorKind::Pdk,
                format!(
                    "no shared dict named {name:?} (declare it with lua_shared_dict; on Kong, nginx_http_lua_shared_dict in kong.conf)"
                ),
            )
        };
        let shared: LuaValue =
            eval_on(self.lua, self.thread, "return ngx and ngx.shared").map_err(Error::lua)?;
        let LuaValue::Table(shared) = shared else {
            return Err(missing());
        };
        let dict = match shared.get::<LuaValue>(name).map_err(Error::lua)? {
            LuaValue::Table(dict) => dict,
            _ => return Err(missing()),
        };
        let method = |method: &str| -> Result<Function> {
            dict.get::<Function>(method)
                .map_err(|e| Error::lua(e).context(format_args!("ngx.shared.{name}.{method}")))
        };
        let handles = Rc::new(DictHandles {
            name: name.to_string(),
            get: method("get")?,
            set: method("set")?,
            add: method("add")?,
            incr: method("incr")?,
            delete: method("delete")?,
            zone: if self.cache.http {
                super::ngx::Zone::find(name)
            } else {
                None
            },
            dict,
        });
        self.cache.handles.dicts.borrow_mut().push(handles.clone());
        Ok(handles)
    }

    /// `ngx.shared[name]`, for `Pdk::shared_dict`.
    fn open_shared_dict(&mut self, name: &str) -> Result<&mut dyn SharedDict> {
        if self.dict.as_ref().is_none_or(|d| d.handles.name != name) {
            let handles = self.dict_handles(name)?;
            self.dict = Some(LuaSharedDict {
                lua: self.lua,
                thread: self.thread,
                handles,
            });
        }
        Ok(self.dict.as_mut().expect("just opened"))
    }

    /// Logs `message` through the running plugin's `kong.log` (see [`LOG_SHIM`]).
    fn log_bytes(&self, level: LogLevel, message: &[u8]) -> Result<()> {
        let shim = match self.cache.handles.log.get() {
            Some(shim) => shim,
            None => {
                let shim: Function =
                    eval_on(self.lua, self.thread, LOG_SHIM).map_err(Error::lua)?;
                self.cache.handles.log.get_or_init(|| shim)
            }
        };
        let message = self.lua.create_string(message).map_err(Error::lua)?;
        call_on(self.lua, self.thread, shim, (level.name(), message))
            .map_err(|e| Error::lua(e).context(format_args!("kong.log.{}", level.name())))
    }
}

impl Log for LuaPdk<'_> {
    fn log(&mut self, level: LogLevel, message: &str) -> Result<()> {
        self.log_bytes(level, message.as_bytes())
    }
    fn serialize(&mut self) -> Result<Json> {
        self.flush()?;
        let table: LuaValue = self.call(F::LogSerialize, ())?;
        Ok(lua_to_json(&table, self.markers(), 0)
            .map_err(|e| e.context("kong.log.serialize"))?
            .unwrap_or(Json::Null))
    }
}

impl Request for LuaPdk<'_> {
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.flush()?;
        if let Some(request) = self.direct(Direct::RequestRead)
            && let Some(value) = request.header(name)?
        {
            // nginx >= 1.23 joins a repeated header into `$http_*` with ", ";
            // Kong 3.6+ then returns the first value (kong/tools/http.lua
            // get_header), which only its Lua path can find.
            let joined = value
                .as_ref()
                .is_some_and(|v| v.windows(2).any(|w| w == b", "));
            if !joined {
                return Ok(value);
            }
        }
        Ok(self
            .call::<Option<BString>>(F::ReqGetHeader, name)?
            .map(Into::into))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.flush()?;
        headers_from(self.call(F::ReqGetHeaders, ())?)
    }
    fn get_method(&mut self) -> Result<String> {
        self.flush()?;
        self.call(F::ReqGetMethod, ())
    }
    fn get_path(&mut self) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(self.call::<BString>(F::ReqGetPath, ())?.into())
    }
    fn get_path_with_query(&mut self) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(self.call::<BString>(F::ReqGetPathWithQuery, ())?.into())
    }
    fn get_raw_query(&mut self) -> Result<Vec<u8>> {
        self.flush()?;
        Ok(self.call::<BString>(F::ReqGetRawQuery, ())?.into())
    }
    fn get_query_arg(&mut self, name: &str) -> Result<Option<QueryValue>> {
        self.flush()?;
        match self.call::<LuaValue>(F::ReqGetQueryArg, name)? {
            LuaValue::Nil => Ok(None),
            value => query_value(value).map(Some),
        }
    }
    fn get_query(&mut self) -> Result<Vec<(Vec<u8>, QueryValue)>> {
        self.flush()?;
        let table: Table = self.call(F::ReqGetQuery, ())?;
        let mut args = Vec::new();
        for pair in table.pairs::<BString, LuaValue>() {
            let (name, value) = pair.map_err(Error::lua)?;
            match value {
                LuaValue::Table(values) => {
                    for value in values.sequence_values::<LuaValue>() {
                        args.push((name.to_vec(), query_value(value.map_err(Error::lua)?)?));
                    }
                }
                value => args.push((name.into(), query_value(value)?)),
            }
        }
        Ok(args)
    }
    fn get_scheme(&mut self) -> Result<String> {
        self.flush()?;
        self.call(F::ReqGetScheme, ())
    }
    fn get_host(&mut self) -> Result<String> {
        self.flush()?;
        self.call(F::ReqGetHost, ())
    }
    fn get_port(&mut self) -> Result<u16> {
        self.flush()?;
        self.call(F::ReqGetPort, ())
    }
    fn get_http_version(&mut self) -> Result<Option<f64>> {
        self.flush()?;
        self.call(F::ReqGetHttpVersion, ())
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        self.flush()?;
        if let Some(body) = &self.body {
            return Ok(body.as_ref().map(|body| body.as_bytes().to_vec()));
        }
        // `nil, err` here only means "did not fit into the client body
        // buffer" (the other errors need a max_allowed_file_size argument).
        let (body, _err): (Option<BString>, Option<BString>) = self.call(F::ReqGetRawBody, ())?;
        Ok(body.map(Into::into))
    }
    fn get_start_time(&mut self) -> Result<f64> {
        self.flush()?;
        self.call(F::ReqGetStartTime, ())
    }
}

impl Response for LuaPdk<'_> {
    fn get_status(&mut self) -> Result<u16> {
        self.flush()?;
        self.call(F::RespGetStatus, ())
    }
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.flush()?;
        Ok(self
            .call::<Option<BString>>(F::RespGetHeader, name)?
            .map(Into::into))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.flush()?;
        headers_from(self.call(F::RespGetHeaders, ())?)
    }
    fn set_status(&mut self, status: u16) -> Result<()> {
        self.defer(Op::RespSetStatus, b"", status.to_string().as_bytes())
    }
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        // Kong ignores Transfer-Encoding with a warning: kong.response does it.
        let plain = !name.eq_ignore_ascii_case("transfer-encoding")
            && !name.eq_ignore_ascii_case("transfer_encoding");
        if let Some(request) = self.direct(Direct::ResponseWrite).filter(|_| plain) {
            // Writes queued earlier take effect first, in order.
            self.flush()?;
            return request.set_response_header(name, kong_header_value(value));
        }
        self.defer(Op::RespSetHeader, name.as_bytes(), value)
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.defer(Op::RespAddHeader, name.as_bytes(), value)
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.defer(Op::RespClearHeader, name.as_bytes(), b"")
    }
}

impl ServiceRequest for LuaPdk<'_> {
    fn set_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        // `host` also sets the upstream host and `:authority` is gRPC's:
        // both stay with kong.service.request.set_header.
        let plain = !name.eq_ignore_ascii_case("host") && name != ":authority";
        if let Some(request) = self.direct(Direct::ServiceRequestWrite).filter(|_| plain) {
            // Writes queued earlier take effect first, in order.
            self.flush()?;
            return request.set_request_header(name, kong_header_value(value));
        }
        self.defer(Op::SreqSetHeader, name.as_bytes(), value)
    }
    fn add_header(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.defer(Op::SreqAddHeader, name.as_bytes(), value)
    }
    fn clear_header(&mut self, name: &str) -> Result<()> {
        self.defer(Op::SreqClearHeader, name.as_bytes(), b"")
    }
    fn set_headers(&mut self, headers: &[(&str, &[u8])]) -> Result<()> {
        for (name, value) in headers {
            ServiceRequest::set_header(self, name, value)?;
        }
        Ok(())
    }
    fn set_path(&mut self, path: &[u8]) -> Result<()> {
        self.defer(Op::SreqSetPath, b"", path)
    }
    fn set_raw_query(&mut self, query: &[u8]) -> Result<()> {
        self.defer(Op::SreqSetRawQuery, b"", query)
    }
    fn set_query(&mut self, args: &[(&[u8], &[u8])]) -> Result<()> {
        self.flush()?;
        let table = self
            .lua
            .create_table_with_capacity(0, args.len())
            .map_err(Error::lua)?;
        for (name, value) in args {
            table
                .raw_set(BStr::new(name), BStr::new(value))
                .map_err(Error::lua)?;
        }
        self.call(F::SreqSetQuery, table)
    }
    fn set_method(&mut self, method: &str) -> Result<()> {
        self.defer(Op::SreqSetMethod, b"", method.as_bytes())
    }
    fn set_raw_body(&mut self, body: &[u8]) -> Result<()> {
        self.defer(Op::SreqSetRawBody, b"", body)
    }
}

impl ServiceResponse for LuaPdk<'_> {
    fn get_status(&mut self) -> Result<Option<u16>> {
        self.flush()?;
        self.call(F::SrespGetStatus, ())
    }
    fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        self.flush()?;
        Ok(self
            .call::<Option<BString>>(F::SrespGetHeader, name)?
            .map(Into::into))
    }
    fn get_headers(&mut self) -> Result<Headers> {
        self.flush()?;
        headers_from(self.call(F::SrespGetHeaders, ())?)
    }
    fn get_raw_body(&mut self) -> Result<Option<Vec<u8>>> {
        self.flush()?;
        Ok(self
            .call_checked::<BString>(F::SrespGetRawBody, ())?
            .map(Into::into))
    }
}

impl Client for LuaPdk<'_> {
    fn load_consumer(
        &mut self,
        id: &str,
        by_username: bool,
    ) -> super::LocalFuture<Result<Option<Entity>>> {
        Box::pin(crate::io::load_consumer(id.to_string(), by_username))
    }
    fn get_ip(&mut self) -> Result<String> {
        self.flush()?;
        self.call(F::CliGetIp, ())
    }
    fn get_forwarded_ip(&mut self) -> Result<String> {
        self.flush()?;
        self.call(F::CliGetForwardedIp, ())
    }
    fn get_forwarded_ip_into(&mut self, out: &mut [u8]) -> Result<usize> {
        self.flush()?;
        let ip: ShortBytes = self.call(F::CliGetForwardedIp, ())?;
        super::copy_into(ip.bytes(), out, "client.get_forwarded_ip")
    }
    fn get_port(&mut self) -> Result<u16> {
        self.flush()?;
        self.call(F::CliGetPort, ())
    }
    fn get_consumer(&mut self) -> Result<Option<Entity>> {
        self.flush()?;
        let value = self.call(F::CliGetConsumer, ())?;
        full_entity_from(value, "username", self.markers())
            .map_err(|e| e.context("kong.client.get_consumer"))
    }
    fn get_credential(&mut self) -> Result<Option<Entity>> {
        self.flush()?;
        let value = self.call(F::CliGetCredential, ())?;
        full_entity_from(value, "name", self.markers())
            .map_err(|e| e.context("kong.client.get_credential"))
    }
    fn authenticate(&mut self, consumer: Option<&Json>, credential: Option<&Json>) -> Result<()> {
        self.flush()?;
        let consumer = self.json_arg(consumer)?;
        let credential = self.json_arg(credential)?;
        self.call(F::CliAuthenticate, (consumer, credential))
    }
}

impl Ctx for LuaPdk<'_> {
    fn shared_get(&mut self, key: &str) -> Result<Value> {
        value_from_lua(self.shared_ctx()?.get(key).map_err(Error::lua)?, 0)
    }
    fn shared_set(&mut self, key: &str, value: Value) -> Result<()> {
        self.shared_ctx()?
            .set(key, value_to_lua(self.lua, value)?)
            .map_err(Error::lua)
    }
    fn plugin_get(&mut self, key: &str) -> Result<Value> {
        value_from_lua(self.plugin_ctx()?.get(key).map_err(Error::lua)?, 0)
    }
    fn plugin_set(&mut self, key: &str, value: Value) -> Result<()> {
        self.plugin_ctx()?
            .set(key, value_to_lua(self.lua, value)?)
            .map_err(Error::lua)
    }
}

impl Nginx for LuaPdk<'_> {
    fn get_subsystem(&mut self) -> Result<String> {
        self.call(F::NgxGetSubsystem, ())
    }
}

impl Router for LuaPdk<'_> {
    fn get_route(&mut self) -> Result<Option<Entity>> {
        self.flush()?;
        entity_from(self.call(F::RouterGetRoute, ())?, "name")
    }
    fn get_service(&mut self) -> Result<Option<Entity>> {
        self.flush()?;
        entity_from(self.call(F::RouterGetService, ())?, "name")
    }
}

impl PluginInfo for LuaPdk<'_> {
    fn get_id(&mut self) -> Result<Option<String>> {
        self.call(F::PluginGetId, ())
    }
}

/// `ngx.shared.DICT` through its Lua methods (see [`SharedDict`]).
struct LuaSharedDict<'lua> {
    lua: &'lua Lua,
    thread: *mut mlua::lua_State,
    handles: Rc<DictHandles>,
}

impl crate::pdk::sealed::Sealed for LuaSharedDict<'_> {}

impl LuaSharedDict<'_> {
    fn key(&self, key: &[u8]) -> Result<mlua::LuaString> {
        self.lua.create_string(key).map_err(Error::lua)
    }

    fn fail(&self, method: &str, err: impl std::fmt::Display) -> Error {
        Error::new(
            crate::ErrorKind::Pdk,
            format!("ngx.shared.{}:{method}: {err}", self.handles.name),
        )
    }

    fn call<R: FromLuaMulti>(
        &self,
        method: &str,
        f: &Function,
        args: impl IntoLuaMulti,
    ) -> Result<R> {
        call_on(self.lua, self.thread, f, args).map_err(|e| {
            Error::lua(e).context(format_args!("ngx.shared.{}:{method}", self.handles.name))
        })
    }
}

impl SharedDict for LuaSharedDict<'_> {
    fn name(&self) -> &str {
        &self.handles.name
    }
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let h = &self.handles;
        let (value, err): (LuaValue, LuaValue) =
            self.call("get", &h.get, (&h.dict, self.key(key)?))?;
        match value {
            LuaValue::Nil => match err {
                LuaValue::String(err) => Err(self.fail("get", err.to_string_lossy())),
                _ => Ok(None),
            },
            LuaValue::String(s) => Ok(Some(s.as_bytes().to_vec())),
            LuaValue::Integer(i) => Ok(Some(i.to_string().into_bytes())),
            LuaValue::Number(n) => Ok(Some(number_bytes(n))),
            LuaValue::Boolean(b) => Ok(Some(b.to_string().into_bytes())),
            other => Err(self.fail("get", format!("a {} value", other.type_name()))),
        }
    }
    fn set(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let h = &self.handles;
        let value = self.lua.create_string(value).map_err(Error::lua)?;
        let (ok, err): (bool, Option<BString>) = self.call(
            "set",
            &h.set,
            (&h.dict, self.key(key)?, value, ttl_seconds(ttl)),
        )?;
        if ok {
            Ok(())
        } else {
            Err(self.fail("set", err.unwrap_or_default()))
        }
    }
    fn add(&mut self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let h = &self.handles;
        let value = self.lua.create_string(value).map_err(Error::lua)?;
        let (ok, err): (bool, Option<BString>) = self.call(
            "add",
            &h.add,
            (&h.dict, self.key(key)?, value, ttl_seconds(ttl)),
        )?;
        match (ok, err) {
            (true, _) => Ok(true),
            (false, Some(err)) if err == "exists" => Ok(false),
            (false, err) => Err(self.fail("add", err.unwrap_or_default())),
        }
    }
    fn incr(
        &mut self,
        key: &[u8],
        by: i64,
        init: Option<i64>,
        ttl: Option<Duration>,
    ) -> Result<i64> {
        let h = &self.handles;
        if let Some(zone) = h.zone
            && DIRECT_CALLS.load(Ordering::Relaxed)
        {
            return zone
                .incr(key, by as f64, init.map(|i| i as f64), ttl_seconds(ttl))
                .map(|value| value as i64)
                .map_err(|err| self.fail("incr", err));
        }
        let ttl = ttl.map(|ttl| ttl_seconds(Some(ttl)));
        let (value, err): (Option<f64>, Option<BString>) = self.call(
            "incr",
            &h.incr,
            (
                &h.dict,
                self.key(key)?,
                by as f64,
                init.map(|i| i as f64),
                ttl,
            ),
        )?;
        match value {
            Some(value) => Ok(value as i64),
            None => Err(self.fail("incr", err.unwrap_or_default())),
        }
    }
    fn delete(&mut self, key: &[u8]) -> Result<()> {
        let h = &self.handles;
        let (ok, err): (bool, Option<BString>) =
            self.call("delete", &h.delete, (&h.dict, self.key(key)?))?;
        if ok {
            Ok(())
        } else {
            Err(self.fail("delete", err.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_op_has_its_kong_function() {
        for (op, path, _) in actions::OPS {
            let id = F::for_op(op).unwrap_or_else(|| panic!("no handle for kong.{path}"));
            assert_eq!(PATHS[id as usize], path);
        }
    }

    /// A `kong` global and an `ngx.shared` with ngx_lua's answers, in plain
    /// LuaJIT (the gateway and Kong specs check the real ones).
    const FAKE: &str = r#"
        local ctx = {}
        kong = {
          client = {
            get_consumer = function() return ctx.consumer end,
            get_credential = function() return ctx.credential end,
            authenticate = function(consumer, credential)
              if consumer == nil and credential == nil then
                error("either credential or consumer must be provided", 2)
              end
              ctx.consumer, ctx.credential = consumer, credential
            end,
          },
          log = {
            serialize = function()
              if not ctx.log_phase then
                error("function cannot be called in access phase (only in: log)", 2)
              end
              return { request = { querystring = {}, headers = { a = { "1", "2" } } },
                       tries = { { ip = "127.0.0.1", port = 80 } }, nothing = ngx.null,
                       f = print }
            end,
          },
          ctx = { shared = {}, plugin = {} },
        }
        local store = {}
        local dict = {}
        function dict.get(self, key)
          if key == "" then return nil, "empty key" end
          return store[key]
        end
        function dict.set(self, key, value, ttl) store[key] = value return true end
        function dict.add(self, key, value, ttl)
          if store[key] ~= nil then return false, "exists" end
          store[key] = value
          return true
        end
        function dict.incr(self, key, by, init, ttl)
          if ttl and not init then error('must provide "init" when providing "init_ttl"', 2) end
          local v = store[key]
          if v == nil then
            if init == nil then return nil, "not found" end
            v = init
          elseif type(v) ~= "number" then
            return nil, "not a number"
          end
          store[key] = v + by
          return store[key]
        end
        function dict.delete(self, key) store[key] = nil return true end
        ngx = { shared = { d = setmetatable({}, { __index = dict }) }, null = nil }
        return function() ctx.log_phase = true end
    "#;

    #[test]
    fn client_log_and_shared_dicts_through_lua() {
        let lua = Lua::new();
        let to_log: Function = lua.load(FAKE).eval().unwrap();
        let cache = PdkCache::new(&lua, Rc::default());
        let mut pdk = LuaPdk::new(&lua, &cache);
        let kong: &mut dyn crate::Pdk = &mut pdk;

        assert_eq!(kong.client().get_consumer().unwrap(), None);
        let consumer = serde_json::json!({"id": "c1", "username": "alice", "tags": [], "x": null});
        kong.client()
            .authenticate(Some(&consumer), Some(&serde_json::json!({"id": "k"})))
            .unwrap();
        let got = kong.client().get_consumer().unwrap().unwrap();
        assert_eq!(
            (got.id.as_str(), got.name.as_deref()),
            ("c1", Some("alice"))
        );
        // an empty array stays one only with cjson's array_mt (loaded in nginx)
        assert_eq!(got.fields.len(), 3);
        assert_eq!(kong.client().get_credential().unwrap().unwrap().id, "k");
        let err = kong.client().authenticate(None, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("either credential or consumer must be provided"),
            "{err}"
        );

        let err = kong.log().serialize().unwrap_err();
        assert!(err.to_string().contains("only in: log"), "{err}");
        to_log.call::<()>(()).unwrap();
        assert_eq!(
            kong.log().serialize().unwrap(),
            serde_json::json!({
                "request": {"querystring": {}, "headers": {"a": ["1", "2"]}},
                "tries": [{"ip": "127.0.0.1", "port": 80}],
            })
        );

        let missing = kong.shared_dict("nope").err().unwrap();
        assert!(missing.to_string().contains("\"nope\""), "{missing}");
        let dict = kong.shared_dict("d").unwrap();
        assert_eq!(dict.get(b"k").unwrap(), None);
        dict.set(b"k", b"\xff", None).unwrap();
        assert_eq!(dict.get(b"k").unwrap(), Some(vec![0xff]));
        assert!(!dict.add(b"k", b"x", None).unwrap());
        assert!(
            dict.add(b"k2", b"x", Some(Duration::from_millis(1)))
                .unwrap()
        );
        assert_eq!(dict.incr(b"n", 2, Some(40), None).unwrap(), 42);
        assert_eq!(dict.get(b"n").unwrap(), Some(b"42".to_vec()));
        assert_eq!(
            dict.incr(b"m", 1, None, None).unwrap_err().to_string(),
            "ngx.shared.d:incr: not found"
        );
        assert_eq!(
            dict.incr(b"k", 1, None, None).unwrap_err().to_string(),
            "ngx.shared.d:incr: not a number"
        );
        assert_eq!(
            dict.get(b"").unwrap_err().to_string(),
            "ngx.shared.d:get: empty key"
        );
        let err = dict
            .incr(b"m", 1, None, Some(Duration::from_secs(1)))
            .unwrap_err();
        assert!(err.to_string().contains("must provide"), "{err}");
        dict.delete(b"k").unwrap();
        assert_eq!(dict.get(b"k").unwrap(), None);
    }
}
