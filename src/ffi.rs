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
//!
//! The call is shaped so that even when LuaJIT runs it in the interpreter
//! (nginx enters each phase from C, so not every request path is compiled)
//! it allocates nothing on the Lua side: inputs are plain arguments (Lua
//! strings convert to `const char *` for free), the output is copied into a
//! buffer the caller owns, and lengths come back as `int32_t`s.

use crate::error::{Error, Result};
use crate::pdk::actions::{Actions, Op};
use crate::pdk::fast::FastPdk;
use crate::plugin::{Flow, Phase, Plugin};
use std::os::raw::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The call ran; see the lengths. Returned by [`kong_rs_ffi_call`].
pub const KONG_RS_OK: i32 = 0;
/// The plugin failed (an `Err` or a panic): the buffer holds its log lines
/// then the message.
pub const KONG_RS_FAILED: i32 = 1;
/// Invalid arguments (null pointer, unsupported phase, wrong number of
/// inputs): the buffer holds the message.
pub const KONG_RS_BAD_CALL: i32 = 2;
/// The output does not fit the buffer: `lengths[2]` is the size needed;
/// fetch it with [`kong_rs_ffi_output`].
pub const KONG_RS_SHORT: i32 = 3;

/// The most inputs (headers + body) a fast-path call carries.
pub const MAX_INPUTS: usize = 4;

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
/// its declared inputs, and the last call's output.
pub struct KongRsInstance {
    runner: Box<dyn FastRun>,
    header_names: Vec<String>,
    reads_body: bool,
    actions: Actions,
    /// The last output, as copied to the caller: actions, then body or message.
    output: Vec<u8>,
    lengths: [i32; 3],
    code: i32,
}

