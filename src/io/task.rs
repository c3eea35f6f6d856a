//! The executor of async phases: a future polled from the Lua side, whose
//! every I/O wait is an operation ([`Request`]) that the Lua side performs
//! with nginx's cosockets before polling again with the reply.
//!
//! There is no runtime and no waker-driven scheduling: a task only ever
//! waits for the one operation it handed to Lua, so "poll again" is simply
//! "Lua has the reply". The waker is still honoured, for futures that wake
//! each other inside one task (hyper's connection and its request handle):
//! a task that returns `Pending` without asking for an operation is polled
//! again if something woke it, and fails loudly if nothing did (it waits
//! for something that is not nginx I/O, e.g. a timer of another runtime).

use crate::error::Error;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

macro_rules! op_kinds {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $name:literal;)*) => {
        /// What a pending task asks the Lua side to do. The codes and names
        /// are handed to the glue at load (`io_ops`), which refuses to
        /// start when its performers (`kong_rs/io.lua`) do not match.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub(crate) enum OpKind { $($(#[$doc])* $variant = $code,)* }

        impl OpKind {
            /// Every operation, in code order.
            pub(crate) const ALL: &'static [OpKind] = &[$(OpKind::$variant,)*];

            /// The name of the operation's performer in `kong_rs/io.lua`.
            pub(crate) fn name(self) -> &'static str {
                match self { $(OpKind::$variant => $name,)* }
            }
        }
    };
}

op_kinds! {
    /// `ngx.socket.tcp()` + `connect(host, port, { pool })`; replies the
    /// connection's reuse count.
    Connect = 1, "connect";
    /// `sslhandshake(nil, server_name, verify)`.
    Tls = 2, "tls";
    /// `send(data)`; replies the number of bytes sent.
    Send = 3, "send";
    /// `receiveany(max)`; replies the bytes ("" at end of stream).
    Receive = 4, "receive";
    /// `setkeepalive(idle, pool_size)`: the connection back to the pool.
    Keepalive = 5, "keepalive";
    /// `close()`.
    Close = 6, "close";
    /// `ngx.sleep(seconds)`.
    Sleep = 7, "sleep";
    /// `send(data)` then `receiveany(max)`: a request and the start of its
    /// answer in one round trip between Rust and Lua.
    SendReceive = 8, "send_receive";
    /// `kong.cache:get(key, { ttl, neg_ttl }, run_job, loader)`: replies the
    /// cached or loaded bytes, `false` for a (cached) miss.
    CacheGet = 9, "cache_get";
    /// `kong.client.load_consumer(id, by_username)` (a database read on
    /// Kong, it may yield): replies the consumer as JSON, `false` for none.
    LoadConsumer = 10, "load_consumer";
}

/// An argument of an operation, as it crosses into Lua.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Nil,
    Int(i64),
    Num(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    /// Text shared with its owner (a host or pool name kept by a client).
    Text(Rc<str>),
    /// A Lua value (a job for the Lua side to run).
    Lua(mlua::Value),
}

/// One operation for the Lua side: `kind`, the socket it acts on (0 for
/// none), up to four arguments. The arguments' meaning is the performer's
/// (`kong_rs/io.lua`), by kind.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) kind: OpKind,
    pub(crate) socket: u32,
    pub(crate) args: [Arg; 4],
}

/// What the Lua side answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// A number (bytes sent, reuse count).
    Int(i64),
    /// Bytes received.
    Bytes(Vec<u8>),
    /// Done, nothing to report.
    Done,
}

/// A performed operation: its reply or the error string the cosocket API
/// gave (`"timeout"`, `"closed"`, `"connection refused"`, ...).
pub(crate) type OpResult = std::result::Result<Reply, String>;

