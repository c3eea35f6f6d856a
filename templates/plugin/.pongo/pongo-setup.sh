# Sourced by Pongo inside the Kong test container, in /kong-plugin, before
# `pongo run` (Kong/kong-pongo README, "Test initialization"). Builds the
# native module and puts it where Kong looks for it; installs the kong-rs
# glue (kong-rs-runtime) from a kong-rs checkout, which the specs also need
# for their adapter (spec/support/helpers.lua).
#
# KONG_RS_HOME must name a kong-rs checkout inside the container: put it
# under this directory (Pongo mounts only /kong-plugin), e.g.
#   git clone <kong-rs repository> kong-rs && export KONG_RS_HOME=/kong-plugin/kong-rs
# and switch Cargo.toml's kong-rs dependency to it (or to git/crates.io).
set -e
cd /kong-plugin
export KONG_RS_HOME="${KONG_RS_HOME:-/kong-plugin/kong-rs}"

if ! command -v cargo >/dev/null 2>&1; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
./scripts/build
(cd "$KONG_RS_HOME" && luarocks make rockspec/kong-rs-runtime-2.0.0-1.rockspec)
install -D -m 0755 build/__MODULE__.so /usr/local/lib/lua/5.1/__MODULE__.so

export KONG_LUA_PACKAGE_PATH="/kong-plugin/?.lua;${KONG_LUA_PACKAGE_PATH:-;}"
export KONG_PLUGINS="bundled,__NAME__"
set +e
