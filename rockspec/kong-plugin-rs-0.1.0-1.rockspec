-- The kong-rs plugin rock: the bundled Rust plugins (rs-hello, rs-file-log)
-- as one native module plus their thin Lua handlers. The shared Lua glue
-- (kong_rs.*) is the rock kong-rs-runtime, a dependency.
--
-- From a source checkout (needs cargo; nothing is fetched from luarocks.org
-- once the runtime rock is installed):
--   luarocks --lua-version=5.1 make rockspec/kong-rs-runtime-2.0.0-1.rockspec
--   luarocks --lua-version=5.1 make rockspec/kong-plugin-rs-0.1.0-1.rockspec
--
-- Without a compiler: scripts/package builds the binary rock
-- kong-plugin-rs-0.1.0-1.linux-x86_64.rock from this rockspec (the library
-- built for glibc 2.28 with cargo-zigbuild, handed in through KONG_RS_SO).
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
  -- The glue speaking interface (ABI) 2, which this module is built for.
  "kong-rs-runtime ~> 2",
}

build = {
  type = "command",
  -- Release build without the test-only plugins; the .so is renamed to the
  -- module name `require` looks for. KONG_RS_SO names an already built
  -- library to install instead (scripts/package: the glibc 2.28 build).
  build_command = [[
    mkdir -p build/rock &&
    if [ -n "${KONG_RS_SO:-}" ]; then
      cp "$KONG_RS_SO" build/rock/kong_rs_plugins.so
    else
      cargo build --release --lib --features module,bundled &&
      cp target/release/libkong_rs.so build/rock/kong_rs_plugins.so
    fi
  ]],
  install = {
    lib = {
      kong_rs_plugins = "build/rock/kong_rs_plugins.so",
    },
    lua = {
      ["kong.plugins.rs-hello.handler"] = "kong-plugin/kong/plugins/rs-hello/handler.lua",
      ["kong.plugins.rs-hello.schema"] = "kong-plugin/kong/plugins/rs-hello/schema.lua",
      ["kong.plugins.rs-file-log.handler"] = "kong-plugin/kong/plugins/rs-file-log/handler.lua",
      ["kong.plugins.rs-file-log.schema"] = "kong-plugin/kong/plugins/rs-file-log/schema.lua",
      ["kong.plugins.rs-rate-limiting.handler"] = "kong-plugin/kong/plugins/rs-rate-limiting/handler.lua",
      ["kong.plugins.rs-rate-limiting.schema"] = "kong-plugin/kong/plugins/rs-rate-limiting/schema.lua",
      ["kong.plugins.rs-jwt.handler"] = "kong-plugin/kong/plugins/rs-jwt/handler.lua",
      ["kong.plugins.rs-jwt.schema"] = "kong-plugin/kong/plugins/rs-jwt/schema.lua",
    },
  },
}
