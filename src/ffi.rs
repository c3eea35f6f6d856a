//! The LuaJIT FFI fast path: the C ABI declared in `ffi/kong_rs.h` and
//! loaded by `ffi/kong_rs_ffi.lua`.
//!
//! Entering Rust through the Lua C API (mlua) costs ~40 ns per call and is
//! never JIT-compiled; an FFI call is compiled into the trace and costs a few
//! ns. Code entered through FFI must not touch the `lua_State`, so a phase on
//! this path gets the inputs its plugin declared ([`FastPath`](crate::FastPath)),
//! fetched by the Lua side, and returns its writes and log lines as an action
//! buffer the Lua side applies.
//!
//! The discipline follows Kong's atc-router: instances are opaque pointers
//! owned by Lua and freed through `ffi.gc` ([`kong_rs_ffi_instance_free`]);
//! errors come back through a caller-provided buffer; nothing unwinds
//! across `extern "C"` (panics are caught).

use crate::error::{Error, Result};
use crate::pdk::actions::Actions;
use crate::pdk::fast::FastPdk;
use crate::plugin::{Flow, Phase, Plugin};
use std::os::raw::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A byte string passed across the ABI; `ptr` NULL means absent (`nil`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KongRsBytes {
    /// First byte, or NULL.
    pub ptr: *const c_char,
    /// Length in bytes.
    pub len: usize,
}

/// What a phase produced. Pointers stay valid until the next call on the
/// same instance or its release.
#[repr(C)]
#[derive(Debug)]
pub struct KongRsOutput {
    /// Deferred writes and log lines (`kong_rs.actions` format); may be empty.
    pub actions: KongRsBytes,
    /// Exit body when `status` is not 0 (ptr NULL: no body).
    pub body: KongRsBytes,
    /// 0: continue; otherwise answer the client with this status.
    pub status: i32,
}

/// Returned by [`kong_rs_ffi_run`]: the phase ran; see the output.
pub const KONG_RS_OK: i32 = 0;
/// Returned by [`kong_rs_ffi_run`]: the plugin failed (an `Err` or a panic);
/// the message is in the error buffer, `actions` holds only its log lines.
pub const KONG_RS_FAILED: i32 = 1;
/// Returned by [`kong_rs_ffi_run`]: invalid arguments (null pointer,
/// unsupported phase, wrong number of inputs); message in the error buffer.
pub const KONG_RS_BAD_CALL: i32 = 2;

/// A phase runner with its plugin type erased.
pub(crate) trait FastRun {
    fn run(&self, phase: Phase, pdk: &mut FastPdk<'_>) -> Result<Flow>;
}

struct Runner<P: Plugin, K> {
    plugin: std::rc::Rc<K>,
    get: fn(&K) -> &P,
}

impl<P: Plugin, K> FastRun for Runner<P, K> {
    fn run(&self, phase: Phase, pdk: &mut FastPdk<'_>) -> Result<Flow> {
        let plugin = (self.get)(&self.plugin);
        let mut state = P::State::default();
        match phase {
            Phase::Rewrite => plugin.rewrite(pdk, &mut state),
            Phase::Access => plugin.access(pdk, &mut state),
            Phase::HeaderFilter => plugin
                .header_filter(pdk, &mut state)
                .map(|()| Flow::Continue),
            Phase::Log => plugin.log(pdk, &mut state).map(|()| Flow::Continue),
            other => Err(Error::msg(format!("{other} is not a fast-path phase"))),
        }
    }
}

/// An instance on the fast path: the plugin (shared with its mlua side),
/// its declared inputs and the buffers its output points into.
pub struct KongRsInstance {
    runner: Box<dyn FastRun>,
    header_names: Vec<String>,
    reads_body: bool,
    actions: Actions,
    body: Vec<u8>,
}

impl KongRsInstance {
    /// `holder` keeps the plugin alive; `get` reaches it.
    pub(crate) fn new<P: Plugin, K: 'static>(
        holder: std::rc::Rc<K>,
        get: fn(&K) -> &P,
        fast_path: crate::FastPath,
    ) -> Box<KongRsInstance> {
        Box::new(KongRsInstance {
            runner: Box::new(Runner {
                plugin: holder,
                get,
            }),
            reads_body: fast_path.request_body,
            header_names: fast_path.request_headers,
            actions: Actions::default(),
            body: Vec::new(),
        })
    }

    /// The phase ids the fast path serves, as in `ffi/kong_rs.h`.
    fn phase(id: i32) -> Option<Phase> {
        match id {
            1 => Some(Phase::Rewrite),
            2 => Some(Phase::Access),
            3 => Some(Phase::HeaderFilter),
            6 => Some(Phase::Log),
            _ => None,
        }
    }
}

fn bytes<'a>(input: &KongRsBytes) -> Option<&'a [u8]> {
    if input.ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `len` readable bytes at `ptr`, alive for the call.
    Some(unsafe { std::slice::from_raw_parts(input.ptr.cast::<u8>(), input.len) })
}

fn write_error(message: &str, errbuf: *mut c_char, errbuf_len: *mut usize) {
    if errbuf.is_null() || errbuf_len.is_null() {
        return;
    }
    // SAFETY: the caller gives a buffer of *errbuf_len bytes and a valid length pointer.
    unsafe {
        let capacity = *errbuf_len;
        let len = message.len().min(capacity);
        std::ptr::copy_nonoverlapping(message.as_ptr(), errbuf.cast::<u8>(), len);
        *errbuf_len = len;
    }
}

/// Runs phase `phase` (1 rewrite, 2 access, 3 header_filter, 6 log) of
/// `instance` with `n_inputs` inputs: the declared request headers in order,
/// then the body when declared and the phase is rewrite or access.
///
/// # Safety
/// `instance` comes from the module's `new` and is not freed; `inputs`
/// points to `n_inputs` values whose bytes stay alive during the call; `out`
/// is writable; `errbuf` holds `*errbuf_len` bytes. Not re-entrant for one
/// instance (LuaJIT calls it from one thread, without yielding in between).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kong_rs_ffi_run(
    instance: *mut KongRsInstance,
    phase: i32,
    inputs: *const KongRsBytes,
    n_inputs: usize,
    out: *mut KongRsOutput,
    errbuf: *mut c_char,
    errbuf_len: *mut usize,
) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: per this function's contract.
        unsafe { run(instance, phase, inputs, n_inputs, out) }
    }));
    match outcome {
        Ok(Ok(code)) => code,
        Ok(Err((code, message))) => {
            write_error(&message, errbuf, errbuf_len);
            code
        }
        Err(_) => {
            write_error("panicked in the FFI bridge", errbuf, errbuf_len);
            KONG_RS_FAILED
        }
    }
}

