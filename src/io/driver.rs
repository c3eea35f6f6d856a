//! Tasks as the Lua side sees them: a userdata it resumes with each
//! operation's result (`resume`), whatever the task is — an async phase,
//! or a job run from a timer (a queue's sender).
//!
//! Return values of the first call and of each `resume`, for `kong_rs/io.lua`:
//! - `nil, true, task, op, socket, a, b, c, d`: perform operation `op`
//!   ([`OpKind`](super::task::OpKind) code) and resume `task` with its result;
//! - `nil, false, message`: the task failed (a panic, a future waiting on
//!   something that is not nginx I/O);
//! - anything else: the task's own results (an async phase's are a sync
//!   phase's, see src/bridge.rs).

use super::task::{Arg, OpResult, Reply, Request, Step, Task};
use mlua::{AnyUserData, Function, Lua, Table, UserData, Value as LuaValue, Variadic};
use std::cell::RefCell;
use std::rc::Rc;

/// What a task finishes with, turned into its Lua results when it is
/// handed out: an async phase's writes and outcome (the common case, kept
/// unboxed), or any other job's own conversion.
pub(crate) enum LuaOutput {
    Phase(Option<Vec<u8>>, crate::Result<crate::plugin::Flow>),
    Make(MakeValues),
}

/// A job's own conversion of its result into Lua values.
pub(crate) type MakeValues = Box<dyn FnOnce(&Lua) -> mlua::Result<Variadic<LuaValue>>>;

impl LuaOutput {
    fn into_values(self, lua: &Lua) -> mlua::Result<Variadic<LuaValue>> {
        match self {
            LuaOutput::Phase(actions, outcome) => crate::bridge::flow_result(lua, actions, outcome),
            LuaOutput::Make(make) => make(lua),
        }
    }
}

/// A task held by the Lua side between operations.
pub(crate) struct LuaTask {
    task: Task<LuaOutput>,
    started: bool,
}

impl UserData for LuaTask {}

impl LuaTask {
    /// `task`, to be started by its first resume unless `started` (an
    /// async phase runs at once, a job when a timer or a cache loader
    /// starts it).
    pub(crate) fn new(task: Task<LuaOutput>, started: bool) -> LuaTask {
        LuaTask { task, started }
    }

    /// Whether the task was started (its next resume carries a reply).
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Whether the Lua side handed over the task's socket table.
    pub(crate) fn has_sockets(&self) -> bool {
        self.task.has_sockets()
    }

    /// See [`Task::set_sockets`].
    pub(crate) fn set_sockets(&self, sockets: Table, release: Function) {
        self.task.set_sockets(sockets, release);
    }

    /// Tells the task the Lua state and the thread that poll it now.
    pub(crate) fn prepare(&self, lua: &Lua, thread: *mut mlua::ffi::lua_State) {
        self.task.set_lua(lua);
        self.task.set_thread(thread);
    }

    /// Runs the task with the reply to its operation (`None`: it starts).
    pub(crate) fn step(&mut self, reply: Option<OpResult>) -> crate::Result<Step<LuaOutput>> {
        self.started = true;
        self.task.resume(reply)
    }
}

/// Runs `task` up to its first operation (or its end) and returns what the
/// Lua side does next.
///
/// # Errors
/// When Lua cannot allocate.
pub(crate) fn start(lua: &Lua, task: Task<LuaOutput>) -> mlua::Result<Returned> {
    let mut task = LuaTask::new(task, true);
    // Inside mlua's callback: no raw thread (see crate::running).
    task.prepare(lua, std::ptr::null_mut());
    match task.step(None) {
        Ok(Step::Op(request)) => {
            let handle = lua.create_userdata(task)?;
            pending(lua, LuaValue::UserData(handle), request)
        }
        Ok(Step::Done(output)) => output.into_values(lua).map(Returned::Values),
        Err(error) => failed(lua, &error),
    }
}

