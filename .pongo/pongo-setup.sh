# Sourced (bash) by Pongo inside the Kong test container, in /kong-plugin,
# before `pongo run` / `pongo shell` (see Kong/kong-pongo README, "Test
# initialization"). Builds the native module with cargo and puts it and our
# Lua files where Kong looks for them.
#
# NOT run in our CI: we have no Docker here. Our CI runs the same specs
# against kong-rs-gateway (spec/support/helpers.lua picks the backend).

set -e
cd /kong-plugin

if ! command -v cargo >/dev/null 2>&1; then
  # the Kong image has curl; rustup installs a user-local toolchain
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi

# the same build as outside Pongo: the shipped module and the test plugins' module
./scripts/build-native

# Kong's default lua_package_cpath includes /usr/local/lib/lua/5.1/?.so
install -D -m 0755 build/lib/kong_rs_plugins.so /usr/local/lib/lua/5.1/kong_rs_plugins.so
install -D -m 0755 build/lib/kong_rs_test_plugins.so /usr/local/lib/lua/5.1/kong_rs_test_plugins.so

# our handler/schema files live under kong-plugin/, the test-only plugin under
# spec/fixtures/custom_plugins/: add both to Kong's Lua path
export KONG_LUA_PACKAGE_PATH="/kong-plugin/kong-plugin/?.lua;/kong-plugin/kong-plugin/?/init.lua;/kong-plugin/spec/fixtures/custom_plugins/?.lua;${KONG_LUA_PACKAGE_PATH:-;}"
export KONG_PLUGINS="bundled,rs-hello,rs-file-log,rs-fault"
set +e
