-- Short versions of the load checks (issue 4) for CI: reliability/load soak
-- with 100,000 requests and reliability/load churn with 100 PATCHes under
-- wrk. Both check: no failed request, no wrong behaviour (every response
-- has rs-hello's header from the old or the new config), worker RSS growth
-- <= 2 MB after warm-up, old plugin instances freed (drop counter), no
-- worker death. The full runs (1,000,000 requests, 1,000 PATCHes) are the
-- documented commands, see docs/reliability.md.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"

if h.skip_on_kong("reliability: load (quick)", "gateway only: reliability/load starts its own gateway") then
  return
end

local function run(args)
  local p = io.popen("cd '" .. S.ROOT .. "' && WARMUP_SECONDS=2 CHUNK_SECONDS=5 reliability/load " .. args .. " 2>&1; echo __rc=$?")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("__rc=(%d+)%s*$")), out
end

describe("reliability: load (quick)", function()
  it("soak: 100,000 requests with rs-hello + rs-file-log, RSS flat, nothing failed", function()
    local rc, out = run("soak 100000")
    io.stdout:write("\n", (out:gsub("__rc=%d+%s*$", "")))
    assert.equal(0, rc, out)
    assert.matches("OK: soak passed", out)
  end)

  it("churn: 100 PATCHes under wrk, old or new behaviour only, old instances freed", function()
    local rc, out = run("churn 100")
    io.stdout:write("\n", (out:gsub("__rc=%d+%s*$", "")))
    assert.equal(0, rc, out)
    assert.matches("after churn the proxy answers: churn%-100", out)
    assert.matches("OK: churn passed", out)
  end)
end)
