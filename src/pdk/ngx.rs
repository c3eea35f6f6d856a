//! Reads and header writes straight through lua-nginx-module's exported C
//! functions, skipping the Lua round trip of a `kong.*` call where the
//! effect is the same.
//!
//! Inside nginx, lua-nginx-module exports `ngx_http_lua_get_request` (its
//! public C API, `ngx_http_lua_api.h`) and the `ngx_http_lua_ffi_*` functions
//! that lua-resty-core calls through LuaJIT FFI; nginx loads dynamic modules
//! with `RTLD_GLOBAL` and OpenResty's binary exports them, so `dlsym` finds
//! them in either. Outside nginx (`cargo test`, busted with a stubbed
//! `kong`) they are absent and every read goes through Lua as before.
//!
//! Only calls whose Kong implementation is exactly one of these C functions
//! after checks we can make here use this:
//! - `kong.request.get_header(name)` is `ngx.var["http_" .. name:gsub("-",
//!   "_")]` (`kong/pdk/request.lua` through `kong/tools/http.lua`); nginx
//!   lowercases the variable name;
//! - `kong.service.request.set_header(name, value)` is
//!   `ngx.req.set_header(name, value)` after a phase check and type checks
//!   (`kong/pdk/service/request.lua`), except for `host` and `:authority`;
//! - `kong.response.set_header(name, value)` is `ngx.header[name] = value`
//!   after a phase check, a headers-sent check and type checks
//!   (`kong/pdk/response.lua`), except for `Transfer-Encoding`.
//!
//! The caller (`LuaPdk`) keeps the phase checks and
//! the exceptions on the `kong.*` path.

use crate::error::{Error, Result};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

type GetRequest = unsafe extern "C" fn(*mut mlua::lua_State) -> *mut c_void;
type VarGet = unsafe extern "C" fn(
    r: *mut c_void,
    name: *const u8,
    name_len: usize,
    lowcase_buf: *mut u8,
    capture_id: c_int,
    value: *mut *const u8,
    value_len: *mut usize,
    err: *mut *const c_char,
) -> c_int;

type SetRequestHeader = unsafe extern "C" fn(
    r: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    mvals: *const c_void,
    mvals_len: usize,
    overwrite: c_int,
    errmsg: *mut *const c_char,
) -> c_int;
type SetResponseHeader = unsafe extern "C" fn(
    r: *mut c_void,
    key: *const u8,
    key_len: usize,
    is_nil: c_int,
    value: *const u8,
    value_len: usize,
    mvals: *const c_void,
    mvals_len: usize,
    overwrite: c_int,
    errmsg: *mut *const c_char,
) -> c_int;
type HeadersSent = unsafe extern "C" fn(r: *mut c_void) -> c_int;
type GetPhase = unsafe extern "C" fn(r: *mut c_void, err: *mut *const c_char) -> c_int;

/// lua-nginx-module's request contexts (`NGX_HTTP_LUA_CONTEXT_*` in
/// ngx_http_lua_common.h) in which Kong runs plugin phases; anything else
/// (a timer's fake request, init_worker, balancer, ssl) gets no direct call.
const REQUEST_CONTEXTS: c_int = 0x0002 // rewrite
    | 0x0004 // access
    | 0x0008 // content (Kong's buffered `response`)
    | 0x0010 // log
    | 0x0020 // header_filter
    | 0x0040; // body_filter

// lua-nginx-module's return codes (ngx_core.h, resty/core/base.lua).
const NGX_OK: c_int = 0;
const NGX_DECLINED: c_int = -5;
const FFI_NO_REQ_CTX: c_int = -100;
const FFI_BAD_CONTEXT: c_int = -101;

/// The longest variable name read directly; longer header names take the
/// Lua path (they work, just slower).
const MAX_NAME: usize = 256;

struct Api {
    get_request: GetRequest,
    var_get: VarGet,
    set_request_header: SetRequestHeader,
    set_response_header: SetResponseHeader,
    headers_sent: HeadersSent,
    get_phase: GetPhase,
}

