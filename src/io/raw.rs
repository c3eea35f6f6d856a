//! Tasks entered through plain `lua_CFunction`s: the start of an async
//! phase (src/bridge.rs) and `resume`, when the module's sync phases are
//! raw too (loaded on the main thread, see crate::running). mlua's callback
//! wrapper, its argument and return conversions and the task userdata's
//! borrow cost about a tenth of a Redis round trip; here the arguments are
//! read and the results pushed with the C API, and the task lives in a
//! plain full userdata whose `__gc` drops it.
//!
//! The results are those of src/io/driver.rs (`nil, true, task, op, socket,
//! a, b, c, d` for a pending operation; `nil, false, message` for a failed
//! task; else the task's own results), and like the raw sync phases these
//! functions never raise: a failure is returned as a value.

use super::driver::{LuaOutput, LuaTask, Performed, reply};
use super::task::{Arg, Request, Step};
use crate::running::Running;
use mlua::{Lua, Table, Value as LuaValue, ffi};
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

/// A task as Lua holds it: the payload of a full userdata with the
/// module's task metatable. `busy` while the task runs, so that a resume
/// from inside its own poll is refused instead of aliasing it.
struct Slot {
    task: Option<LuaTask>,
    busy: bool,
}

// Its address names this copy of the library's task metatable in the
// registry: a second native module in the same Lua state has its own, and
// never resumes (or frees) this one's tasks.
static METATABLE_KEY: u8 = 0;

fn metatable_name() -> String {
    format!("kong_rs.task.{:p}", &raw const METATABLE_KEY)
}

/// The task metatable of this library in `lua` (made on first use): `__gc`
/// drops the task, `__metatable` hides it from Lua code.
///
/// # Errors
/// When Lua cannot allocate.
pub(crate) fn task_metatable(lua: &Lua) -> mlua::Result<Table> {
    let name = metatable_name();
    if let Some(table) = lua.named_registry_value::<Option<Table>>(&name)? {
        return Ok(table);
    }
    let table = lua.create_table()?;
    // SAFETY: `drop_task` is a lua_CFunction that never raises.
    table.raw_set("__gc", unsafe { lua.create_c_function(drop_task)? })?;
    table.raw_set("__metatable", false)?;
    lua.set_named_registry_value(&name, &table)?;
    Ok(table)
}

/// `__gc` of a task: drops it (a panic while dropping is contained).
unsafe extern "C-unwind" fn drop_task(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: only ever set as the metatable of userdata made by
    // `new_slot`, whose payload is an initialised Slot.
    unsafe {
        let slot = ffi::lua_touserdata(state, 1).cast::<Slot>();
        if !slot.is_null() {
            let task = (*slot).task.take();
            drop(catch_unwind(AssertUnwindSafe(move || drop(task))));
        }
    }
    0
}

/// Pushes a new task userdata holding `task` onto `state`, with
/// `metatable` (at stack index `metatable`); `false` (the task dropped,
/// nothing pushed) if the userdata is misaligned for it.
///
/// # Safety
/// `state` is a live thread with room for one value; `metatable` is an
/// absolute or pseudo (upvalue) index of the task metatable.
unsafe fn new_slot(state: *mut ffi::lua_State, metatable: c_int, task: LuaTask) -> bool {
    // SAFETY: per the contract; the payload is initialised before the
    // metatable (and so `__gc`) is set.
    unsafe {
        let slot = ffi::lua_newuserdata(state, size_of::<Slot>()).cast::<Slot>();
        if !slot.is_aligned() {
            // Not seen with LuaJIT (8-byte aligned payloads); refused
            // rather than written misaligned.
            ffi::lua_settop(state, -2);
            drop(task);
            return false;
        }
        slot.write(Slot {
            task: Some(task),
            busy: false,
        });
        ffi::lua_pushvalue(state, metatable);
        ffi::lua_setmetatable(state, -2);
    }
    true
}

/// Makes a task not started yet (a job for a timer or a cache loader) as
/// an mlua value, for Rust code that hands it to Lua.
///
/// # Errors
/// When Lua cannot allocate.
pub(crate) fn job(lua: &Lua, task: LuaTask) -> mlua::Result<LuaValue> {
    let metatable = task_metatable(lua)?;
    lua.exec_raw_lua(|raw| {
        let state = raw.state();
        // SAFETY: mlua's live state; two values pushed, one popped as an
        // mlua value, the metatable removed.
        unsafe {
            if ffi::lua_checkstack(state, 2) == 0 {
                return Err(mlua::Error::StackError);
            }
            raw.push(&metatable)?;
            if !new_slot(state, ffi::lua_gettop(state), task) {
                ffi::lua_settop(state, -2);
                return Err(mlua::Error::runtime("misaligned task userdata"));
            }
            let value = raw.pop_value();
            ffi::lua_settop(state, -2);
            Ok(value)
        }
    })
}