impl KongRsInstance {
    /// `holder` keeps the plugin alive; `get` reaches it. `None` when the
    /// declared inputs exceed [`MAX_INPUTS`] (the plugin then stays on the
    /// mlua path).
    pub(crate) fn new<P: Plugin, K: 'static>(
        holder: std::rc::Rc<K>,
        get: fn(&K) -> &P,
        fast_path: crate::FastPath,
    ) -> Option<Box<KongRsInstance>> {
        let inputs = fast_path.request_headers.len() + usize::from(fast_path.request_body);
        if inputs > MAX_INPUTS {
            return None;
        }
        Some(Box::new(KongRsInstance {
            runner: Box::new(Runner {
                plugin: holder,
                get,
            }),
            reads_body: fast_path.request_body,
            header_names: fast_path.request_headers,
            actions: Actions::default(),
            output: Vec::new(),
            lengths: [0; 3],
            code: KONG_RS_OK,
        }))
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

    fn fail(&mut self, code: i32, message: &str) -> i32 {
        self.output.clear();
        self.output.extend_from_slice(message.as_bytes());
        self.lengths = [0, len_i32(message.len()), 0];
        code
    }

    /// Runs a phase; leaves its output in `output`/`lengths`.
    fn execute(&mut self, phase: i32, inputs: &[Option<&[u8]>]) -> i32 {
        let Some(phase) = KongRsInstance::phase(phase) else {
            return self.fail(KONG_RS_BAD_CALL, "not a fast-path phase");
        };
        let with_body = self.reads_body && matches!(phase, Phase::Rewrite | Phase::Access);
        let expected = self.header_names.len() + usize::from(with_body);
        if inputs.len() != expected {
            let message = format!("expected {expected} inputs, got {}", inputs.len());
            return self.fail(KONG_RS_BAD_CALL, &message);
        }
        let (headers, body) = inputs.split_at(self.header_names.len());
        self.actions.clear();
        let result = {
            let mut pdk = FastPdk {
                header_names: &self.header_names,
                header_values: headers,
                body: with_body.then(|| body.first().copied().flatten()),
                actions: &mut self.actions,
            };
            let runner = &self.runner;
            catch_unwind(AssertUnwindSafe(|| runner.run(phase, &mut pdk))).unwrap_or_else(|panic| {
                Err(Error::msg(format!(
                    "panicked: {}",
                    crate::bridge::panic_message(&panic)
                )))
            })
        };
        match result {
            Ok(flow) => self.finish(flow),
            Err(error) => {
                // Answered 500: drop the writes, keep what it logged.
                if self.actions.retain_logs().is_err() {
                    self.actions.clear();
                }
                let message = error.to_string();
                self.output.clear();
                self.output.extend_from_slice(self.actions.as_bytes());
                self.output.extend_from_slice(message.as_bytes());
                self.lengths = [
                    0,
                    len_i32(message.len()),
                    len_i32(self.actions.as_bytes().len()),
                ];
                KONG_RS_FAILED
            }
        }
    }

    fn finish(&mut self, flow: Flow) -> i32 {
        let (status, body) = match flow {
            Flow::Continue => (0, None),
            Flow::Exit(exit) => {
                for (name, value) in &exit.headers {
                    if let Err(e) = self.actions.push(Op::RespSetHeader, name.as_bytes(), value) {
                        return self.fail(KONG_RS_FAILED, &e.to_string());
                    }
                }
                (i32::from(exit.status), exit.body)
            }
        };
        let actions = self.actions.as_bytes();
        let body_len = body.as_ref().map_or(-1, |b| len_i32(b.len()));
        if len_i32(actions.len()) == i32::MAX || body_len == i32::MAX {
            return self.fail(KONG_RS_FAILED, "output larger than 2 GiB");
        }
        self.output.clear();
        self.output.extend_from_slice(actions);
        if let Some(body) = &body {
            self.output.extend_from_slice(body);
        }
        self.lengths = [status, body_len, len_i32(actions.len())];
        KONG_RS_OK
    }
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

fn input<'a>(ptr: *const c_char, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller passes `len` readable bytes at `ptr`, alive for the call.
    Some(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// Copies the instance's output to the caller; `KONG_RS_SHORT` if it does
/// not fit, else the code of the call that produced it.
fn deliver(instance: &KongRsInstance, buf: *mut u8, buf_size: i32, lengths: *mut i32) -> i32 {
    let size = usize::try_from(buf_size).unwrap_or(0);
    // SAFETY: the caller gives 3 writable int32 at `lengths` (checked non-null).
    let lengths = unsafe { std::slice::from_raw_parts_mut(lengths, 3) };
    lengths.copy_from_slice(&instance.lengths);
    if instance.output.len() > size {
        lengths[2] = len_i32(instance.output.len());
        return KONG_RS_SHORT;
    }
    // SAFETY: `buf` holds `buf_size` writable bytes and does not overlap our buffer.
    unsafe { std::ptr::copy_nonoverlapping(instance.output.as_ptr(), buf, instance.output.len()) };
    instance.code
}

/// Runs phase `phase` (1 rewrite, 2 access, 3 header_filter, 6 log) of
/// `instance` with `n_inputs` inputs passed as `in1..in4` (NULL: absent):
/// the declared request headers in order, then the body when declared and
/// the phase is rewrite or access. The output goes to `buf`:
///
/// - `KONG_RS_OK`: `buf` = actions (`lengths[2]` bytes) then, when
///   `lengths[0]` (the exit status, 0 to continue) is set and `lengths[1]`
///   is not -1, the exit body (`lengths[1]` bytes);
/// - `KONG_RS_FAILED`: `buf` = the failed phase's log lines (`lengths[2]`
///   bytes, actions format) then the message (`lengths[1]` bytes);
/// - `KONG_RS_BAD_CALL`: `buf` = the message (`lengths[1]` bytes);
/// - `KONG_RS_SHORT`: nothing copied; `lengths[2]` is the size needed, and
///   [`kong_rs_ffi_output`] copies it (with the same layout) into a larger buffer.
///
/// # Safety
/// `instance` comes from the module's `new` and is not freed; each `inN`
/// points to `lenN` bytes alive during the call (or is NULL); `buf` holds
/// `buf_size` writable bytes; `lengths` holds 3 writable `int32_t`. Not
/// re-entrant for one instance (LuaJIT calls it from one thread).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn kong_rs_ffi_call(
    instance: *mut KongRsInstance,
    phase: i32,
    n_inputs: i32,
    in1: *const c_char,
    len1: usize,
    in2: *const c_char,
    len2: usize,
    in3: *const c_char,
    len3: usize,
    in4: *const c_char,
    len4: usize,
    buf: *mut u8,
    buf_size: i32,
    lengths: *mut i32,
) -> i32 {
    if instance.is_null() || buf.is_null() || lengths.is_null() {
        return KONG_RS_BAD_CALL;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: non-null; valid and exclusive per the contract.
        let instance = unsafe { &mut *instance };
        let all = [
            input(in1, len1),
            input(in2, len2),
            input(in3, len3),
            input(in4, len4),
        ];
        instance.code = match usize::try_from(n_inputs) {
            Ok(n) if n <= MAX_INPUTS => instance.execute(phase, &all[..n]),
            _ => instance.fail(KONG_RS_BAD_CALL, "n_inputs must be 0 to 4"),
        };
        deliver(instance, buf, buf_size, lengths)
    }));
    outcome.unwrap_or(KONG_RS_BAD_CALL)
}

/// Copies the output of the last call on `instance` into `buf` (after
/// `KONG_RS_SHORT`); returns that call's code, or `KONG_RS_SHORT` if it
/// still does not fit.
///
/// # Safety
/// As for [`kong_rs_ffi_call`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kong_rs_ffi_output(
    instance: *mut KongRsInstance,
    buf: *mut u8,
    buf_size: i32,
    lengths: *mut i32,
) -> i32 {
    if instance.is_null() || buf.is_null() || lengths.is_null() {
        return KONG_RS_BAD_CALL;
    }
    // SAFETY: non-null; valid per the contract.
    let instance = unsafe { &*instance };
    catch_unwind(AssertUnwindSafe(|| {
        deliver(instance, buf, buf_size, lengths)
    }))
    .unwrap_or(KONG_RS_BAD_CALL)
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