/// A task not started yet, for the Lua side to start later (from a timer:
/// `resume(job)` with no result starts it): a raw task userdata when the
/// module's `resume` is raw (`raw`, see src/io/raw.rs), else an mlua one.
///
/// # Errors
/// When Lua cannot allocate.
pub(crate) fn job(lua: &Lua, task: Task<LuaOutput>, raw: bool) -> mlua::Result<LuaValue> {
    let task = LuaTask::new(task, false);
    if raw {
        super::raw::job(lua, task)
    } else {
        lua.create_userdata(task).map(LuaValue::UserData)
    }
}

/// `resume(task, value, err[, sockets, release])`: the Lua side performed
/// the operation the task asked for; `value` is its result (nil when it
/// failed with `err`); `sockets`, the task's cosockets by id, and
/// `release(sockets, id, idle, size)` are handed over once so that
/// releasing a socket is a direct call. On a job not started yet, starts
/// it.
///
/// # Errors
/// When `task` is not a task, or Lua cannot allocate.
pub(crate) fn resume(
    lua: &Lua,
    (handle, value, err, sockets, release): (
        AnyUserData,
        Performed,
        Option<mlua::LuaString>,
        Option<Table>,
        Option<Function>,
    ),
) -> mlua::Result<Returned> {
    let step = {
        let mut task = handle.borrow_mut::<LuaTask>()?;
        if let (Some(sockets), Some(release)) = (sockets, release) {
            task.set_sockets(sockets, release);
        }
        let answer = task.started().then(|| {
            reply(
                value,
                err.map(|e| String::from_utf8_lossy(&e.as_bytes()).into_owned()),
            )
        });
        task.prepare(lua, std::ptr::null_mut());
        task.step(answer)
    };
    match step {
        Ok(Step::Op(request)) => pending(lua, LuaValue::UserData(handle), request),
        Ok(Step::Done(output)) => output.into_values(lua).map(Returned::Values),
        Err(error) => failed(lua, &error),
    }
}

/// A performer's result as the task's reply: `err` when it gave nil.
pub(crate) fn reply(value: Performed, err: Option<String>) -> OpResult {
    match value {
        Performed::Nil => Err(err.unwrap_or_else(|| "unknown error".to_string())),
        Performed::Bytes(data) => Ok(Reply::Bytes(data)),
        Performed::Int(n) => Ok(Reply::Int(n)),
        Performed::Other => Ok(Reply::Done),
    }
}

/// A performer's first result, read straight off the Lua stack (bytes
/// copied once, no reference to a Lua value kept): nil (failed, the
/// message follows), bytes, a number, or anything else (done).
pub(crate) enum Performed {
    Nil,
    Bytes(Vec<u8>),
    Int(i64),
    Other,
}

impl mlua::FromLua for Performed {
    fn from_lua(value: LuaValue, _: &Lua) -> mlua::Result<Self> {
        Ok(match value {
            LuaValue::Nil => Performed::Nil,
            LuaValue::String(data) => Performed::Bytes(data.as_bytes().to_vec()),
            LuaValue::Integer(n) => Performed::Int(n),
            LuaValue::Number(n) => Performed::Int(n as i64),
            _ => Performed::Other,
        })
    }

    unsafe fn from_stack(idx: std::ffi::c_int, lua: &mlua::state::RawLua) -> mlua::Result<Self> {
        // SAFETY: mlua hands over a valid index of the current state.
        Ok(unsafe { Performed::read(lua.state(), idx) })
    }
}

impl Performed {
    /// The value at `idx` of `state`.
    ///
    /// # Safety
    /// `idx` is a valid (or unused, "none") index of the live thread `state`.
    pub(crate) unsafe fn read(state: *mut mlua::ffi::lua_State, idx: std::ffi::c_int) -> Self {
        use mlua::ffi;
        // SAFETY: per the contract; the string's bytes are copied before
        // anything can collect it.
        unsafe {
            match ffi::lua_type(state, idx) {
                ffi::LUA_TNIL | ffi::LUA_TNONE => Performed::Nil,
                ffi::LUA_TSTRING => {
                    let mut len = 0;
                    let data = ffi::lua_tolstring(state, idx, &mut len);
                    Performed::Bytes(std::slice::from_raw_parts(data.cast::<u8>(), len).to_vec())
                }
                ffi::LUA_TNUMBER => Performed::Int(ffi::lua_tonumber(state, idx) as i64),
                _ => Performed::Other,
            }
        }
    }
}

