//! Get-or-load caching for async phases, through Kong's node cache.
//!
//! [`get_or_load`] asks `kong.cache` for `key`; on a miss it runs your
//! loader (an async function, free to use [`crate::http`] and friends) and
//! caches its answer for `ttl`, a `None` (not found) for `neg_ttl`. On Kong
//! this is `kong.cache:get` (mlcache: per-worker L1 + shared-dict L2, one
//! load per key across the workers, invalidation events); on kong-rs's
//! gateway, a shared dict with one load per key per worker at a time.
//! Values are bytes.
//!
//! ```no_run
//! # async fn example() -> kong_rs::Result<()> {
//! use kong_rs::cache::{get_or_load, CacheOptions};
//! let user = get_or_load("users:42", CacheOptions::default(), || async {
//!     let response = kong_rs::http::Request::get("http://127.0.0.1:9000/users/42")?
//!         .send()
//!         .await?;
//!     Ok((response.status == 200).then_some(response.body))
//! })
//! .await?;
//! # let _ = user;
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, Result};
use crate::io::driver::{self, LuaOutput};
use crate::io::task::{Arg, Op, OpKind, Reply, Request, Task, current};
use mlua::Value as LuaValue;
use std::future::Future;
use std::time::Duration;

/// How long answers are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// A value found (Kong's default: 3600 s).
    pub ttl: Duration,
    /// A miss, the loader's `None` (Kong's default: 300 s).
    pub neg_ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Duration::from_secs(3600),
            neg_ttl: Duration::from_secs(300),
        }
    }
}

/// The cached bytes of `key`, or what `loader` answers (then cached);
/// `None` when the key has no value (cached for `neg_ttl`).
///
/// Outside nginx ([`crate::io::block_on`]) there is no cache: the loader
/// runs every time.
///
/// # Errors
/// Outside an async phase; the loader's error (not cached); the cache's
/// own failure (e.g. no `kong.cache`): the message names the key.
pub async fn get_or_load<F, Fut>(
    key: &str,
    options: CacheOptions,
    loader: F,
) -> Result<Option<Vec<u8>>>
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = Result<Option<Vec<u8>>>> + 'static,
{
    let io = current()?;
    let Some(lua) = io.lua() else {
        return loader().await;
    };
    // The loader runs as a job of its own, inside kong.cache's callback.
    let task = Task::new(async move {
        let loaded = loader().await;
        LuaOutput::Make(Box::new(move |lua| {
            let mut values = mlua::Variadic::new();
            match loaded {
                Ok(Some(bytes)) => values.push(LuaValue::String(lua.create_string(bytes)?)),
                Ok(None) => values.push(LuaValue::Nil),
                Err(e) => {
                    values.push(LuaValue::Nil);
                    values.push(LuaValue::String(lua.create_string(e.to_string())?));
                }
            }
            Ok(values)
        }))
    });
    let job = driver::job(&lua, task, io.raw_entry()).map_err(Error::lua)?;
    let request = Request {
        kind: OpKind::CacheGet,
        socket: 0,
        args: [
            Arg::Bytes(key.as_bytes().to_vec()),
            Arg::Num(options.ttl.as_secs_f64()),
            Arg::Num(options.neg_ttl.as_secs_f64()),
            Arg::Lua(job),
        ],
    };
    match Op::new(io, request).await {
        Ok(Reply::Bytes(bytes)) => Ok(Some(bytes)),
        Ok(_) => Ok(None),
        Err(message) => Err(Error::msg(format!("cache key {key}: {message}"))),
    }
}
