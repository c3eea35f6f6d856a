//! A bounded per-worker queue whose entries are sent in batches from a
//! timer: how log shippers send from the `log` phase, where nginx gives no
//! cosockets (the shape of Kong's `kong.tools.queue`).
//!
//! The `log` phase captures what it needs and [`Queue::push`]es it; a job
//! started with `ngx.timer.at` after `max_coalescing_delay` (at once when a
//! batch is full) takes up to `max_batch_size` entries and awaits the
//! sender — an async function free to use [`crate::http`] and friends —
//! retrying a failed batch with exponential backoff for `max_retry_time`,
//! then dropping it (counted, logged). A full queue (`max_entries`,
//! `max_bytes`) drops the new entry (counted); memory stays bounded. One
//! sender runs at a time per queue.
//!
//! ```
//! use kong_rs::queue::{Queue, QueueConfig};
//! use std::rc::Rc;
//!
//! let queue: Queue<String> = Queue::new("my-shipper", QueueConfig::default(), |batch: Rc<[String]>| async move {
//!     let body = batch.join("\n");
//!     kong_rs::http::Request::post("http://127.0.0.1:9000/logs")?.body(body).send().await?;
//!     Ok(())
//! });
//! assert!(queue.push("one log line".to_string()));
//! assert_eq!(queue.stats().queued, 1);
//! ```
//!
//! Build the queue in the plugin's constructor: there it is tied to the
//! worker's timers. A queue built elsewhere (a unit test) never sends by
//! itself; [`Queue::flush`] sends what it holds (e.g. under
//! [`crate::io::block_on`]).

use crate::error::Result;
use crate::io::driver::{self, LuaOutput, Timers};
use crate::io::task::Task;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Queue parameters, named and defaulted as Kong's (`kong/tools/queue_schema.lua`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// Entries per batch (Kong: 1).
    pub max_batch_size: usize,
    /// How long the first entry of a batch waits for more (Kong: 1 s).
    pub max_coalescing_delay: Duration,
    /// Entries held at most; a push beyond is dropped (Kong: 10,000).
    pub max_entries: usize,
    /// Bytes held at most (as given to [`Queue::push_sized`]); `None`: no limit.
    pub max_bytes: Option<usize>,
    /// How long a failing batch is retried before it is dropped (Kong: 60 s).
    pub max_retry_time: Duration,
    /// The first retry's delay, doubled on each retry (Kong: 0.01 s).
    pub initial_retry_delay: Duration,
    /// The longest delay between retries (Kong: 60 s).
    pub max_retry_delay: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch_size: 1,
            max_coalescing_delay: Duration::from_secs(1),
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: Duration::from_secs(60),
            initial_retry_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_secs(60),
        }
    }
}

/// What a queue did so far (in this worker).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries waiting now.
    pub queued: usize,
    /// Entries accepted by `push` since the start.
    pub pushed: u64,
    /// Entries sent (their batch's sender returned `Ok`).
    pub sent: u64,
    /// Entries dropped because the queue was full.
    pub dropped_full: u64,
    /// Entries dropped because their batch kept failing past `max_retry_time`.
    pub dropped_failed: u64,
    /// Sender calls that returned `Err`.
    pub failed_attempts: u64,
}

type Sender<T> = Box<dyn Fn(Rc<[T]>) -> Pin<Box<dyn Future<Output = Result<()>>>>>;

struct Inner<T> {
    name: String,
    config: QueueConfig,
    entries: RefCell<VecDeque<(T, usize)>>,
    bytes: Cell<usize>,
    // A job is scheduled or running.
    sending: Cell<bool>,
    sender: Sender<T>,
    timers: Option<Timers>,
    stats: Cell<QueueStats>,
}

/// A bounded queue sending batches from a timer; clones share the queue.
pub struct Queue<T> {
    inner: Rc<Inner<T>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("stats", &self.inner.stats.get())
            .finish()
    }
}

/// Clears `sending` when the job ends, however it ends (a panicking
/// sender included), so the next push schedules a new one.
struct Sending<T>(Rc<Inner<T>>);

impl<T> Drop for Sending<T> {
    fn drop(&mut self) {
        self.0.sending.set(false);
    }
}

