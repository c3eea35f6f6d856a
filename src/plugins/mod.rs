//! The plugins this rock ships, written only against the public API (the
//! test and benchmark plugins live in their own crate, `tests/plugins/`).

mod file_log;
mod hello;
mod jwt;
pub mod jwt_keys;
pub mod jwt_token;
mod rate_limiting;

pub use file_log::{FileLog, FileLogConfig};
pub use hello::{Hello, HelloConfig};
pub use jwt::{Jwt, JwtConfig, KeyConfig, Refusal, RegisteredClaim, bearer};
pub use rate_limiting::{
    COUNTERS_DICT, LimitBy, Period, Policy, REFUSED_CTX_KEY, RateLimiting, RateLimitingConfig,
    RedisConfig,
};

#[cfg(feature = "bundled")]
crate::export_plugins!(luaopen_kong_rs_plugins: Hello, FileLog, RateLimiting, Jwt);
