//! # kong-rs: Kong Gateway plugins in Rust, inside the nginx worker
//!
//! Write a Kong plugin as a Rust type, compile it into a native Lua module
//! (LuaJIT, through [`mlua`]), and let a three-line `handler.lua` run it in the
//! same nginx worker as Kong: no plugin server, no socket, no RPC.
//!
//! ```
//! use kong_rs::{Flow, Pdk, Plugin, Result};
//! use serde::Deserialize;
//!
//! /// Config: one field, required.
//! #[derive(Deserialize, schemars::JsonSchema)]
//! pub struct Config {
//!     /// Header value to add to every response.
//!     pub greeting: String,
//! }
//!
//! pub struct Greeter {
//!     greeting: Vec<u8>,
//! }
//!
//! #[kong_rs::plugin]
//! impl Plugin for Greeter {
//!     type Config = Config;
//!     type State = ();
//!     const NAME: &'static str = "greeter";
//!     const VERSION: &'static str = "0.1.0";
//!     const PRIORITY: i32 = 1000;
//!
//!     fn new(config: Config) -> Result<Self> {
//!         if config.greeting.contains(['\r', '\n']) {
//!             return Err("greeting must not contain line breaks".into());
//!         }
//!         Ok(Greeter { greeting: config.greeting.into_bytes() })
//!     }
//!
//!     fn access(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<Flow> {
//!         kong.response().set_header("x-greeting", &self.greeting)?;
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! // Exports `luaopen_greeter_native` so `require("greeter_native")` loads it.
//! kong_rs::export_plugins!(luaopen_greeter_native: Greeter);
//!
//! // Unit test without Lua or nginx:
//! let mut kong = kong_rs::MockPdk::get("/");
//! let flow = kong_rs::run_request::<Greeter>(Config { greeting: "hi".into() }, &mut kong)?;
//! assert_eq!(flow, Flow::Continue);
//! assert_eq!(kong.response_header("x-greeting"), Some(&b"hi"[..]));
//! # Ok::<(), kong_rs::Error>(())
//! ```
//!
//! The pieces:
//! - [`Plugin`]: config type, constructor, one method per phase, `NAME`,
//!   `VERSION`, `PRIORITY`, per-request `State`.
//! - [`Pdk`]: Kong's `kong.*` API, typed and byte-safe; [`MockPdk`] for tests.
//! - [`schema`]: the Kong schema generated from the config type.
//! - [`export_plugins!`]: the `luaopen_*` entry point of your native module.
//! - The Lua side (`kong-plugin/kong_rs/*.lua`): caches one instance per
//!   `conf` table, registers only the implemented phases, performs deferred
//!   exits, and answers a failed plugin with 500.

#![warn(missing_docs)]

extern crate self as kong_rs;

mod bridge;
pub mod cache;
mod error;
pub mod http;
pub mod io;
mod library;
mod metaschema;
pub mod pdk;
mod plugin;
pub mod plugins;
pub mod postgres;
pub mod queue;
pub mod redis;
mod running;
pub mod schema;
#[cfg(test)]
mod test_support;

pub use bridge::{ModuleBuilder, describe};
pub use error::{Context, Error, ErrorKind, Result};
/// Adds `const PHASES` to an `impl Plugin for T` block, listing the phase
/// methods it defines, and a `cargo test` test checking Kong's load-time
/// rules (see [`describe`]). See [`Plugin`].
///
/// Kong refuses a plugin with `response` and `header_filter` or
/// `body_filter`; so does the compiler:
///
/// ```compile_fail
/// # use kong_rs::{Flow, Pdk, Plugin, Result};
/// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Config {}
/// struct Both;
/// #[kong_rs::plugin]
/// impl Plugin for Both {
///     type Config = Config;
///     type State = ();
///     const NAME: &'static str = "both";
///     const VERSION: &'static str = "0.1.0";
///     const PRIORITY: i32 = 1;
///     fn new(_: Config) -> Result<Self> { Ok(Both) }
///     fn response(&self, _: &mut dyn Pdk, _: &mut ()) -> Result<Flow> { Ok(Flow::Continue) }
///     fn header_filter(&self, _: &mut dyn Pdk, _: &mut ()) -> Result<()> { Ok(()) }
/// }
/// ```
///
/// A phase method written by another macro would not be seen, so a macro
/// in the block does not compile:
///
/// ```compile_fail
/// # use kong_rs::{Flow, Pdk, Plugin, Result};
/// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Config {}
/// macro_rules! access { () => {
///     fn access(&self, _: &mut dyn Pdk, _: &mut ()) -> Result<Flow> { Ok(Flow::Continue) }
/// } }
/// struct Hidden;
/// #[kong_rs::plugin]
/// impl Plugin for Hidden {
///     type Config = Config;
///     type State = ();
///     const NAME: &'static str = "hidden";
///     const VERSION: &'static str = "0.1.0";
///     const PRIORITY: i32 = 1;
///     fn new(_: Config) -> Result<Self> { Ok(Hidden) }
///     access!();
/// }
/// ```
///
/// With the crate renamed or re-exported, name it:
///
/// ```
/// # extern crate kong_rs as gateway_sdk;
/// # use gateway_sdk::{Flow, Pdk, Plugin, Result};
/// # #[derive(serde::Deserialize, schemars::JsonSchema)] struct Config {}
/// struct Renamed;
/// #[gateway_sdk::plugin(crate = gateway_sdk)]
/// impl Plugin for Renamed {
///     type Config = Config;
///     type State = ();
///     const NAME: &'static str = "renamed";
///     const VERSION: &'static str = "0.1.0";
///     const PRIORITY: i32 = 1;
///     fn new(_: Config) -> Result<Self> { Ok(Renamed) }
///     fn access(&self, _: &mut dyn Pdk, _: &mut ()) -> Result<Flow> { Ok(Flow::Continue) }
/// }
/// assert_eq!(Renamed::PHASES, &[gateway_sdk::Phase::Access]);
/// ```
pub use kong_rs_macros::plugin;
pub use pdk::mock::{MockPdk, MockSharedDicts, run_request};
pub use pdk::{Entity, Headers, LogLevel, Pdk, PluginInfo, QueryValue, SharedDict, Value};
pub use plugin::{Exit, Flow, Phase, Plugin};

