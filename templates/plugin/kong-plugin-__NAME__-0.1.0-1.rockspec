-- The __NAME__ rock. The Lua glue (kong_rs.*) is the kong-rs-runtime rock.
--
-- Source rock, on a host with cargo (in this directory):
--   luarocks make kong-plugin-__NAME__-0.1.0-1.rockspec
-- Binary rock (no compiler on the Kong host): scripts/package writes
--   build/dist/kong-plugin-__NAME__-0.1.0-1.linux-x86_64.rock
-- (the library built for glibc 2.28, handed in through KONG_RS_SO).
package = "kong-plugin-__NAME__"
version = "0.1.0-1"

source = {
  url = "git+https://example.invalid/kong-plugin-__NAME__.git",
  tag = "v0.1.0",
}

description = {
  summary = "__NAME__: a Kong plugin written in Rust (kong-rs)",
  license = "Apache-2.0",
}

dependencies = {
  "lua ~> 5.1",
  -- the glue speaking the interface (ABI) of the kong-rs this crate builds with
  "kong-rs-runtime ~> 2",
}

build = {
  type = "command",
  build_command = [[
    mkdir -p build/rock &&
    if [ -n "${KONG_RS_SO:-}" ]; then
      cp "$KONG_RS_SO" build/rock/__MODULE__.so
    else
      cargo build --release --lib --features module &&
      cp "${CARGO_TARGET_DIR:-target}/release/lib__MODULE__.so" build/rock/__MODULE__.so
    fi
  ]],
  install = {
    lib = {
      __MODULE__ = "build/rock/__MODULE__.so",
    },
    lua = {
      ["kong.plugins.__NAME__.handler"] = "kong/plugins/__NAME__/handler.lua",
      ["kong.plugins.__NAME__.schema"] = "kong/plugins/__NAME__/schema.lua",
    },
  },
}
