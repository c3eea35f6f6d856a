-- The kong-rs rock: the bundled Rust plugins (rs-hello, rs-file-log) as one
-- native module plus their thin Lua handlers and the shared glue.
--
--   luarocks --lua-version=5.1 make rockspec/kong-plugin-rs-0.1.0-1.rockspec
--
-- Building needs cargo (the crate's dependencies come from crates.io or the
-- local cargo cache); nothing is fetched from luarocks.org.
package = "kong-plugin-rs"
version = "0.1.0-1"

source = {
  url = "git+https://example.invalid/kong-rs.git",
  tag = "v0.1.0",
}

description = {
  summary = "Kong plugins written in Rust, running inside the nginx worker",
  detailed = [[
    rs-hello and rs-file-log, compiled from Rust with mlua into the native
    Lua module kong_rs_plugins, loaded by thin Kong handlers in the same
    nginx worker: no plugin server, no IPC.
  ]],
  license = "Apache-2.0",
}

dependencies = {
  "lua ~> 5.1",
}

build = {
  type = "command",
  -- Release build without the test-only plugins; the .so is renamed to the
  -- module name `require` looks for.
  build_command = [[
    cargo build --release --lib --features module,bundled &&
    mkdir -p build/rock &&
    cp target/release/libkong_rs.so build/rock/kong_rs_plugins.so
  ]],
  install = {
    lib = {
      kong_rs_plugins = "build/rock/kong_rs_plugins.so",
    },
    lua = {
      ["kong_rs.handler"] = "kong-plugin/kong_rs/handler.lua",
      ["kong_rs.schema"] = "kong-plugin/kong_rs/schema.lua",
      ["kong_rs.actions"] = "kong-plugin/kong_rs/actions.lua",
      ["kong_rs.loader"] = "kong-plugin/kong_rs/loader.lua",
      ["kong_rs.io"] = "kong-plugin/kong_rs/io.lua",
      ["kong.plugins.rs-hello.handler"] = "kong-plugin/kong/plugins/rs-hello/handler.lua",
      ["kong.plugins.rs-hello.schema"] = "kong-plugin/kong/plugins/rs-hello/schema.lua",
      ["kong.plugins.rs-file-log.handler"] = "kong-plugin/kong/plugins/rs-file-log/handler.lua",
      ["kong.plugins.rs-file-log.schema"] = "kong-plugin/kong/plugins/rs-file-log/schema.lua",
    },
  },
}
