-- The async I/O benchmark (benches/io/run) in its smoke mode: one round of
-- 1 s per configuration (about 10 s in all), so the benchmark, its checks
-- (every configuration answers the right value once: Lua, Rust and the
-- plugin-server model) and its report cannot rot. The native module is taken
-- as built (scripts/test builds it first); the plugin-server model is built
-- if missing or stale (seconds).
local h = require "spec.support.helpers"

if h.skip_on_kong("benches/io/run --smoke", "gateway only: the benchmark starts its own kong-rs-gateway, " ..
                  "redis-server and plugin-server model (see benches/README.md)") then
  return
end

if h.is_kong then
  return
end

local CONFIGS = { "base", "rs-exit", "lua-get", "rs-get", "ps-get", "lua-incr", "rs-incr", "ps-incr" }

local smoke = require "spec.support.bench_smoke"
local TOOLS = { "wrk", "redis-server", "redis-cli" }

describe("benches/io/run --smoke", function()
  local output, status, results

  lazy_setup(function()
    if smoke.missing_tool(TOOLS) then
      return
    end
    output, status, results = smoke.run("benches/io/run --smoke")
  end)

  lazy_teardown(function()
    smoke.remove(results)
  end)

  it("exits 0 and reports every configuration, with both ratios", function()
    local tool = smoke.missing_tool(TOOLS)
    if tool then
      pending(tool .. " is not installed (scripts/setup installs it)")
      return
    end
    assert.equals(0, status, output)
    smoke.assert_reported(output, CONFIGS)
    -- the plugin server's CPU is counted for the model's rows
    local server = output:match("\n| ps%-get | [%d.]+ | [%d.]+ | (%d+) |")
    assert.is_truthy(server, output)
    assert.is_true(tonumber(server) > 0, output)
    assert.matches("Rust / Lua added cost: GET", output, 1, true)
    assert.matches("Rust vs plugin-server model: added cost ratio (ps / rs): GET", output, 1, true)
    smoke.assert_results_kept(results)
  end)

  it("leaves nothing running", function()
    local tool = smoke.missing_tool(TOOLS)
    if tool then
      pending(tool .. " is not installed")
      return
    end
    -- the gateway (nginx -p PREFIX), the plugin server (--socket PREFIX/...)
    -- and redis-server (--dir PREFIX) of this run are gone, and so is its
    -- temporary prefix
    smoke.assert_nothing_left(output, "/tmp/kong%-rs%-io%-bench%.[%w]+")
  end)
end)