impl<T: 'static> Queue<T> {
    /// A queue named `name` (in log lines) whose batches `sender` sends.
    pub fn new<F, Fut>(name: impl Into<String>, config: QueueConfig, sender: F) -> Queue<T>
    where
        F: Fn(Rc<[T]>) -> Fut + 'static,
        Fut: Future<Output = Result<()>> + 'static,
    {
        Queue {
            inner: Rc::new(Inner {
                name: name.into(),
                config,
                entries: RefCell::new(VecDeque::new()),
                bytes: Cell::new(0),
                sending: Cell::new(false),
                sender: Box::new(move |batch| Box::pin(sender(batch))),
                timers: driver::current_timers(),
                stats: Cell::new(QueueStats::default()),
            }),
        }
    }

    /// Queues `entry`; `false` when the queue is full and it was dropped.
    pub fn push(&self, entry: T) -> bool {
        self.push_sized(entry, 0)
    }

    /// Queues `entry`, counting `bytes` against `max_bytes`; `false` when
    /// the queue is full and it was dropped.
    pub fn push_sized(&self, entry: T, bytes: usize) -> bool {
        let inner = &self.inner;
        let full = inner.entries.borrow().len() >= inner.config.max_entries
            || inner
                .config
                .max_bytes
                .is_some_and(|max| inner.bytes.get() + bytes > max);
        if full {
            inner.update(|s| s.dropped_full += 1);
            return false;
        }
        inner.entries.borrow_mut().push_back((entry, bytes));
        inner.bytes.set(inner.bytes.get() + bytes);
        inner.update(|s| s.pushed += 1);
        self.schedule();
        true
    }

    /// What the queue did so far, in this worker.
    pub fn stats(&self) -> QueueStats {
        let mut stats = self.inner.stats.get();
        stats.queued = self.inner.entries.borrow().len();
        stats
    }

    /// Sends everything queued now, batch by batch, with the retry policy.
    ///
    /// # Errors
    /// Never for a failing sender (its batches are dropped and counted, as
    /// from the timer); only when used outside an async context, as any
    /// I/O.
    pub async fn flush(&self) -> Result<()> {
        Inner::drain(&self.inner).await
    }

    /// Starts a job from a timer, unless one is scheduled or running.
    fn schedule(&self) {
        let inner = &self.inner;
        let Some(timers) = &inner.timers else {
            return;
        };
        if inner.sending.get() {
            return;
        }
        let delay = if inner.entries.borrow().len() >= inner.config.max_batch_size {
            Duration::ZERO
        } else {
            inner.config.max_coalescing_delay
        };
        inner.sending.set(true);
        let job_inner = inner.clone();
        let task = Task::new(async move {
            let sending = Sending(job_inner);
            let _ = Inner::drain(&sending.0).await;
            drop(sending);
            LuaOutput::Make(Box::new(|_| Ok(mlua::Variadic::new())))
        });
        if let Err(e) = timers.spawn(delay, task) {
            // The job was dropped unstarted (its guard cleared `sending`);
            // the entries wait for the next push.
            inner.sending.set(false);
            timers.log_error(&format!(
                "queue {}: cannot start its sender: {e}",
                inner.name
            ));
        }
    }
}

impl<T: 'static> Inner<T> {
    fn update(&self, f: impl FnOnce(&mut QueueStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    fn take_batch(&self) -> Option<Rc<[T]>> {
        let mut entries = self.entries.borrow_mut();
        let n = entries.len().min(self.config.max_batch_size.max(1));
        if n == 0 {
            return None;
        }
        let mut batch = Vec::with_capacity(n);
        for (entry, bytes) in entries.drain(..n) {
            self.bytes.set(self.bytes.get().saturating_sub(bytes));
            batch.push(entry);
        }
        Some(batch.into())
    }

    async fn drain(self: &Rc<Self>) -> Result<()> {
        while let Some(batch) = self.take_batch() {
            self.send_with_retries(batch).await?;
        }
        Ok(())
    }

    async fn send_with_retries(&self, batch: Rc<[T]>) -> Result<()> {
        let started = Instant::now();
        let mut delay = self.config.initial_retry_delay;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match (self.sender)(batch.clone()).await {
                Ok(()) => {
                    self.update(|s| s.sent += batch.len() as u64);
                    return Ok(());
                }
                Err(error) => {
                    self.update(|s| s.failed_attempts += 1);
                    if started.elapsed() + delay > self.config.max_retry_time {
                        self.update(|s| s.dropped_failed += batch.len() as u64);
                        let message = format!(
                            "queue {}: dropping a batch of {} entries after {attempts} attempts: {error}",
                            self.name,
                            batch.len()
                        );
                        match &self.timers {
                            Some(timers) => timers.log_error(&message),
                            None => eprintln!("{message}"),
                        }
                        return Ok(());
                    }
                    crate::io::sleep(delay).await?;
                    delay = (delay * 2).min(self.config.max_retry_delay);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn bounded_by_entries_and_bytes_with_drop_counters() {
        let config = QueueConfig {
            max_entries: 3,
            max_bytes: Some(10),
            ..QueueConfig::default()
        };
        let queue: Queue<u32> = Queue::new("t", config, |_batch| async { Ok(()) });
        assert!(queue.push_sized(1, 4));
        assert!(queue.push_sized(2, 4));
        assert!(!queue.push_sized(3, 4), "over max_bytes");
        assert!(queue.push_sized(4, 2));
        assert!(!queue.push_sized(5, 0), "over max_entries");
        let stats = queue.stats();
        assert_eq!((stats.queued, stats.pushed, stats.dropped_full), (3, 3, 2));
    }

    #[test]
    fn flush_sends_in_batches_and_retries_then_drops() {
        let seen: Rc<RefCell<Vec<Vec<u32>>>> = Rc::default();
        let failures = Rc::new(Cell::new(2u32));
        let config = QueueConfig {
            max_batch_size: 2,
            initial_retry_delay: Duration::from_millis(1),
            max_retry_time: Duration::from_millis(200),
            ..QueueConfig::default()
        };
        let (seen_in, failures_in) = (seen.clone(), failures.clone());
        let queue: Queue<u32> = Queue::new("t", config, move |batch: Rc<[u32]>| {
            let seen = seen_in.clone();
            let failures = failures_in.clone();
            async move {
                if failures.get() > 0 {
                    failures.set(failures.get() - 1);
                    return Err(Error::msg("collector down"));
                }
                seen.borrow_mut().push(batch.to_vec());
                Ok(())
            }
        });
        for n in 1..=5 {
            assert!(queue.push(n));
        }
        let flushing = queue.clone();
        crate::io::block_on(async move { flushing.flush().await })
            .unwrap()
            .unwrap();
        assert_eq!(*seen.borrow(), vec![vec![1, 2], vec![3, 4], vec![5]]);
        let stats = queue.stats();
        assert_eq!((stats.sent, stats.failed_attempts, stats.queued), (5, 2, 0));

        // A sender that never succeeds: the batch is dropped after max_retry_time.
        failures.set(u32::MAX);
        queue.push(6);
        let started = Instant::now();
        let flushing = queue.clone();
        crate::io::block_on(async move { flushing.flush().await })
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(queue.stats().dropped_failed, 1);
    }
}
