-- A second plugin rock built on kong-rs, never published: the test plugins
-- crate (tests/plugins, module kong_rs_test_plugins) with two of its plugins,
-- rs-version and rs-header-ops. spec/rock installs it next to
-- kong-plugin-rs in one tree to prove that plugin rocks share the runtime
-- rock (kong-rs-runtime) instead of each shipping the glue.
--
--   luarocks --lua-version=5.1 make rockspec/kong-plugin-rs-test-plugins-0.0.0-1.rockspec
package = "kong-plugin-rs-test-plugins"
version = "0.0.0-1"

source = {
  url = "git+https://example.invalid/kong-rs.git",
}

description = {
  summary = "kong-rs test plugins (rs-version, rs-header-ops): a second rock on kong-rs-runtime",
  license = "Apache-2.0",
}

dependencies = {
  "lua ~> 5.1",
  "kong-rs-runtime ~> 2",
}

build = {
  type = "command",
  build_command = [[
    cargo build --release -p kong-rs-test-plugins --lib --features module &&
    mkdir -p build/rock &&
    cp target/release/libkong_rs_test_plugins.so build/rock/kong_rs_test_plugins.so
  ]],
  install = {
    lib = {
      kong_rs_test_plugins = "build/rock/kong_rs_test_plugins.so",
    },
    lua = {
      ["kong.plugins.rs-version.handler"] = "spec/fixtures/custom_plugins/kong/plugins/rs-version/handler.lua",
      ["kong.plugins.rs-version.schema"] = "spec/fixtures/custom_plugins/kong/plugins/rs-version/schema.lua",
      ["kong.plugins.rs-header-ops.handler"] = "spec/fixtures/custom_plugins/kong/plugins/rs-header-ops/handler.lua",
      ["kong.plugins.rs-header-ops.schema"] = "spec/fixtures/custom_plugins/kong/plugins/rs-header-ops/schema.lua",
    },
  },
}
