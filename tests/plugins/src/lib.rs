//! The test and benchmark plugins of kong-rs, in a crate of their own so
//! that the shipped native module (`kong_rs_plugins.so`) holds the shipped
//! plugins and nothing else. Built as `kong_rs_test_plugins.so` for the
//! specs (`spec/`) and the benchmarks (`benches/`); written, like any plugin
//! crate, against kong-rs's public API only.
//!
//! - `rs-fault`, `rs-fault-response`: fail on purpose in a chosen phase.
//! - `rs-header-ops`: a configured list of header writes (write parity).
//! - `rs-pdk-probe`: every PDK read, reported (read parity with its Lua twin).
//! - `rs-pdk-extras`: authenticate, whole entities, serialize, shared dicts.
//! - `rs-io-probe`: an async access phase doing HTTP, Redis, TCP or a sleep.
//! - `rs-log-shipper`: log entries shipped in batches through a `kong_rs::queue`.
//! - `rs-version`: its `VERSION` chosen at build time (binary upgrades).
//! - `rs-stream-gate`: a stream (preread) plugin, for real Kong.
//! - `rs-bench-empty`, `rs-bench-headers`, `rs-bench-json`, `rs-inworker`:
//!   the benchmark workloads, each with a Lua twin in `benches/plugins/`.

pub mod bench;
mod bench_json;
mod fault;
mod header_ops;
mod io_probe;
mod log_shipper;
mod pdk_extras;
mod pdk_probe;
mod stream_gate;
mod version;

pub use fault::{Fault, FaultConfig, FaultResponse};
pub use io_probe::IoProbe;

// `require("kong_rs_test_plugins")`; with the test controls (`direct_calls`)
// the shipped module does not have.
kong_rs::export_plugins!(
    luaopen_kong_rs_test_plugins: Fault,
    FaultResponse,
    header_ops::HeaderOps,
    io_probe::IoProbe,
    log_shipper::LogShipper,
    version::Version,
    pdk_probe::PdkProbe,
    pdk_extras::PdkExtras,
    stream_gate::StreamGate,
    bench::BenchEmpty,
    bench::BenchHeaders,
    bench::BenchJson,
    bench::InWorker;
    kong_rs::__private::add_test_controls
);
