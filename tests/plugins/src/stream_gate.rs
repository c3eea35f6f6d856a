//! `rs-stream-gate` (tests only): a stream plugin. In `preread` it lets a
//! TCP connection through or closes it with 403, as configured; in `log` it
//! logs the connection. Proves the stream phases on real Kong (Debian's
//! nginx has no stream Lua module, so the gateway cannot run them).

use kong_rs::{Exit, Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Configuration of `rs-stream-gate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct StreamGateConfig {
    /// Close every connection with 403 in preread instead of proxying it.
    #[serde(default)]
    pub deny: bool,
}

/// The stream test plugin.
#[derive(Debug)]
pub struct StreamGate {
    deny: bool,
}

#[kong_rs::plugin]
impl Plugin for StreamGate {
    type Config = StreamGateConfig;
    type State = ();
    const NAME: &'static str = "rs-stream-gate";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 950;

    fn new(config: StreamGateConfig) -> Result<Self> {
        Ok(StreamGate { deny: config.deny })
    }

    fn preread(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        let subsystem = kong.nginx().get_subsystem()?;
        let ip = kong.client().get_ip()?;
        kong.log().warn(&format!(
            "rs-stream-gate preread: {subsystem} connection from {ip}"
        ))?;
        if self.deny {
            return Ok(Flow::Exit(Exit::new(403)));
        }
        Ok(Flow::Continue)
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        let subsystem = kong.nginx().get_subsystem()?;
        kong.log().warn(&format!(
            "rs-stream-gate log: {subsystem} connection closed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rs::{MockPdk, run_request};

    fn connection() -> MockPdk {
        let mut kong = MockPdk::get("/");
        kong.subsystem = "stream".to_string();
        kong
    }

    #[test]
    fn lets_a_connection_through_or_closes_it_with_403() {
        let mut kong = connection();
        let flow = run_request::<StreamGate>(StreamGateConfig { deny: false }, &mut kong).unwrap();
        assert_eq!(flow, Flow::Continue);
        assert_eq!(kong.logs.len(), 2, "preread and log: {:?}", kong.logs);
        assert!(kong.logs[0].1.contains("stream connection from 127.0.0.1"));

        let mut kong = connection();
        let flow = run_request::<StreamGate>(StreamGateConfig { deny: true }, &mut kong).unwrap();
        assert_eq!(flow, Flow::Exit(Exit::new(403)));
        assert_eq!(kong.status, 403);
        assert!(
            !kong.calls.contains(&"request.get_header"),
            "no HTTP call in stream"
        );
    }
}