/// Runs a newly made task up to its first operation (or its end) on
/// `state`, the thread of the raw function that starts it, and pushes what
/// the Lua side does next; returns the number of values pushed. The task
/// metatable is at stack index `metatable`.
///
/// # Safety
/// `state` is the live thread that called the raw function now running.
pub(crate) unsafe fn start(
    lua: &Lua,
    state: *mut ffi::lua_State,
    running: &Running,
    metatable: c_int,
    mut task: LuaTask,
) -> c_int {
    task.prepare(lua, state);
    let step = running.with(state, || task.step(None));
    // SAFETY: per the contract.
    unsafe {
        if ffi::lua_checkstack(state, 12) == 0 {
            return push_failure(state, "Lua stack overflow");
        }
        match step {
            Ok(Step::Op(request)) => {
                if new_slot(state, metatable, task) {
                    push_pending(lua, state, ffi::lua_gettop(state), request)
                } else {
                    push_failure(state, "misaligned task userdata")
                }
            }
            Ok(Step::Done(output)) => push_output(lua, state, output),
            Err(error) => push_failure(state, &error.to_string()),
        }
    }
}

/// What the raw `resume` owns: upvalue 1 (freed with upvalue 2).
pub(crate) struct RawResume {
    // Weak: the state holds the function, which holds this.
    pub(crate) lua: mlua::WeakLua,
    pub(crate) running: Rc<Running>,
}

/// `resume(task, value, err[, sockets, release])` as a raw function (see
/// src/io/driver.rs for the arguments), with upvalues: the [`RawResume`]
/// (light userdata), its owner, the task metatable.
///
/// # Safety
/// Called by Lua as a C function with those upvalues.
pub(crate) unsafe extern "C-unwind" fn resume(state: *mut ffi::lua_State) -> c_int {
    // SAFETY: upvalue 1 is the RawResume that upvalue 2 keeps alive;
    // argument 1 is checked to carry this library's task metatable before
    // its payload is read as a Slot.
    unsafe {
        let data = &*ffi::lua_touserdata(state, ffi::lua_upvalueindex(1)).cast::<RawResume>();
        let Some(lua) = data.lua.try_upgrade() else {
            return 0; // the state is closing
        };
        if ffi::lua_checkstack(state, 12) == 0 {
            return push_failure(state, "Lua stack overflow");
        }
        let is_task = ffi::lua_getmetatable(state, 1) != 0 && {
            let same = ffi::lua_rawequal(state, -1, ffi::lua_upvalueindex(3)) != 0;
            ffi::lua_settop(state, -2);
            same
        };
        if !is_task {
            return push_failure(state, "resume: argument 1 is not a task of this module");
        }
        let slot = &mut *ffi::lua_touserdata(state, 1).cast::<Slot>();
        if slot.busy {
            return push_failure(state, "resume: the task is running");
        }
        let Some(task) = slot.task.as_mut() else {
            return push_failure(state, "resume: the task is gone");
        };
        let run = catch_unwind(AssertUnwindSafe(|| {
            if ffi::lua_type(state, 4) == ffi::LUA_TTABLE
                && ffi::lua_type(state, 5) == ffi::LUA_TFUNCTION
                && !task.has_sockets()
            {
                let (sockets, release) = handover(&lua, state)?;
                task.set_sockets(sockets, release);
            }
            let answer = task.started().then(|| {
                let err =
                    (ffi::lua_type(state, 3) == ffi::LUA_TSTRING).then(|| lossy_string(state, 3));
                reply(Performed::read(state, 2), err)
            });
            task.prepare(&lua, state);
            Ok::<_, mlua::Error>(answer)
        }));
        let answer = match run {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return push_failure(state, &error.to_string()),
            Err(_) => return push_failure(state, "resume: panicked reading the reply"),
        };
        slot.busy = true;
        let step = data.running.with(state, || task.step(answer));
        slot.busy = false;
        if !matches!(step, Ok(Step::Op(_))) {
            // Finished: freed now rather than when Lua collects the handle.
            let task = slot.task.take();
            drop(catch_unwind(AssertUnwindSafe(move || drop(task))));
        }
        match step {
            Ok(Step::Op(request)) => push_pending(&lua, state, 1, request),
            Ok(Step::Done(output)) => push_output(&lua, state, output),
            Err(error) => push_failure(state, &error.to_string()),
        }
    }
}

/// Arguments 4 and 5 of `resume` as mlua values (once per task).
///
/// # Safety
/// `state` is the live calling thread with those arguments.
unsafe fn handover(lua: &Lua, state: *mut ffi::lua_State) -> mlua::Result<(Table, mlua::Function)> {
    lua.exec_raw_lua(|raw| {
        // SAFETY: both values are copied to mlua's state (same Lua state)
        // and taken from there as references.
        unsafe {
            if ffi::lua_checkstack(raw.state(), 2) == 0 {
                return Err(mlua::Error::StackError);
            }
            ffi::lua_pushvalue(state, 4);
            ffi::lua_pushvalue(state, 5);
            ffi::lua_xmove(state, raw.state(), 2);
            let release = raw.pop::<mlua::Function>()?;
            let sockets = raw.pop::<Table>()?;
            Ok((sockets, release))
        }
    })
}

