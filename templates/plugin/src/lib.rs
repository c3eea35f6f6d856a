//! `__NAME__`: a Kong plugin written in Rust with kong-rs.
//!
//! It adds the response header `x-__NAME__` with the
//! configured `message`, or, with `deny_status` set, answers that status
//! with the message instead of proxying. Change it into your plugin: the
//! config type (the Kong schema is generated from it), the constructor
//! (runs once per configuration, also when the Admin API validates one) and
//! the phase methods (only those you write are registered with Kong).

use kong_rs::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin's configuration. Doc comments become the schema's field
/// descriptions (Kong wants 10 to 500 bytes each).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Value of the x-__NAME__ response header (or the body of a denial).
    pub message: String,
    /// When set, answer every request with this status (400-599) and the message.
    #[schemars(range(min = 400, max = 599))]
    #[serde(default)]
    pub deny_status: Option<u16>,
}

/// One instance per configuration version: precomputed in `new`.
#[derive(Debug)]
pub struct __TYPE__ {
    message: Vec<u8>,
    deny_status: Option<u16>,
}

#[kong_rs::plugin] // records which phase methods exist: only those are registered with Kong
impl Plugin for __TYPE__ {
    type Config = Config;
    type State = ();
    const NAME: &'static str = "__NAME__";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 1000;

    fn new(config: Config) -> Result<Self> {
        if config.message.is_empty() || config.message.contains(['\r', '\n']) {
            // The Admin API answers 400 with this message.
            return Err("message must be non-empty and without line breaks".into());
        }
        Ok(__TYPE__ { message: config.message.into_bytes(), deny_status: config.deny_status })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        if let Some(status) = self.deny_status {
            // Rust never yields: the exit is returned and performed by the Lua side.
            return Ok(Flow::exit(status, self.message.clone()));
        }
        kong.response().set_header("x-__NAME__", &self.message)?;
        Ok(Flow::Continue)
    }
}

// `require("__MODULE__")` finds `luaopen___MODULE__` in __MODULE__.so.
kong_rs::export_plugins!(luaopen___MODULE__: __TYPE__);

#[cfg(test)]
mod tests {
    use super::*;
    use kong_rs::{MockPdk, run_request};

    #[test]
    fn sets_the_header() {
        let config = Config { message: "hello".into(), deny_status: None };
        let mut kong = MockPdk::get("/");
        let flow = run_request::<__TYPE__>(config, &mut kong).unwrap();
        assert_eq!(flow, Flow::Continue);
        assert_eq!(kong.response_header("x-__NAME__"), Some(&b"hello"[..]));
    }

    #[test]
    fn denies_with_the_configured_status() {
        let config = Config { message: "go away".into(), deny_status: Some(403) };
        let mut kong = MockPdk::get("/");
        let flow = run_request::<__TYPE__>(config, &mut kong).unwrap();
        assert_eq!(flow, Flow::exit(403, "go away"));
    }

    #[test]
    fn refuses_an_empty_message() {
        let config = Config { message: String::new(), deny_status: None };
        assert!(__TYPE__::new(config).is_err());
    }
}
