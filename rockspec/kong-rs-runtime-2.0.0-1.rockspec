-- kong-rs-runtime: the Lua glue every kong-rs plugin rock runs on
-- (kong_rs.handler, .schema, .actions, .loader, .io). Pure Lua, one copy per
-- Kong tree, shared by every plugin rock built on kong-rs, so two such rocks
-- install side by side without owning the same files.
--
--   luarocks --lua-version=5.1 make rockspec/kong-rs-runtime-2.0.0-1.rockspec
--
-- Versioning: MAJOR is the glue/native-module interface version (`ABI` in
-- kong_rs/loader.lua and src/bridge.rs); MINOR.PATCH count glue releases
-- that speak that same interface. A plugin rock depends on
-- "kong-rs-runtime ~> <ABI>" (any 2.x.y for ABI 2), so luarocks itself
-- refuses a runtime its native module cannot talk to, and a newer 2.x glue
-- (fixes) serves every plugin built against ABI 2. Should a mismatch get
-- past luarocks anyway (files copied by hand), kong_rs.loader refuses the
-- module at load with a message naming both versions.
package = "kong-rs-runtime"
version = "2.0.0-1"

source = {
  url = "git+https://example.invalid/kong-rs.git",
  tag = "runtime-v2.0.0",
}

description = {
  summary = "Lua runtime (glue) of kong-rs: Kong plugins written in Rust",
  detailed = [[
    The Lua side shared by every Kong plugin built with kong-rs: it loads the
    plugin's native module (checking its interface version), builds one Rust
    instance per configuration, registers the implemented phases, performs
    the effects Rust returns (exits, batched writes, cosocket I/O of async
    phases) and answers a failed plugin like Kong does. Interface (ABI) 2.
  ]],
  license = "Apache-2.0",
}

dependencies = {
  "lua ~> 5.1",
}

build = {
  type = "builtin",
  modules = {
    ["kong_rs.handler"] = "kong-plugin/kong_rs/handler.lua",
    ["kong_rs.schema"] = "kong-plugin/kong_rs/schema.lua",
    ["kong_rs.actions"] = "kong-plugin/kong_rs/actions.lua",
    ["kong_rs.loader"] = "kong-plugin/kong_rs/loader.lua",
    ["kong_rs.io"] = "kong-plugin/kong_rs/io.lua",
  },
}