/// The I/O state of one task, shared by the task and every socket and
/// operation created while it runs.
pub(crate) struct Io {
    queue: RefCell<VecDeque<(u64, Request)>>,
    // The operation the Lua side is performing: id, and whether its reply
    // is wanted (closing a dropped socket is not waited for).
    in_flight: Cell<Option<(u64, bool)>>,
    replies: RefCell<Vec<(u64, OpResult)>>,
    // Operations handed out whose waiter is gone: their replies are dropped.
    abandoned: RefCell<Vec<u64>>,
    next_op: Cell<u64>,
    next_socket: Cell<u32>,
    // The nearest deadline of the `timeout`s being polled, if any.
    deadline: Cell<Option<Instant>>,
    // The Lua side's table of this task's cosockets (by socket id), once it
    // handed it over: releasing a socket during a poll is then a direct,
    // non-yielding call (setkeepalive, close) rather than one more
    // operation handed out and resumed from.
    // With the glue's `release(sockets, id, idle, size)`, which does it in
    // Lua (a method lookup from Rust is a protected call of its own).
    sockets: RefCell<Option<(mlua::Table, mlua::Function)>>,
    polling: Cell<bool>,
    // The Lua state polling this task (none under `block_on`).
    lua: RefCell<Option<mlua::Lua>>,
    // The thread polling this task when it is entered through a raw C
    // function (src/io/raw.rs), where calls into Lua must go (see
    // crate::running); null inside mlua's callbacks.
    thread: Cell<*mut mlua::ffi::lua_State>,
}

thread_local! {
    // I/O states of finished tasks, kept with their buffers' capacity for
    // the next tasks of this thread: a task per request otherwise costs an
    // allocation for the state and one for each of its queues.
    static SPARE: RefCell<Vec<Rc<Io>>> = const { RefCell::new(Vec::new()) };
}

/// How many spare I/O states a thread keeps.
const SPARE_MAX: usize = 32;

impl Io {
    fn new() -> Rc<Io> {
        if let Some(io) = SPARE.with(|spare| spare.borrow_mut().pop()) {
            return io;
        }
        Rc::new(Io {
            queue: RefCell::new(VecDeque::new()),
            in_flight: Cell::new(None),
            replies: RefCell::new(Vec::new()),
            abandoned: RefCell::new(Vec::new()),
            next_op: Cell::new(1),
            next_socket: Cell::new(1),
            deadline: Cell::new(None),
            sockets: RefCell::new(None),
            polling: Cell::new(false),
            lua: RefCell::new(None),
            thread: Cell::new(std::ptr::null_mut()),
        })
    }

