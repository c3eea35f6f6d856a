//! The test and benchmark plugins of kong-rs, in a crate of their own so
//! that the shipped native module (`kong_rs_plugins.so`) holds the shipped
//! plugins and nothing else. Built as `kong_rs_test_plugins.so` for the
//! specs (`spec/`) and the benchmarks (`benches/`); written, like any plugin
//! crate, against kong-rs's public API only.
//!
//! - `rs-fault`, `rs-fault-response`: fail on purpose in a chosen phase.
//! - `rs-header-ops`: a configured list of header writes (write parity).
//! - `rs-pdk-probe`: every PDK read, reported (read parity with its Lua twin).
//! - `rs-version`: its `VERSION` chosen at build time (binary upgrades).
//! - `rs-stream-gate`: a stream (preread) plugin, for real Kong.
//! - `rs-bench-empty`, `rs-bench-headers`, `rs-bench-json`, `rs-inworker`:
//!   the benchmark workloads, each with a Lua twin in `benches/plugins/`.

pub mod bench;
mod bench_json;
mod fault;
mod header_ops;
mod pdk_probe;
mod stream_gate;
mod version;

pub use fault::{Fault, FaultConfig, FaultResponse};

/// Lua module entry point: `require("kong_rs_test_plugins")`. Written out
/// rather than with `kong_rs::export_plugins!` to add the test controls
/// (`direct_calls`) the shipped module does not have.
///
/// # Safety
/// Called by Lua's `require` with a valid `lua_State`.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn luaopen_kong_rs_test_plugins(
    state: *mut kong_rs::mlua::lua_State,
) -> std::os::raw::c_int {
    // SAFETY: Lua calls the entry point with its own state.
    unsafe {
        kong_rs::__private::entrypoint(state, |lua| {
            let mut module = kong_rs::ModuleBuilder::new(lua)?;
            module
                .add::<Fault>()?
                .add::<FaultResponse>()?
                .add::<header_ops::HeaderOps>()?
                .add::<version::Version>()?
                .add::<pdk_probe::PdkProbe>()?
                .add::<stream_gate::StreamGate>()?
                .add::<bench::BenchEmpty>()?
                .add::<bench::BenchHeaders>()?
                .add::<bench::BenchJson>()?
                .add::<bench::InWorker>()?;
            let table = module.finish()?;
            kong_rs::__private::add_test_controls(lua, &table)?;
            Ok(table)
        })
    }
}
