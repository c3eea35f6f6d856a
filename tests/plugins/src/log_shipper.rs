//! `rs-log-shipper`: ships one JSON entry per request from the `log` phase
//! through a [`kong_rs::queue::Queue`], batches POSTed as a JSON array to
//! `url` from a timer. A request with `x-shipper-stats` is answered in
//! `access` with the worker's queue counters (for the specs).

use kong_rs::queue::{Queue, QueueConfig};
use kong_rs::{Flow, Pdk, Plugin, Result};
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

/// Config of `rs-log-shipper`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct LogShipperConfig {
    /// Where batches are POSTed, e.g. `http://127.0.0.1:9000/collect`.
    pub url: String,
    /// Entries per batch.
    #[serde(default = "one")]
    pub max_batch_size: usize,
    /// How long a batch waits for more entries, in milliseconds.
    #[serde(default = "hundred")]
    pub max_coalescing_delay_ms: u64,
    /// Entries held at most by the worker's queue.
    #[serde(default = "ten_thousand")]
    pub max_entries: usize,
    /// How long a failing batch is retried, in milliseconds.
    #[serde(default = "ten_thousand_ms")]
    pub max_retry_time_ms: u64,
}

fn one() -> usize {
    1
}
fn hundred() -> u64 {
    100
}
fn ten_thousand() -> usize {
    10_000
}
fn ten_thousand_ms() -> u64 {
    10_000
}

/// The `rs-log-shipper` plugin.
pub struct LogShipper {
    queue: Queue<serde_json::Value>,
}

#[kong_rs::plugin]
impl Plugin for LogShipper {
    type Config = LogShipperConfig;
    type State = ();
    const NAME: &'static str = "rs-log-shipper";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 5;

    fn new(config: LogShipperConfig) -> Result<Self> {
        kong_rs::http::Request::post(&config.url)?;
        let queue_config = QueueConfig {
            max_batch_size: config.max_batch_size,
            max_coalescing_delay: Duration::from_millis(config.max_coalescing_delay_ms),
            max_entries: config.max_entries,
            max_retry_time: Duration::from_millis(config.max_retry_time_ms),
            ..QueueConfig::default()
        };
        let url = config.url;
        let queue = Queue::new(
            "rs-log-shipper",
            queue_config,
            move |batch: Rc<[serde_json::Value]>| {
                let url = url.clone();
                async move {
                    let body = serde_json::to_vec(&*batch)
                        .map_err(|e| kong_rs::Error::msg(e.to_string()))?;
                    let response = kong_rs::http::Request::post(&url)?
                        .header("content-type", "application/json")
                        .body(body)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await?;
                    if response.status / 100 != 2 {
                        return Err(format!("collector answered {}", response.status).into());
                    }
                    Ok(())
                }
            },
        );
        Ok(LogShipper { queue })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        if kong.request().get_header("x-shipper-stats")?.is_none() {
            return Ok(Flow::Continue);
        }
        let s = self.queue.stats();
        let body = serde_json::json!({
            "queued": s.queued, "pushed": s.pushed, "sent": s.sent,
            "dropped_full": s.dropped_full, "dropped_failed": s.dropped_failed,
            "failed_attempts": s.failed_attempts,
        });
        Ok(Flow::exit(200, body.to_string()))
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        if kong.request().get_header("x-shipper-stats")?.is_some() {
            return Ok(()); // the specs' questions are not shipped
        }
        let path = String::from_utf8_lossy(&kong.request().get_path()?).into_owned();
        let status = kong.response().get_status()?;
        self.queue
            .push(serde_json::json!({ "path": path, "status": status }));
        Ok(())
    }
}