/// The address of C function `name` in this process (nginx loads its
/// modules with RTLD_GLOBAL), if there is one.
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up.
    let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!symbol.is_null()).then_some(symbol)
}

/// The C functions, resolved once per process; `None` outside nginx.
fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        let get_request = symbol(c"ngx_http_lua_get_request")?;
        let var_get = symbol(c"ngx_http_lua_ffi_var_get")?;
        let set_request_header = symbol(c"ngx_http_lua_ffi_req_set_header")?;
        let set_response_header = symbol(c"ngx_http_lua_ffi_set_resp_header")?;
        let headers_sent = symbol(c"ngx_http_lua_ffi_headers_sent")?;
        let get_phase = symbol(c"ngx_http_lua_ffi_get_phase")?;
        // SAFETY: each symbol has the C signature lua-nginx-module declares
        // for it (ngx_http_lua_api.h; the cdefs of lua-resty-core).
        unsafe {
            Some(Api {
                get_request: std::mem::transmute::<*mut c_void, GetRequest>(get_request),
                var_get: std::mem::transmute::<*mut c_void, VarGet>(var_get),
                set_request_header: std::mem::transmute::<*mut c_void, SetRequestHeader>(
                    set_request_header,
                ),
                set_response_header: std::mem::transmute::<*mut c_void, SetResponseHeader>(
                    set_response_header,
                ),
                headers_sent: std::mem::transmute::<*mut c_void, HeadersSent>(headers_sent),
                get_phase: std::mem::transmute::<*mut c_void, GetPhase>(get_phase),
            })
        }
    })
    .as_ref()
}

/// Whether the direct calls are available in this process (inside nginx
/// with lua-nginx-module).
pub(crate) fn available() -> bool {
    api().is_some()
}

/// Writes nginx's variable name for request header `name` into `out`
/// (`http_` + the name with `-` as `_`; nginx lowercases it) and returns its
/// length, or `None` when it does not fit.
fn header_variable(name: &str, out: &mut [u8; MAX_NAME]) -> Option<usize> {
    const PREFIX: &[u8] = b"http_";
    let len = PREFIX.len() + name.len();
    if len > MAX_NAME {
        return None;
    }
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    for (slot, &byte) in out[PREFIX.len()..len].iter_mut().zip(name.as_bytes()) {
        *slot = if byte == b'-' { b'_' } else { byte };
    }
    Some(len)
}

/// The nginx request a phase runs for, found from the Lua thread running it.
#[derive(Clone, Copy)]
pub(crate) struct NgxRequest {
    api: &'static Api,
    r: *mut c_void,
}

impl NgxRequest {
    /// The request of Lua thread `state` (the one running); `None` outside
    /// nginx or outside a request phase (a timer's fake request, init: e.g.
    /// specs run by Kong's `bin/busted`, which runs in resty's timer).
    pub(crate) fn current(state: *mut mlua::lua_State) -> Option<NgxRequest> {
        let api = api()?;
        // SAFETY: `state` is the live Lua thread that called into Rust;
        // lua-nginx-module reads the request it stored for that thread.
        let r = unsafe { (api.get_request)(state) };
        if r.is_null() {
            return None;
        }
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: `r` is the live request lua-nginx-module just returned;
        // the function only reads its context.
        let context = unsafe { (api.get_phase)(r, &mut err) };
        (context > 0 && context & REQUEST_CONTEXTS == context).then_some(NgxRequest { api, r })
    }

    /// `kong.request.get_header(name)`: the first value of request header
    /// `name` (any case, `-` or `_`), `None` when absent. `Ok(None)` is also
    /// returned for names longer than 256 bytes: the caller falls back.
    ///
    /// # Errors
    /// When nginx refuses the lookup (the request is a fake one, e.g. in
    /// the certificate phase).
    pub(crate) fn header(&self, name: &str) -> Result<Option<Option<Vec<u8>>>> {
        let mut var = [0u8; MAX_NAME];
        match header_variable(name, &mut var) {
            Some(len) => self.var(&var[..len]).map(Some),
            None => Ok(None),
        }
    }