/// What `start` and `resume` return to the Lua side: a pending operation
/// `nil, true, task, op, socket, a, b, c, d` (pushed without building a
/// vector first: it is returned once per operation), or the phase's
/// results.
pub(crate) enum Returned {
    Pending(PendingOp),
    Values(Variadic<LuaValue>),
}

/// The task, the operation's code and socket, its four arguments.
pub(crate) struct PendingOp(LuaValue, u8, u32, [LuaValue; 4]);

impl mlua::IntoLuaMulti for Returned {
    fn into_lua_multi(self, lua: &Lua) -> mlua::Result<mlua::MultiValue> {
        match self {
            Returned::Values(values) => values.into_lua_multi(lua),
            Returned::Pending(op) => {
                let PendingOp(handle, kind, socket, [a, b, c, d]) = op;
                (LuaValue::Nil, true, handle, kind, socket, a, b, c, d).into_lua_multi(lua)
            }
        }
    }

    unsafe fn push_into_stack_multi(
        self,
        lua: &mlua::state::RawLua,
    ) -> mlua::Result<std::ffi::c_int> {
        // SAFETY: forwarded to mlua's own implementations, same contract.
        unsafe {
            match self {
                Returned::Values(values) => values.push_into_stack_multi(lua),
                Returned::Pending(op) => {
                    let PendingOp(handle, kind, socket, [a, b, c, d]) = op;
                    (LuaValue::Nil, true, handle, kind, socket, a, b, c, d)
                        .push_into_stack_multi(lua)
                }
            }
        }
    }
}

fn failed(lua: &Lua, error: &crate::Error) -> mlua::Result<Returned> {
    let mut values = Variadic::with_capacity(3);
    values.push(LuaValue::Nil);
    values.push(LuaValue::Boolean(false));
    values.push(LuaValue::String(lua.create_string(error.to_string())?));
    Ok(Returned::Values(values))
}

fn pending(lua: &Lua, handle: LuaValue, request: Request) -> mlua::Result<Returned> {
    let [a, b, c, d] = request.args.map(|arg| match arg {
        Arg::Nil => Ok(LuaValue::Nil),
        Arg::Int(n) => Ok(LuaValue::Integer(n)),
        Arg::Num(n) => Ok(LuaValue::Number(n)),
        Arg::Bool(b) => Ok(LuaValue::Boolean(b)),
        Arg::Bytes(bytes) => lua.create_string(bytes).map(LuaValue::String),
        Arg::Text(text) => lua.create_string(&*text).map(LuaValue::String),
        Arg::Lua(value) => Ok(value),
    });
    Ok(Returned::Pending(PendingOp(
        handle,
        request.kind as u8,
        request.socket,
        [a?, b?, c?, d?],
    )))
}

/// What a native module knows of its Lua state for running jobs from
/// timers: the state, and the glue's timer runner (`kong_rs/io.lua`
/// registers it with `set_timer_runner` when it loads the module).
#[derive(Clone)]
pub(crate) struct Timers {
    // Weak: the module table holds this, and the Lua state holds the module.
    lua: mlua::WeakLua,
    // The thread a raw phase runs on: ngx.timer.at is called there.
    running: Rc<crate::running::Running>,
    // Whether the module's `resume` is raw (its jobs are then raw task
    // userdata, see src/io/raw.rs).
    raw: bool,
    runner: Rc<RefCell<Option<Function>>>,
    // `ngx.timer.at` and an error logger, compiled on first use (there is
    // no `ngx` in a plain LuaJIT state, e.g. under `cargo test`).
    functions: Rc<std::cell::OnceCell<(Function, Function)>>,
}

