//! `rs-fault` and `rs-fault-response` (tests only): fail on purpose in the
//! configured phase, to prove that failures are answered like Kong answers
//! a failed plugin. Two plugins because Kong refuses one that implements
//! `response` together with `header_filter` or `body_filter`.

use kong_rs::{Flow, Pdk, Phase, Plugin, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Which phase fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    /// `rewrite`
    Rewrite,
    /// `access`
    Access,
    /// `header_filter`
    HeaderFilter,
    /// `body_filter`
    BodyFilter,
    /// `response`
    Response,
    /// `log`
    Log,
}

/// How it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Return `Err`.
    Err,
    /// `panic!`.
    Panic,
    /// Make a PDK call Kong rejects, and return the `Err` it reports.
    PdkError,
}

/// Configuration of `rs-fault` and `rs-fault-response`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FaultConfig {
    /// The phase that fails.
    pub phase: FaultPhase,
    /// How it fails.
    pub mode: FaultMode,
}

/// The test-only failing plugin.
#[derive(Debug)]
pub struct Fault {
    phase: Phase,
    mode: FaultMode,
}

impl Fault {
    /// The instance for `config`, when `phases` (the plugin's) has its phase.
    fn build(config: FaultConfig, phases: &[Phase], name: &str) -> Result<Self> {
        let phase = match config.phase {
            FaultPhase::Rewrite => Phase::Rewrite,
            FaultPhase::Access => Phase::Access,
            FaultPhase::HeaderFilter => Phase::HeaderFilter,
            FaultPhase::BodyFilter => Phase::BodyFilter,
            FaultPhase::Response => Phase::Response,
            FaultPhase::Log => Phase::Log,
        };
        if !phases.contains(&phase) {
            return Err(format!("{name} has no {phase} phase").into());
        }
        Ok(Fault {
            phase,
            mode: config.mode,
        })
    }

    fn maybe_fail(&self, kong: &mut dyn Pdk, phase: Phase) -> Result<()> {
        if phase != self.phase {
            return Ok(());
        }
        match self.mode {
            FaultMode::Err => Err(format!("rs-fault: deliberate error in {phase}").into()),
            FaultMode::Panic => panic!("rs-fault: deliberate panic in {phase}"),
            // Status 0 is out of range: kong.response.set_status raises, and the
            // next PDK call (which applies pending writes) reports it to Rust.
            FaultMode::PdkError => {
                kong.response().set_status(0)?;
                kong.response().get_status().map(|_| ())
            }
        }
    }
}

#[kong_rs::plugin]
impl Plugin for Fault {
    type Config = FaultConfig;
    type State = ();
    const NAME: &'static str = "rs-fault";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 5;

    fn new(config: FaultConfig) -> Result<Self> {
        Fault::build(config, Self::PHASES, Self::NAME)
    }

    fn rewrite(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        self.maybe_fail(kong, Phase::Rewrite)
            .map(|()| Flow::Continue)
    }

    fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        self.maybe_fail(kong, Phase::Access)
            .map(|()| Flow::Continue)
    }

    fn header_filter(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        self.maybe_fail(kong, Phase::HeaderFilter)
    }

    fn body_filter(
        &self,
        kong: &mut dyn Pdk,
        _state: &mut (),
        _chunk: &[u8],
        _eof: bool,
    ) -> Result<Option<Vec<u8>>> {
        self.maybe_fail(kong, Phase::BodyFilter).map(|()| None)
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        self.maybe_fail(kong, Phase::Log)
    }
}

/// `rs-fault-response`: the `response` phase of [`Fault`], in a plugin of
/// its own (buffered proxying).
#[derive(Debug)]
pub struct FaultResponse(Fault);

#[kong_rs::plugin]
impl Plugin for FaultResponse {
    type Config = FaultConfig;
    type State = ();
    const NAME: &'static str = "rs-fault-response";
    const VERSION: &'static str = "0.1.0";
    const PRIORITY: i32 = 5;

    fn new(config: FaultConfig) -> Result<Self> {
        Fault::build(config, Self::PHASES, Self::NAME).map(FaultResponse)
    }

    fn response(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
        self.0
            .maybe_fail(kong, Phase::Response)
            .map(|()| Flow::Continue)
    }
}