    /// `kong.service.request.set_header(name, value)` for a name other than
    /// `host` and `:authority`: replaces every request header `name` sent
    /// upstream (nginx removes it when `value` is empty).
    ///
    /// # Errors
    /// What nginx refuses (a fake request, no memory), with its message.
    pub(crate) fn set_request_header(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: `r` is the current request; the name and value slices are
        // valid for the call (nginx copies them into the request pool); no
        // multi-value array.
        let rc = unsafe {
            (self.api.set_request_header)(
                self.r,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
                std::ptr::null(),
                0,
                1,
                &mut err,
            )
        };
        write_result(rc, err)
    }

    /// `kong.response.set_header(name, value)` for a name other than
    /// `Transfer-Encoding`: replaces response header `name`.
    ///
    /// # Errors
    /// `headers have already been sent` (Kong's message), or what nginx
    /// refuses, with its message.
    pub(crate) fn set_response_header(&self, name: &str, value: &[u8]) -> Result<()> {
        // SAFETY: `r` is the current request.
        match unsafe { (self.api.headers_sent)(self.r) } {
            1 => return Err(Error::msg("headers have already been sent")),
            0 => {}
            rc => return write_result(rc, std::ptr::null()),
        }
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: as in `set_request_header`; `is_nil` 0 with one value.
        let rc = unsafe {
            (self.api.set_response_header)(
                self.r,
                name.as_ptr(),
                name.len(),
                0,
                value.as_ptr(),
                value.len(),
                std::ptr::null(),
                0,
                1,
                &mut err,
            )
        };
        write_result(rc, err)
    }

    fn var(&self, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut lowcase = [0u8; MAX_NAME];
        let mut value: *const u8 = std::ptr::null();
        let mut value_len: usize = 0;
        let mut err: *const c_char = std::ptr::null();
        // SAFETY: `r` is the current request (found for the running Lua
        // thread during this phase); `name` and `lowcase` hold `name.len()`
        // ≤ MAX_NAME bytes; the out-pointers are valid for the call.
        let rc = unsafe {
            (self.api.var_get)(
                self.r,
                name.as_ptr(),
                name.len(),
                lowcase.as_mut_ptr(),
                0,
                &mut value,
                &mut value_len,
                &mut err,
            )
        };
        match rc {
            NGX_OK if value.is_null() => Ok(Some(Vec::new())),
            // SAFETY: nginx returned `value_len` bytes at `value`, alive in
            // the request's pool; copied out at once.
            NGX_OK => Ok(Some(
                unsafe { std::slice::from_raw_parts(value, value_len) }.to_vec(),
            )),
            NGX_DECLINED => Ok(None),
            _ => {
                let message = if err.is_null() {
                    format!("nginx variable lookup failed ({rc})")
                } else {
                    // SAFETY: lua-nginx-module's error strings are static C strings.
                    unsafe { CStr::from_ptr(err) }
                        .to_string_lossy()
                        .into_owned()
                };
                Err(Error::msg(message))
            }
        }
    }
}

type FindZone = unsafe extern "C" fn(name: *const u8, name_len: usize) -> *mut c_void;
type ShdictIncr = unsafe extern "C" fn(
    zone: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *mut f64,
    err: *mut *const c_char,
    has_init: c_int,
    init: f64,
    init_ttl: std::ffi::c_long,
    forcible: *mut c_int,
) -> c_int;

struct ShdictApi {
    find_zone: FindZone,
    incr: ShdictIncr,
}

/// The shared dict functions, resolved once per process; `None` outside
/// nginx. Apart from [`api`]: a module lacking one set keeps the other.
fn shdict_api() -> Option<&'static ShdictApi> {
    static API: OnceLock<Option<ShdictApi>> = OnceLock::new();
    API.get_or_init(|| {
        let find_zone = symbol(c"ngx_http_lua_find_zone")?;
        let incr = symbol(c"ngx_http_lua_ffi_shdict_incr")?;
        // SAFETY: the signatures of ngx_http_lua_api.h and of
        // lua-resty-core's shdict cdefs.
        unsafe {
            Some(ShdictApi {
                find_zone: std::mem::transmute::<*mut c_void, FindZone>(find_zone),
                incr: std::mem::transmute::<*mut c_void, ShdictIncr>(incr),
            })
        }
    })
    .as_ref()
}