/// Re-exported so that [`export_plugins!`] works without a direct dependency.
#[doc(hidden)]
pub use mlua;

/// Support for [`export_plugins!`] and for kong-rs's own test plugins; not
/// a public API.
#[doc(hidden)]
pub mod __private {
    /// Adds `direct_calls(on)` to a module table: switches the direct
    /// nginx calls of this copy of the library on or off for the process
    /// (the in-worker benchmark measures both paths side by side) and
    /// returns whether they exist here. Only kong-rs's test plugins module
    /// has it; the shipped one does not.
    ///
    /// # Errors
    /// When Lua cannot allocate.
    pub fn add_test_controls(lua: &mlua::Lua, module: &mlua::Table) -> mlua::Result<()> {
        module.set(
            "direct_calls",
            lua.create_function(|_, enabled: bool| Ok(crate::pdk::lua::set_direct_calls(enabled)))?,
        )
    }

    /// Runs a module entry point: mlua's module bootstrap, with its per-call
    /// memory checks off (they cost ~10x on every call into Rust).
    ///
    /// These are the two calls mlua's supported attribute
    /// `#[mlua::lua_module(skip_memory_check)]` expands to
    /// (`Lua::entrypoint1` and `Lua::skip_memory_check(true)`, see
    /// mlua_derive 0.12's `module.rs`). The attribute itself is not used
    /// because its expansion names `mlua::` unqualified, which would make
    /// every plugin crate depend on mlua directly.
    ///
    /// # Safety
    /// `state` must be the `lua_State` that called `luaopen_*`.
    pub unsafe fn entrypoint(
        state: *mut mlua::lua_State,
        build: impl FnOnce(&mlua::Lua) -> mlua::Result<mlua::Table>,
    ) -> std::os::raw::c_int {
        // SAFETY: forwarded from the caller's contract.
        unsafe {
            mlua::Lua::entrypoint1(state, move |lua| {
                #[cfg(feature = "module")]
                lua.skip_memory_check(true);
                build(lua)
            })
        }
    }
}

/// Exports plugins as a native Lua module.
///
/// `export_plugins!(luaopen_NAME: PluginA, PluginB)` defines the C entry
/// point `luaopen_NAME`, so `require("NAME")` in LuaJIT returns the module
/// table whose `plugins[P::NAME]` the Lua glue (`kong_rs.handler`,
/// `kong_rs.schema`) uses. Build the crate as a `cdylib` with the
/// `kong-rs/module` feature and install the library as `NAME.so`.
/// `export_plugins!(luaopen_NAME: PluginA, PluginB; setup)` also runs
/// `setup(&lua, &module_table)` once the table is built, to add to it.
///
/// # Panics
/// Loading the module raises a Lua error (not a panic) when a config type has
/// no Kong schema equivalent or two plugins share a name.
#[macro_export]
macro_rules! export_plugins {
    ($entry:ident : $($plugin:ty),+ $(,)?) => {
        $crate::export_plugins!($entry : $($plugin),+ ; |_lua, _module| Ok(()));
    };
    ($entry:ident : $($plugin:ty),+ ; $setup:expr) => {
        /// Lua module entry point generated by `kong_rs::export_plugins!`.
        ///
        /// # Safety
        /// Called by Lua's `require` with a valid `lua_State`.
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $entry(
            state: *mut $crate::mlua::lua_State,
        ) -> ::std::os::raw::c_int {
            // SAFETY: Lua calls the entry point with its own state.
            unsafe {
                $crate::__private::entrypoint(state, |lua| {
                    let mut module = $crate::ModuleBuilder::new(lua)?;
                    $( module.add::<$plugin>()?; )+
                    let table = module.finish()?;
                    let setup: fn(&$crate::mlua::Lua, &$crate::mlua::Table) -> $crate::mlua::Result<()> =
                        $setup;
                    setup(lua, &table)?;
                    Ok(table)
                })
            }
        }
    };
}

/// The README's Rust example is compiled as a doc test, so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
