//! Sleeping and timeouts, on nginx's clock (`ngx.sleep`) and deadlines
//! that bound every socket operation awaited inside them.

use super::task::{Arg, Op, OpKind, Request, current};
use crate::error::{Error, ErrorKind, Result};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Waits `duration` (`ngx.sleep`); the worker serves other requests meanwhile.
/// Inside a [`timeout`], waits at most until its deadline.
///
/// # Errors
/// Outside an async phase.
pub async fn sleep(duration: Duration) -> Result<()> {
    let io = current()?;
    let Some(left) = io.time_left(duration) else {
        return Ok(());
    };
    let request = Request {
        kind: OpKind::Sleep,
        socket: 0,
        args: [Arg::Num(left.as_secs_f64()), Arg::Nil, Arg::Nil, Arg::Nil],
    };
    Op::new(io, request).await.map(|_| ()).map_err(Error::msg)
}

/// Runs `future` for at most `limit`: every socket operation and sleep it
/// awaits is bounded by the deadline (nginx enforces it, no timer of ours),
/// and past the deadline it is dropped (closing the sockets it held).
///
/// # Errors
/// [`ErrorKind::Timeout`] when the deadline passed first.
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output> {
    Timeout {
        deadline: Instant::now() + limit,
        limit,
        future: Box::pin(future),
    }
    .await
}

struct Timeout<F> {
    deadline: Instant,
    limit: Duration,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let elapsed = |limit: Duration| {
            Error::new(
                ErrorKind::Timeout,
                format!("timed out after {} ms", limit.as_millis()),
            )
        };
        if Instant::now() >= self.deadline {
            return Poll::Ready(Err(elapsed(self.limit)));
        }
        let io = match current() {
            Ok(io) => io,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let deadline = self.deadline;
        let polled = io.with_deadline(deadline, || self.future.as_mut().poll(cx));
        match polled {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending if Instant::now() >= deadline => Poll::Ready(Err(elapsed(self.limit))),
            Poll::Pending => Poll::Pending,
        }
    }
}