/// The string at `index`, as UTF-8 (lossy).
///
/// # Safety
/// `index` holds a string on the live thread `state`.
unsafe fn lossy_string(state: *mut ffi::lua_State, index: c_int) -> String {
    // SAFETY: per the contract; the bytes are copied before anything runs.
    unsafe {
        let mut len = 0;
        let data = ffi::lua_tolstring(state, index, &mut len);
        String::from_utf8_lossy(std::slice::from_raw_parts(data.cast::<u8>(), len)).into_owned()
    }
}

/// `nil, false, message`.
///
/// # Safety
/// `state` is a live thread with room for three values.
pub(crate) unsafe fn push_failure(state: *mut ffi::lua_State, message: &str) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushnil(state);
        ffi::lua_pushboolean(state, 0);
        ffi::lua_pushlstring(state, message.as_ptr().cast(), message.len());
    }
    3
}

/// `nil, true, task, op, socket, a, b, c, d`, the task at `task`.
///
/// # Safety
/// `state` is a live thread with room for twelve values.
unsafe fn push_pending(
    lua: &Lua,
    state: *mut ffi::lua_State,
    task: c_int,
    request: Request,
) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        ffi::lua_pushnil(state);
        ffi::lua_pushboolean(state, 1);
        ffi::lua_pushvalue(state, task);
        ffi::lua_pushinteger(state, request.kind as ffi::lua_Integer);
        ffi::lua_pushinteger(state, request.socket as ffi::lua_Integer);
        for arg in request.args {
            match arg {
                Arg::Nil => ffi::lua_pushnil(state),
                Arg::Int(n) => ffi::lua_pushnumber(state, n as ffi::lua_Number),
                Arg::Num(n) => ffi::lua_pushnumber(state, n),
                Arg::Bool(b) => ffi::lua_pushboolean(state, c_int::from(b)),
                Arg::Bytes(bytes) => {
                    ffi::lua_pushlstring(state, bytes.as_ptr().cast(), bytes.len());
                }
                Arg::Text(text) => {
                    ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
                }
                Arg::Lua(value) => {
                    if push_mlua(lua, state, std::slice::from_ref(&value)).is_err() {
                        ffi::lua_pushnil(state);
                    }
                }
            }
        }
    }
    9
}

/// A finished task's results: an async phase's (see src/bridge.rs) pushed
/// directly in the common cases, anything else made with mlua.
///
/// # Safety
/// `state` is a live thread with room for twelve values.
unsafe fn push_output(lua: &Lua, state: *mut ffi::lua_State, output: LuaOutput) -> c_int {
    use crate::plugin::Flow;
    // SAFETY: per the contract.
    unsafe {
        let values = match output {
            // Continue with nothing to apply: no value at all.
            LuaOutput::Phase(None, Ok(Flow::Continue)) => return 0,
            // Continue after applying the writes: one string.
            LuaOutput::Phase(Some(actions), Ok(Flow::Continue)) => {
                ffi::lua_pushlstring(state, actions.as_ptr().cast(), actions.len());
                return 1;
            }
            LuaOutput::Phase(actions, outcome) => crate::bridge::flow_result(lua, actions, outcome),
            LuaOutput::Make(make) => make(lua),
        };
        let pushed = values.and_then(|values| push_mlua(lua, state, &values));
        match pushed {
            Ok(count) => count,
            Err(error) => push_failure(state, &error.to_string()),
        }
    }
}

/// Pushes mlua values onto `state`: made on mlua's state, moved over.
///
/// # Safety
/// `state` is a live thread of `lua`'s Lua state.
unsafe fn push_mlua(
    lua: &Lua,
    state: *mut ffi::lua_State,
    values: &[LuaValue],
) -> mlua::Result<c_int> {
    let count = c_int::try_from(values.len()).map_err(|_| mlua::Error::StackError)?;
    lua.exec_raw_lua(|raw| {
        // SAFETY: pushed on mlua's live state and moved to `state` (the
        // same Lua state), after making room on both.
        unsafe {
            if ffi::lua_checkstack(raw.state(), count) == 0
                || ffi::lua_checkstack(state, count) == 0
            {
                return Err(mlua::Error::StackError);
            }
            let top = ffi::lua_gettop(raw.state());
            for value in values {
                if let Err(error) = raw.push_value(value) {
                    ffi::lua_settop(raw.state(), top);
                    return Err(error);
                }
            }
            ffi::lua_xmove(raw.state(), state, count);
        }
        Ok(count)
    })
}
