//! Which Lua thread (coroutine) Rust is running on, for the calls into Lua
//! that must happen there.
//!
//! Inside one of mlua's callbacks, mlua works on the thread that called it.
//! The sync phases are entered through a plain `lua_CFunction` instead
//! (src/bridge.rs, `raw_phase`: mlua's callback wrapper cost more than an
//! empty Lua phase), where mlua's own state is the thread that loaded the
//! module, i.e. nginx's main thread. Values can be made there (it is only
//! scratch space), but a *call* into Lua must run on the request's thread:
//! lua-nginx-module finds the request of a call by the thread it runs on,
//! and Kong's PDK through lua-nginx-module. [`Running`] holds that thread
//! while a raw phase runs and [`call_on`] calls there.

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Value, ffi};
use std::cell::Cell;
use std::ffi::c_int;

/// The Lua thread a raw phase runs on; null when Rust runs inside one of
/// mlua's callbacks (whose state is already the right one). One per native
/// module and Lua state, shared by the PDK and the timers.
#[derive(Default)]
pub(crate) struct Running(Cell<*mut ffi::lua_State>);

impl Running {
    /// The thread to call Lua on (null: mlua's current one).
    pub(crate) fn thread(&self) -> *mut ffi::lua_State {
        self.0.get()
    }

    /// Runs `f` with `thread` as the running thread, then restores the
    /// previous one.
    pub(crate) fn with<R>(&self, thread: *mut ffi::lua_State, f: impl FnOnce() -> R) -> R {
        let previous = self.0.replace(thread);
        let result = f();
        self.0.set(previous);
        result
    }
}

/// Calls `function` with `args` on Lua thread `thread` (see the module
/// docs), or on mlua's current state when `thread` is null or that state.
///
/// # Errors
/// The function raised an error, or the stack could not grow.
pub(crate) fn call_on<R: FromLuaMulti>(
    lua: &Lua,
    thread: *mut ffi::lua_State,
    function: &Function,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    if thread.is_null() {
        return function.call(args);
    }
    lua.exec_raw_lua(|raw| {
        let state = raw.state();
        if state == thread {
            return function.call(args);
        }
        // SAFETY: `state` (mlua's) and `thread` (the running coroutine)
        // are live threads of one Lua state; values move between them with
        // lua_xmove; `state`'s stack is restored to `top` on every path.
        unsafe {
            let top = ffi::lua_gettop(state);
            let result = (|| {
                raw.push(function)?;
                let nargs = args.push_into_stack_multi(raw)?;
                if ffi::lua_checkstack(thread, nargs + 1 + ffi::LUA_MINSTACK) == 0 {
                    return Err(mlua::Error::StackError);
                }
                ffi::lua_xmove(state, thread, nargs + 1);
                let base = ffi::lua_gettop(thread) - nargs - 1;
                let status = ffi::lua_pcall(thread, nargs, ffi::LUA_MULTRET, 0);
                let nresults = ffi::lua_gettop(thread) - base;
                if ffi::lua_checkstack(state, nresults + ffi::LUA_MINSTACK) == 0 {
                    ffi::lua_settop(thread, base);
                    return Err(mlua::Error::StackError);
                }
                ffi::lua_xmove(thread, state, nresults);
                if status != ffi::LUA_OK {
                    return Err(error_from(raw.pop_value()));
                }
                R::from_stack_multi(nresults as c_int, raw)
            })();
            ffi::lua_settop(state, top);
            result
        }
    })
}

/// The error a `lua_pcall` left, as mlua reports it.
fn error_from(value: Value) -> mlua::Error {
    match value {
        Value::Error(error) => *error,
        Value::String(message) => mlua::Error::runtime(message.to_string_lossy()),
        other => mlua::Error::runtime(format!("a {} raised as an error", other.type_name())),
    }
}

/// Compiles `source` and runs it on Lua thread `thread` like [`call_on`]
/// (compiling does not run Lua; running it must happen on the thread that
/// runs Rust, as every entry into the Lua VM).
///
/// # Errors
/// The chunk does not compile, or raised an error.
pub(crate) fn eval_on<R: FromLuaMulti>(
    lua: &Lua,
    thread: *mut ffi::lua_State,
    source: &str,
) -> mlua::Result<R> {
    let chunk = lua.load(source).set_name("=kong-rs").into_function()?;
    call_on(lua, thread, &chunk, ())
}
