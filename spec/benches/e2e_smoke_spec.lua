-- The end-to-end benchmark (benches/e2e/run) in its smoke mode: one round of
-- 1 s per configuration (about 15 s in all), so the benchmark, its checks
-- (every configuration answers correctly once) and its report cannot rot.
-- The native module is taken as built (scripts/test builds it first); the
-- plugin-server model is built if needed (seconds).
local h = require "spec.support.helpers"

if h.skip_on_kong("benches/e2e/run --smoke", "gateway only: the benchmark starts its own kong-rs-gateway " ..
                  "(real Kong is measured by hand, see benches/README.md)") then
  return
end

if h.is_kong then
  return
end

local CONFIGS = {
  "none", "lua-empty", "rs-empty", "ps-empty",
  "lua-headers", "rs-headers", "ps-headers",
  "none-json", "lua-json", "rs-json", "ps-json",
}

local smoke = require "spec.support.bench_smoke"
local TOOLS = { "wrk" }

describe("benches/e2e/run --smoke", function()
  local output, status, results

  lazy_setup(function()
    if smoke.missing_tool(TOOLS) then
      return
    end
    output, status, results = smoke.run("benches/e2e/run --smoke --no-build-native")
  end)

  lazy_teardown(function()
    smoke.remove(results)
  end)

  it("exits 0 and reports every configuration with a positive req/s", function()
    if smoke.missing_tool(TOOLS) then
      pending("wrk is not installed (apt-get install wrk)")
      return
    end
    assert.equals(0, status, output)
    smoke.assert_reported(output, CONFIGS)
    assert.matches("Targets (issue 5)", output, 1, true)
    smoke.assert_results_kept(results)
  end)

  it("leaves nothing running", function()
    if smoke.missing_tool(TOOLS) then
      pending("wrk is not installed")
      return
    end
    -- the gateway (nginx -p PREFIX) and the plugin server (--socket
    -- PREFIX/...) of this run are gone, and so is its temporary prefix
    smoke.assert_nothing_left(output, "/tmp/kong%-rs%-e2e%.[%w]+")
  end)
end)