/// `ngx.timer.at(delay, runner, job)` and `ngx.log(ngx.ERR, message)`.
/// Not a tail call: Kong replaces `ngx.timer.at` with lua-resty-timer-ng,
/// which names each job after the Lua frame that called it and fails when
/// that frame is C (ours, had the wrapper tail-called it away).
const TIMER_FUNCTIONS: &str = "return function(delay, runner, job) \
         local ok, err = ngx.timer.at(delay, runner, job) return ok, err end, \
     function(message) ngx.log(ngx.ERR, message) end";

impl Timers {
    pub(crate) fn new(lua: &Lua, running: Rc<crate::running::Running>, raw: bool) -> Timers {
        Timers {
            lua: lua.weak(),
            running,
            raw,
            runner: Rc::new(RefCell::new(None)),
            functions: Rc::new(std::cell::OnceCell::new()),
        }
    }

    fn lua(&self) -> crate::Result<Lua> {
        self.lua
            .try_upgrade()
            .ok_or_else(|| crate::Error::msg("the Lua state of this module is gone"))
    }

    fn functions(&self) -> crate::Result<&(Function, Function)> {
        if let Some(functions) = self.functions.get() {
            return Ok(functions);
        }
        let lua = self.lua()?;
        let functions: (Function, Function) =
            crate::running::eval_on(&lua, self.running.thread(), TIMER_FUNCTIONS)
                .map_err(crate::Error::lua)?;
        Ok(self.functions.get_or_init(|| functions))
    }

    /// The module's `set_timer_runner(fn)`.
    pub(crate) fn set_runner(&self, runner: Function) {
        *self.runner.borrow_mut() = Some(runner);
    }

    /// Runs `task` from `ngx.timer.at(delay)`, detached from any request.
    ///
    /// # Errors
    /// No runner registered (the module was not loaded through the glue),
    /// or nginx refused the timer (too many pending timers, worker exiting).
    pub(crate) fn spawn(
        &self,
        delay: std::time::Duration,
        task: Task<LuaOutput>,
    ) -> crate::Result<()> {
        let runner = self.runner.borrow().clone().ok_or_else(|| {
            crate::Error::msg("no timer runner: load the module through kong_rs.handler")
        })?;
        let job = job(&self.lua()?, task, self.raw).map_err(crate::Error::lua)?;
        let (timer_at, _) = self.functions()?;
        let lua = self.lua()?;
        let (ok, err): (Option<LuaValue>, Option<String>) = crate::running::call_on(
            &lua,
            self.running.thread(),
            timer_at,
            (delay.as_secs_f64(), runner, job),
        )
        .map_err(crate::Error::lua)?;
        match ok {
            Some(_) => Ok(()),
            None => Err(crate::Error::msg(format!(
                "ngx.timer.at: {}",
                err.unwrap_or_else(|| "failed".into())
            ))),
        }
    }

    /// Logs `message` at error level with `ngx.log` (timers have no plugin
    /// context for `kong.log`).
    pub(crate) fn log_error(&self, message: &str) {
        if let Ok((_, log)) = self.functions() {
            // Nothing to do if logging itself fails.
            let _ = log.call::<()>(message);
        }
    }
}

thread_local! {
    // The timers of the module whose constructor is running (set by the
    // bridge around `P::new`), for `kong_rs::queue::Queue::new`.
    static CONSTRUCTING: RefCell<Option<Timers>> = const { RefCell::new(None) };
}

/// Runs `f` (a plugin constructor) with `timers` as the module's.
pub(crate) fn constructing<R>(timers: &Timers, f: impl FnOnce() -> R) -> R {
    let previous = CONSTRUCTING.with(|c| c.replace(Some(timers.clone())));
    let result = f();
    CONSTRUCTING.with(|c| *c.borrow_mut() = previous);
    result
}

/// The timers of the module whose constructor is running, if any.
pub(crate) fn current_timers() -> Option<Timers> {
    CONSTRUCTING.with(|c| c.borrow().clone())
}
