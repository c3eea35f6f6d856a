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
pub(crate) mod raw;
mod socket;
pub(crate) mod task;
mod time;

pub use socket::{Connect, DEFAULT_TIMEOUT, TcpStream};
pub use task::block_on;

/// `kong.client.load_consumer(id, by_username)` performed by the Lua side
/// (see [`crate::pdk::Client::load_consumer`]).
pub(crate) async fn load_consumer(
    id: String,
    by_username: bool,
) -> crate::Result<Option<crate::pdk::Entity>> {
    let io = task::current()?;
    let request = task::Request {
        kind: task::OpKind::LoadConsumer,
        socket: 0,
        args: [
            task::Arg::Bytes(id.into_bytes()),
            task::Arg::Bool(by_username),
            task::Arg::Nil,
            task::Arg::Nil,
        ],
    };
    match task::Op::new(io, request).await {
        Ok(task::Reply::Bytes(json)) => {
            let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
                crate::Error::msg(format!("kong.client.load_consumer: bad answer: {e}"))
            })?;
            Ok(Some(crate::pdk::Entity::consumer(value)))
        }
        Ok(_) => Ok(None),
        Err(message) => Err(crate::Error::new(
            crate::ErrorKind::Pdk,
            format!("kong.client.load_consumer: {message}"),
        )),
    }
}
pub use time::{sleep, timeout};

/// Appends `n` in decimal to `out`, without the formatting machinery
/// (protocol encoders call it per request).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}