unsafe fn run(
    instance: *mut KongRsInstance,
    phase: i32,
    inputs: *const KongRsBytes,
    n_inputs: usize,
    out: *mut KongRsOutput,
) -> std::result::Result<i32, (i32, String)> {
    let bad = |message: &str| Err((KONG_RS_BAD_CALL, message.to_string()));
    if instance.is_null() || out.is_null() || (inputs.is_null() && n_inputs > 0) {
        return bad("null pointer");
    }
    // SAFETY: non-null, and per the caller's contract valid and exclusive.
    let (instance, out) = unsafe { (&mut *instance, &mut *out) };
    let Some(phase) = KongRsInstance::phase(phase) else {
        return bad("not a fast-path phase");
    };
    let with_body = instance.reads_body && matches!(phase, Phase::Rewrite | Phase::Access);
    let expected = instance.header_names.len() + usize::from(with_body);
    if n_inputs != expected {
        return Err((
            KONG_RS_BAD_CALL,
            format!("expected {expected} inputs, got {n_inputs}"),
        ));
    }
    let inputs = if n_inputs == 0 {
        &[][..]
    } else {
        // SAFETY: non-null, n_inputs elements per the caller's contract.
        unsafe { std::slice::from_raw_parts(inputs, n_inputs) }
    };

    instance.actions.clear();
    instance.body.clear();
    let values: Vec<Option<&[u8]>> = inputs[..instance.header_names.len()]
        .iter()
        .map(bytes)
        .collect();
    let body = with_body.then(|| bytes(&inputs[n_inputs - 1]));
    let result = {
        let mut pdk = FastPdk {
            header_names: &instance.header_names,
            header_values: &values,
            body,
            actions: &mut instance.actions,
        };
        let runner = &instance.runner;
        catch_unwind(AssertUnwindSafe(|| runner.run(phase, &mut pdk))).unwrap_or_else(|panic| {
            Err(Error::msg(format!(
                "panicked: {}",
                crate::bridge::panic_message(&panic)
            )))
        })
    };

    out.status = 0;
    out.body = KongRsBytes {
        ptr: std::ptr::null(),
        len: 0,
    };
    let code = match result {
        Ok(Flow::Continue) => KONG_RS_OK,
        Ok(Flow::Exit(exit)) => {
            for (name, value) in &exit.headers {
                instance
                    .actions
                    .push(
                        crate::pdk::actions::Op::RespSetHeader,
                        name.as_bytes(),
                        value,
                    )
                    .map_err(|e| (KONG_RS_FAILED, e.to_string()))?;
            }
            out.status = i32::from(exit.status);
            if let Some(body) = exit.body {
                instance.body = body;
                out.body = KongRsBytes {
                    ptr: instance.body.as_ptr().cast(),
                    len: instance.body.len(),
                };
            }
            KONG_RS_OK
        }
        Err(error) => {
            // Answered 500: drop the writes, keep what it logged.
            instance
                .actions
                .retain_logs()
                .map_err(|e| (KONG_RS_FAILED, e.to_string()))?;
            out.actions = KongRsBytes {
                ptr: instance.actions.as_bytes().as_ptr().cast(),
                len: instance.actions.as_bytes().len(),
            };
            return Err((KONG_RS_FAILED, error.to_string()));
        }
    };
    out.actions = KongRsBytes {
        ptr: instance.actions.as_bytes().as_ptr().cast(),
        len: instance.actions.as_bytes().len(),
    };
    Ok(code)
}

/// Frees an instance made by the module's `new`; registered with `ffi.gc`.
///
/// # Safety
/// `instance` comes from the module and is freed once (NULL is ignored).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kong_rs_ffi_instance_free(instance: *mut KongRsInstance) {
    if instance.is_null() {
        return;
    }
    // Dropping a plugin may panic; it must not unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in the bridge, freed once per the contract.
        drop(unsafe { Box::from_raw(instance) });
    }));
}