/// One `lua_shared_dict` zone of the HTTP subsystem, for the operations
/// that are exactly one C call in lua-resty-core (`incr`): what
/// `ngx.shared.DICT:incr` does after its argument checks, without the
/// round trip through Lua.
#[derive(Clone, Copy)]
pub(crate) struct Zone(*mut c_void);

impl Zone {
    /// The zone named `name`; `None` outside nginx or when there is none
    /// (the Lua path then says so).
    pub(crate) fn find(name: &str) -> Option<Zone> {
        let api = shdict_api()?;
        // SAFETY: name and length describe a valid byte string; the
        // function only compares it with the zones' names.
        let zone = unsafe { (api.find_zone)(name.as_ptr(), name.len()) };
        (!zone.is_null()).then_some(Zone(zone))
    }

    /// `incr(key, by, init, init_ttl)` as resty.core's `shdict_incr`
    /// (key 1..=65535 bytes; `init_ttl` only with `init`), `Err` with
    /// nginx's message ("not found", "not a number", "no memory").
    pub(crate) fn incr(
        self,
        key: &[u8],
        by: f64,
        init: Option<f64>,
        init_ttl_seconds: f64,
    ) -> std::result::Result<f64, String> {
        let api = shdict_api().ok_or("no shared dict API")?;
        if key.is_empty() {
            return Err("empty key".into());
        }
        if key.len() > 65535 {
            return Err("key too long".into());
        }
        if init.is_none() && init_ttl_seconds != 0.0 {
            return Err("must provide \"init\" when providing \"init_ttl\"".into());
        }
        let mut value = by;
        let mut err: *const c_char = std::ptr::null();
        let mut forcible: c_int = 0;
        // SAFETY: a zone found by name in this process, a valid key, and
        // out-pointers to locals; lua-nginx-module takes the zone's lock.
        let rc = unsafe {
            (api.incr)(
                self.0,
                key.as_ptr(),
                key.len(),
                &mut value,
                &mut err,
                c_int::from(init.is_some()),
                init.unwrap_or(0.0),
                (init_ttl_seconds * 1000.0) as std::ffi::c_long,
                &mut forcible,
            )
        };
        if rc == NGX_OK {
            return Ok(value);
        }
        Err(if err.is_null() {
            format!("failed ({rc})")
        } else {
            // SAFETY: lua-nginx-module's error strings are static C strings.
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        })
    }
}

/// A header write's return code as resty.core reads it.
fn write_result(rc: c_int, err: *const c_char) -> Result<()> {
    match rc {
        NGX_OK | NGX_DECLINED => Ok(()),
        FFI_NO_REQ_CTX => Err(Error::msg("no request ctx found")),
        FFI_BAD_CONTEXT => Err(Error::msg("API disabled in the current context")),
        _ if err.is_null() => Err(Error::msg(format!("nginx refused the header ({rc})"))),
        // SAFETY: lua-nginx-module's error strings are static C strings.
        _ => Err(Error::msg(
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_variable_names() {
        let mut out = [0u8; MAX_NAME];
        let len = header_variable("X-Bench-A", &mut out).unwrap();
        assert_eq!(&out[..len], b"http_X_Bench_A");
        let longest = "a".repeat(MAX_NAME - 5);
        assert_eq!(header_variable(&longest, &mut out), Some(MAX_NAME));
        assert_eq!(header_variable(&format!("{longest}b"), &mut out), None);
    }

    #[test]
    fn no_direct_calls_outside_nginx() {
        // cargo test links LuaJIT but not lua-nginx-module: reads fall back
        // to kong.* (the bridge tests exercise that path).
        assert!(!available());
        let lua = mlua::Lua::new();
        assert!(NgxRequest::current(lua.exec_raw_lua(|raw| raw.state())).is_none());
    }
}
