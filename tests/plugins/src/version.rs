//! `rs-version` (tests only): a plugin whose `VERSION` and behaviour are
//! chosen when the library is built (`KONG_RS_TEST_VERSION`, default
//! `1.0.0`), so a spec can build a second library, put it in place of the
//! first and check that a reload runs the new code.

use kong_rs::{Flow, Pdk, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The version compiled in.
const BUILT_VERSION: &str = match option_env!("KONG_RS_TEST_VERSION") {
    Some(version) => version,
    None => "1.0.0",
};

/// Configuration of `rs-version`: none.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct VersionConfig {}

/// Answers every request with `X-Rs-Version: <the version compiled in>`
/// and logs a line.
#[derive(Debug)]
pub struct Version;

#[kong_rs::plugin]
impl Plugin for Version {
    type Config = VersionConfig;
    type State = ();
    const NAME: &'static str = "rs-version";
    const VERSION: &'static str = BUILT_VERSION;
    const PRIORITY: i32 = 10;

    fn new(_config: VersionConfig) -> Result<Self> {
        Ok(Version)
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        kong.response()
            .set_header("x-rs-version", BUILT_VERSION.as_bytes())?;
        Ok(Flow::Continue)
    }

    /// A log line of its own, so a spec can check that lines of two Rust
    /// plugins in one library are each tagged with their own name.
    fn log(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        kong.log()
            .warn(&format!("rs-version {BUILT_VERSION} answered"))
    }
}
