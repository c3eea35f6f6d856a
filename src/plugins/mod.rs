//! The plugins this rock ships, written only against the public API.

mod file_log;
mod hello;

#[cfg(feature = "test-plugins")]
pub mod bench;
#[cfg(feature = "test-plugins")]
mod bench_json;
#[cfg(feature = "test-plugins")]
mod fault;
#[cfg(feature = "test-plugins")]
mod header_ops;
#[cfg(feature = "test-plugins")]
mod pdk_probe;
#[cfg(feature = "test-plugins")]
mod stream_gate;
#[cfg(feature = "test-plugins")]
mod version;

pub use file_log::{FileLog, FileLogConfig};
pub use hello::{Hello, HelloConfig};

#[cfg(feature = "test-plugins")]
pub use fault::{Fault, FaultConfig, FaultResponse};

#[cfg(all(feature = "bundled", not(feature = "test-plugins")))]
crate::export_plugins!(luaopen_kong_rs_plugins: Hello, FileLog);

#[cfg(feature = "test-plugins")]
crate::export_plugins!(
    luaopen_kong_rs_plugins: Hello,
    FileLog,
    Fault,
    FaultResponse,
    header_ops::HeaderOps,
    version::Version,
    pdk_probe::PdkProbe,
    stream_gate::StreamGate,
    bench::BenchEmpty,
    bench::BenchHeaders,
    bench::BenchJson,
    bench::InWorker,
);