    /// Keeps `io` for a later task when nothing else holds it, emptied
    /// (Lua references dropped, capacity kept).
    fn recycle(io: Rc<Io>) {
        if Rc::strong_count(&io) != 1 || Rc::weak_count(&io) != 0 {
            return;
        }
        io.queue.borrow_mut().clear();
        io.in_flight.set(None);
        io.replies.borrow_mut().clear();
        io.abandoned.borrow_mut().clear();
        io.next_op.set(1);
        io.next_socket.set(1);
        io.deadline.set(None);
        io.sockets.borrow_mut().take();
        io.polling.set(false);
        io.lua.borrow_mut().take();
        io.thread.set(std::ptr::null_mut());
        // (try_with: not while the thread's locals are being destroyed)
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.len() < SPARE_MAX
            {
                spare.push(io);
            }
        });
    }

    /// The Lua state polling this task, if it is polled from Lua.
    pub(crate) fn lua(&self) -> Option<mlua::Lua> {
        self.lua.borrow().clone()
    }

    /// Whether tasks are entered through raw C functions (their handles
    /// are then raw userdata, see src/io/raw.rs).
    pub(crate) fn raw_entry(&self) -> bool {
        !self.thread.get().is_null()
    }

    /// Takes the Lua side's socket table and its releaser (see
    /// `sockets`), once.
    pub(crate) fn set_sockets(&self, sockets: mlua::Table, release: mlua::Function) {
        let mut slot = self.sockets.borrow_mut();
        if slot.is_none() {
            *slot = Some((sockets, release));
        }
    }

    /// Releases a socket (`Keepalive` or `Close`): directly when polled
    /// from Lua with the socket table at hand, else as a detached operation.
    pub(crate) fn release(&self, request: Request) {
        if self.polling.get()
            && let Some((sockets, release)) = self.sockets.borrow().as_ref()
            && let Some(lua) = self.lua.borrow().as_ref()
            && release_directly(lua, self.thread.get(), sockets, release, &request).is_ok()
        {
            return;
        }
        self.submit_detached(request);
    }

    /// A new socket id, unique in this task.
    pub(crate) fn socket_id(&self) -> u32 {
        let id = self.next_socket.get();
        self.next_socket.set(id + 1);
        id
    }

    /// Queues `request`; its reply is collected with [`Io::take_reply`].
    pub(crate) fn submit(&self, request: Request) -> u64 {
        let id = self.next_op.get();
        self.next_op.set(id + 1);
        self.queue.borrow_mut().push_back((id, request));
        id
    }

    /// Queues `request` without waiting for it (releasing a socket).
    pub(crate) fn submit_detached(&self, request: Request) {
        // Id 0 marks "reply not wanted".
        self.queue.borrow_mut().push_back((0, request));
    }

    /// Withdraws operation `id`, whose waiter is gone: taken out of the
    /// queue if not handed out yet (then `true`), else its reply will be
    /// dropped.
    pub(crate) fn cancel(&self, id: u64) -> bool {
        let mut queue = self.queue.borrow_mut();
        if let Some(at) = queue.iter().position(|(op, _)| *op == id) {
            queue.remove(at);
            return true;
        }
        drop(queue);
        let mut replies = self.replies.borrow_mut();
        if let Some(at) = replies.iter().position(|(op, _)| *op == id) {
            drop(replies.swap_remove(at));
        } else {
            self.abandoned.borrow_mut().push(id);
        }
        false
    }

    /// The reply to operation `id`, once the Lua side has given it.
    pub(crate) fn take_reply(&self, id: u64) -> Option<OpResult> {
        let mut replies = self.replies.borrow_mut();
        let at = replies.iter().position(|(op, _)| *op == id)?;
        Some(replies.swap_remove(at).1)
    }

    /// How long an operation may take: `limit`, shortened to the nearest
    /// deadline of the enclosing `timeout`s; `None` when that has passed.
    pub(crate) fn time_left(&self, limit: Duration) -> Option<Duration> {
        match self.deadline.get() {
            None => Some(limit),
            Some(deadline) => {
                let left = deadline.checked_duration_since(Instant::now())?;
                (!left.is_zero()).then_some(left.min(limit))
            }
        }
    }

    /// Runs `f` with `deadline` as the nearest deadline (if nearer).
    pub(crate) fn with_deadline<R>(&self, deadline: Instant, f: impl FnOnce() -> R) -> R {
        let outer = self.deadline.get();
        let nearest = outer.map_or(deadline, |outer| outer.min(deadline));
        self.deadline.set(Some(nearest));
        let result = f();
        self.deadline.set(outer);
        result
    }

    fn deliver(&self, reply: OpResult) {
        if let Some((id, wanted)) = self.in_flight.take()
            && wanted
        {
            let mut abandoned = self.abandoned.borrow_mut();
            if let Some(at) = abandoned.iter().position(|op| *op == id) {
                abandoned.swap_remove(at);
                return;
            }
            self.replies.borrow_mut().push((id, reply));
        }
    }

    fn next_request(&self) -> Option<Request> {
        let (id, request) = self.queue.borrow_mut().pop_front()?;
        self.in_flight.set(Some((id, id != 0)));
        Some(request)
    }
}

/// `sockets[id]:setkeepalive(idle, size)` (closing it when that fails) or
/// `:close()`, and the entry removed, by the glue's `release`. Neither call
/// yields.
fn release_directly(
    lua: &mlua::Lua,
    thread: *mut mlua::ffi::lua_State,
    sockets: &mlua::Table,
    release: &mlua::Function,
    request: &Request,
) -> mlua::Result<()> {
    let (idle, size) = match (request.kind, &request.args) {
        (OpKind::Keepalive, [Arg::Int(idle), Arg::Int(size), ..]) => (Some(*idle), Some(*size)),
        _ => (None, None),
    };
    crate::running::call_on(lua, thread, release, (sockets, request.socket, idle, size))
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Io>>> = const { RefCell::new(None) };
}

