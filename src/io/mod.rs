//! Network I/O for async phases, performed by nginx.
//!
//! A phase written as `async fn access(...)` (or `rewrite`, `preread`) runs
//! as a task: a Rust future that the Lua side polls. When it awaits I/O —
//! a [`TcpStream`] connect, send or receive, a TLS handshake, a
//! [`sleep`] — the future returns `Pending` with the operation it needs,
//! the Lua side performs it with nginx's cosockets in the request's own
//! coroutine (the worker serves other requests meanwhile), then polls
//! again with the result. No thread, no runtime, no second event loop:
//! Rust never yields across C, the future simply waits.
//!
//! The clients built on this: [`crate::http`] (hyper) and
//! [`crate::redis`] (a RESP codec). [`block_on`] runs the same futures with
//! blocking std sockets, for `cargo test` without nginx.

mod blocking;
pub(crate) mod driver;
mod socket;
pub(crate) mod task;
mod time;

pub use socket::{Connect, DEFAULT_TIMEOUT, TcpStream};
pub use task::block_on;
pub use time::{sleep, timeout};
