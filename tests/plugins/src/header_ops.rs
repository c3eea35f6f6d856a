//! `rs-header-ops` (tests only): performs a configured list of header
//! writes, in order, so a spec can compare them with the same `kong.*` calls
//! made from Lua — whatever path each write takes (queued for Lua, or
//! straight into nginx, see `crate::pdk::ngx`).

use kong_rs::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// A header write, named after its `kong.*` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeaderOp {
    /// `kong.service.request.set_header`.
    ServiceSet,
    /// `kong.service.request.add_header`.
    ServiceAdd,
    /// `kong.service.request.clear_header`.
    ServiceClear,
    /// `kong.response.set_header`.
    ResponseSet,
    /// `kong.response.add_header`.
    ResponseAdd,
    /// `kong.response.clear_header`.
    ResponseClear,
}

/// One write: `value` is ignored by the clear operations.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HeaderStep {
    /// Which write.
    pub op: HeaderOp,
    /// Header name.
    pub name: String,
    /// Header value.
    #[serde(default)]
    pub value: String,
}

/// Configuration of `rs-header-ops`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct HeaderOpsConfig {
    /// The writes of the access phase, in order.
    #[serde(default)]
    pub access: Vec<HeaderStep>,
    /// The writes of the header_filter phase (response writes only), in order.
    #[serde(default)]
    pub header_filter: Vec<HeaderStep>,
}

/// Performs the configured writes.
#[derive(Debug)]
pub struct HeaderOps {
    config: HeaderOpsConfig,
}

fn perform(kong: &mut dyn Pdk, steps: &[HeaderStep]) -> Result<()> {
    for step in steps {
        let (name, value) = (step.name.as_str(), step.value.as_bytes());
        match step.op {
            HeaderOp::ServiceSet => kong.service_request().set_header(name, value)?,
            HeaderOp::ServiceAdd => kong.service_request().add_header(name, value)?,
            HeaderOp::ServiceClear => kong.service_request().clear_header(name)?,
            HeaderOp::ResponseSet => kong.response().set_header(name, value)?,
            HeaderOp::ResponseAdd => kong.response().add_header(name, value)?,
            HeaderOp::ResponseClear => kong.response().clear_header(name)?,
        }
    }
    Ok(())
}

#[kong_rs::plugin]
impl Plugin for HeaderOps {
    type Config = HeaderOpsConfig;
    type State = ();
    const NAME: &'static str = "rs-header-ops";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 900;

    fn new(config: HeaderOpsConfig) -> Result<Self> {
        Ok(HeaderOps { config })
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        perform(kong, &self.config.access).map(|()| Flow::Continue)
    }

    fn header_filter(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        perform(kong, &self.config.header_filter)
    }
}