/// The I/O state of the task being polled on this thread.
///
/// # Errors
/// Outside a task: kong-rs I/O works only inside an async phase.
pub(crate) fn current() -> crate::Result<Rc<Io>> {
    CURRENT
        .with(|current| current.borrow().clone())
        .ok_or_else(|| {
            Error::msg(
                "kong-rs I/O used outside an async phase: sockets, sleeps and clients \
                 work only while an `async fn` phase (or a queue's sender) runs",
            )
        })
}

/// Sets the current task's I/O state for the duration of `f`, restoring the
/// previous one after (a task polled inside another's operation).
fn with_current<R>(io: &Rc<Io>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|current| current.replace(Some(io.clone())));
    let was_polling = io.polling.replace(true);
    let result = f();
    io.polling.set(was_polling);
    CURRENT.with(|current| *current.borrow_mut() = previous);
    result
}

/// One operation as a future: submitted on first poll, ready when the Lua
/// side replied.
pub(crate) struct Op {
    io: Rc<Io>,
    state: OpState,
}

enum OpState {
    New(Request),
    Sent(u64),
    Finished,
}

impl Op {
    pub(crate) fn new(io: Rc<Io>, request: Request) -> Op {
        Op {
            io,
            state: OpState::New(request),
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let OpState::Sent(id) = self.state {
            self.io.cancel(id);
        }
    }
}

impl Future for Op {
    type Output = OpResult;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<OpResult> {
        let this = &mut *self;
        match std::mem::replace(&mut this.state, OpState::Finished) {
            OpState::New(request) => {
                this.state = OpState::Sent(this.io.submit(request));
                Poll::Pending
            }
            OpState::Sent(id) => match this.io.take_reply(id) {
                Some(reply) => Poll::Ready(reply),
                None => {
                    this.state = OpState::Sent(id);
                    Poll::Pending
                }
            },
            OpState::Finished => Poll::Ready(Err("operation polled after it finished".into())),
        }
    }
}

/// Sets a flag when woken: whether a `Pending` task may progress without I/O.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

thread_local! {
    /// The wake flag of the tasks of this thread, one for all: tasks are
    /// polled one at a time (a task's flag is only read around its own
    /// poll), so sharing it costs at most a spurious re-poll when a waker
    /// of another task fires meanwhile, and saves an allocation per task.
    static WAKE_FLAG: Arc<Flag> = Arc::new(Flag(AtomicBool::new(false)));
}

/// How many times in a row a task may be woken without asking for I/O
/// before it is declared stuck (futures waking each other forever).
const MAX_SPINS: usize = 10_000;

/// What a resumed task wants next.
pub(crate) enum Step<T> {
    /// Perform this operation, then resume with its reply.
    Op(Request),
    /// Finished with this output.
    Done(T),
}

/// A future polled by the Lua side. Dropping it drops the future (and with
/// it every socket it holds, whose release is then no longer performed:
/// nginx closes a request's cosockets when the request ends).
pub(crate) struct Task<T> {
    future: Option<Pin<Box<dyn Future<Output = T>>>>,
    output: Option<T>,
    // Given back to the thread's spare states when the task is dropped.
    io: std::mem::ManuallyDrop<Rc<Io>>,
    flag: Arc<Flag>,
    waker: Waker,
}

thread_local! {
    // Memory of dropped task futures, by layout, for the next tasks of this
    // thread: a phase's future otherwise costs an allocation per request.
    static SPARE_FUTURES: RefCell<SpareFutures> = const { RefCell::new(SpareFutures(Vec::new())) };
}

/// How many blocks of future memory a thread keeps.
const SPARE_FUTURES_MAX: usize = 8;

struct SpareFutures(Vec<(std::alloc::Layout, std::ptr::NonNull<u8>)>);

impl Drop for SpareFutures {
    fn drop(&mut self) {
        for (layout, block) in self.0.drain(..) {
            // SAFETY: each block came from the global allocator with
            // `layout` (a dropped Box's) and holds no value.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) }
        }
    }
}

/// `Box::new(value)`, in the memory of a dropped future of the same layout
/// when this thread kept one.
fn box_reusing<V>(value: V) -> Box<V> {
    let layout = std::alloc::Layout::new::<V>();
    let spare = SPARE_FUTURES
        .try_with(|spare| {
            let mut spare = spare.try_borrow_mut().ok()?;
            let at = spare.0.iter().position(|(l, _)| *l == layout)?;
            Some(spare.0.swap_remove(at).1)
        })
        .ok()
        .flatten();
    match spare {
        // SAFETY: the block was allocated by the global allocator with
        // this layout (size and alignment of V), and is unused: a Box may
        // own it.
        Some(block) if layout.size() != 0 => unsafe {
            let block = block.cast::<V>().as_ptr();
            block.write(value);
            Box::from_raw(block)
        },
        _ => Box::new(value),
    }
}

/// Drops a task's future in place and keeps its memory for
/// [`box_reusing`] (or frees it).
fn drop_future<T>(future: Pin<Box<dyn Future<Output = T>>>) {
    // SAFETY: the value is dropped in place, never moved; then its memory
    // (from the global allocator, with `layout`, as every Box's) is kept
    // or freed, once.
    unsafe {
        let raw = Box::into_raw(Pin::into_inner_unchecked(future));
        let layout = std::alloc::Layout::for_value(&*raw);
        std::ptr::drop_in_place(raw);
        let Some(block) = std::ptr::NonNull::new(raw.cast::<u8>()) else {
            return;
        };
        if layout.size() == 0 {
            return; // a zero-sized Box owns no memory
        }
        let kept = SPARE_FUTURES
            .try_with(|spare| match spare.try_borrow_mut() {
                Ok(mut spare) if spare.0.len() < SPARE_FUTURES_MAX => {
                    spare.0.push((layout, block));
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        if !kept {
            std::alloc::dealloc(block.as_ptr(), layout);
        }
    }
}

/// A future together with the data it borrows, in one allocation: the
/// future is dropped before the data (field order), and the data never
/// moves (the whole is pinned in the task's box).
struct Borrowing<D, F> {
    future: Option<F>,
    data: D,
}

impl<D, F: Future> Future for Borrowing<D, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of `future`: it is never moved out
        // while pinned (only dropped in place with the whole).
        let future = unsafe { self.map_unchecked_mut(|this| &mut this.future) };
        match future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Task<T> {
    /// A task running `future`.
    pub(crate) fn new(future: impl Future<Output = T> + 'static) -> Task<T> {
        Task::boxed(Box::pin(future))
    }

    fn boxed(future: Pin<Box<dyn Future<Output = T>>>) -> Task<T> {
        let flag = WAKE_FLAG.with(Arc::clone);
        Task {
            future: Some(future),
            output: None,
            io: std::mem::ManuallyDrop::new(Io::new()),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// A task whose future borrows `data` (the plugin instance, its PDK,
    /// the request state) for as long as the task lives: `make` builds the
    /// future from a reference to `data`, which stays at one address and
    /// is dropped only after the future.
    pub(crate) fn borrowing<D: 'static, F>(
        data: D,
        make: impl FnOnce(&'static mut D) -> F,
    ) -> Task<T>
    where
        F: Future<Output = T> + 'static,
    {
        let mut whole = box_reusing(Borrowing { future: None, data });
        // SAFETY: the data stays at this address until the box is freed
        // (it is pinned below and never moved out); the only holder of
        // this reference is the future, dropped before the data (field
        // order); `T` is an owned output that cannot hold it ('static);
        // the data is not touched otherwise while the future lives.
        let reference: &'static mut D = unsafe { &mut *std::ptr::addr_of_mut!(whole.data) };
        whole.future = Some(make(reference));
        Task::boxed(Box::into_pin(whole))
    }

    /// Tells the task which Lua state polls it (for operations that hand
    /// Lua values over, e.g. a cache loader).
    pub(crate) fn set_lua(&self, lua: &mlua::Lua) {
        let mut slot = self.io.lua.borrow_mut();
        if slot.is_none() {
            *slot = Some(lua.clone());
        }
    }

    /// Hands the task the Lua side's socket table (see `Io::release`).
    pub(crate) fn set_sockets(&self, sockets: mlua::Table, release: mlua::Function) {
        self.io.set_sockets(sockets, release);
    }

    /// Whether the task has the Lua side's socket table.
    pub(crate) fn has_sockets(&self) -> bool {
        self.io.sockets.borrow().is_some()
    }

    /// Tells the task the thread that polls it from a raw C function (null:
    /// from mlua's callbacks).
    pub(crate) fn set_thread(&self, thread: *mut mlua::ffi::lua_State) {
        self.io.thread.set(thread);
    }

    /// Hands the task the reply to the operation it asked for (`None` on
    /// the first call) and runs it until it needs another operation or
    /// finishes. The future is polled until nothing wakes it any more
    /// before an operation is handed out (so a speculative read it
    /// withdrew, e.g. hyper's idle read before it writes the request, is
    /// never performed), and again after every reply. The output is handed
    /// out after the last queued operation (releasing the sockets it
    /// dropped).
    ///
    /// # Errors
    /// A panic inside the future (the task is finished, its future
    /// dropped), a future stuck on something that is not nginx I/O, or a
    /// task resumed after it finished.
    pub(crate) fn resume(&mut self, reply: Option<OpResult>) -> crate::Result<Step<T>> {
        if let Some(reply) = reply {
            self.io.deliver(reply);
        }
        let mut spins = 0;
        while let Some(future) = self.future.as_mut() {
            self.flag.0.store(false, Ordering::Relaxed);
            let mut cx = Context::from_waker(&self.waker);
            let polled = with_current(&self.io, || {
                catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)))
            });
            match polled {
                Err(panic) => {
                    self.finish();
                    return Err(Error::msg(format!(
                        "panicked: {}",
                        crate::bridge::panic_message(&panic)
                    )));
                }
                Ok(Poll::Ready(output)) => {
                    self.finish();
                    self.output = Some(output);
                }
                Ok(Poll::Pending) if self.flag.0.load(Ordering::Relaxed) => {
                    spins += 1;
                    if spins > MAX_SPINS {
                        self.finish();
                        return Err(Error::msg(
                            "async phase kept waking itself without doing any I/O",
                        ));
                    }
                    continue;
                }
                Ok(Poll::Pending) => {
                    if self.io.queue.borrow().is_empty() {
                        self.finish();
                        return Err(Error::msg(
                            "async phase is waiting for something that is not nginx I/O \
                             (a future of another runtime, a channel nobody sends on?): \
                             only kong-rs sockets, sleeps and clients can be awaited",
                        ));
                    }
                }
            }
            break;
        }
        if let Some(request) = self.io.next_request() {
            return Ok(Step::Op(request));
        }
        match self.output.take() {
            Some(output) => Ok(Step::Done(output)),
            None => Err(Error::msg("async phase resumed after it finished")),
        }
    }

    /// Drops the future (and what it borrowed).
    fn finish(&mut self) {
        if let Some(future) = self.future.take() {
            drop(catch_unwind(AssertUnwindSafe(move || drop_future(future))));
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        // The future first: its sockets queue their release on the state.
        if let Some(future) = self.future.take() {
            drop(catch_unwind(AssertUnwindSafe(move || drop_future(future))));
        }
        // SAFETY: taken once, here; not used after.
        Io::recycle(unsafe { std::mem::ManuallyDrop::take(&mut self.io) });
    }
}

/// Runs `future` to completion on this thread, performing its operations
/// with blocking std sockets: for `cargo test` of async plugin code (and of
/// the clients) without nginx. TLS is not available here.
///
/// # Errors
/// The future panicked, kept waking itself without doing any I/O, or
/// waited for something that is not kong-rs I/O (a future of another
/// runtime, a channel nobody sends on).
pub fn block_on<T: 'static>(future: impl Future<Output = T> + 'static) -> crate::Result<T> {
    let mut task = Task::new(future);
    let mut sockets = super::blocking::Sockets::default();
    let mut reply = None;
    loop {
        match task.resume(reply.take())? {
            Step::Done(output) => return Ok(output),
            Step::Op(request) => reply = Some(sockets.perform(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_codes_are_dense_from_one() {
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i + 1, "{}", kind.name());
        }
    }

    #[test]
    fn a_future_that_needs_no_io_finishes_in_one_resume() {
        let mut task = Task::new(async { 7 });
        assert!(matches!(task.resume(None), Ok(Step::Done(7))));
        assert!(task.resume(None).is_err(), "resumed after it finished");
    }

    #[test]
    fn each_operation_is_handed_out_and_its_reply_returned() {
        let mut task = Task::new(async {
            let io = current().expect("inside a task");
            let request = |n| Request {
                kind: OpKind::Sleep,
                socket: 0,
                args: [Arg::Int(n), Arg::Nil, Arg::Nil, Arg::Nil],
            };
            let a = Op::new(io.clone(), request(1)).await;
            let b = Op::new(io, request(2)).await;
            (a, b)
        });
        let Ok(Step::Op(first)) = task.resume(None) else {
            panic!("first operation")
        };
        assert_eq!(first.args[0], Arg::Int(1));
        let Ok(Step::Op(second)) = task.resume(Some(Ok(Reply::Int(10)))) else {
            panic!("second operation")
        };
        assert_eq!(second.args[0], Arg::Int(2));
        let Ok(Step::Done((a, b))) = task.resume(Some(Err("timeout".into()))) else {
            panic!("done")
        };
        assert_eq!(a, Ok(Reply::Int(10)));
        assert_eq!(b, Err("timeout".to_string()));
    }

    #[test]
    fn a_panic_is_an_error_and_frees_what_the_future_borrowed() {
        struct Counted(Rc<Cell<u32>>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(Cell::new(0));
        let mut task: Task<()> = Task::borrowing(Counted(drops.clone()), |counted| async move {
            let _keep = &counted.0;
            panic!("boom");
        });
        let err = task.resume(None).err().expect("a panic is an error");
        assert!(err.to_string().contains("panicked: boom"), "{err}");
        assert_eq!(drops.get(), 1, "borrowed data freed once");
        drop(task);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn a_task_dropped_while_waiting_frees_everything() {
        let drops = Rc::new(Cell::new(0u32));
        struct Counted(Rc<Cell<u32>>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let mut task: Task<()> = Task::borrowing(Counted(drops.clone()), |counted| async move {
            let io = current().expect("inside a task");
            let _ = Op::new(
                io,
                Request {
                    kind: OpKind::Sleep,
                    socket: 0,
                    args: [Arg::Num(1.0), Arg::Nil, Arg::Nil, Arg::Nil],
                },
            )
            .await;
            counted.0.set(100);
        });
        assert!(matches!(task.resume(None), Ok(Step::Op(_))));
        drop(task);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn a_finished_tasks_memory_serves_the_next_task_and_its_data_is_dropped() {
        struct Counted(Rc<Cell<u32>>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(Cell::new(0u32));
        let address = |task: &Task<u32>| {
            let future = task.future.as_ref().expect("not finished");
            (&**future as *const dyn Future<Output = u32>).cast::<u8>()
        };
        let make = |drops: &Rc<Cell<u32>>| {
            Task::borrowing(Counted(drops.clone()), |counted| async move {
                counted.0.get() + 7
            })
        };
        let mut first = make(&drops);
        let first_at = address(&first);
        assert!(matches!(first.resume(None), Ok(Step::Done(7))));
        assert_eq!(drops.get(), 1, "the data is dropped when the task finishes");
        let mut second = make(&drops);
        assert_eq!(
            address(&second),
            first_at,
            "the same memory, no new allocation"
        );
        assert!(matches!(second.resume(None), Ok(Step::Done(8))));
        drop((first, second));
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn a_future_waiting_on_nothing_fails_loudly() {
        let mut task = Task::new(std::future::pending::<()>());
        let err = task.resume(None).err().expect("stuck");
        assert!(err.to_string().contains("not nginx I/O"), "{err}");
    }

    #[test]
    fn io_outside_a_task_is_an_error() {
        assert!(current().is_err());
    }
}
