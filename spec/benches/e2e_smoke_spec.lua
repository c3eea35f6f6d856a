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

local function has(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == 0 or r == true
end

describe("benches/e2e/run --smoke", function()
  local output, status, results

  lazy_setup(function()
    if not has("wrk") then
      return
    end
    results = os.tmpname()
    os.remove(results)
    local p = assert(io.popen("benches/e2e/run --smoke --no-build-native --results '" .. results
                              .. "' 2>&1; echo \"EXIT:$?\""))
    output = p:read("*a")
    p:close()
    status = tonumber(output:match("EXIT:(%d+)%s*$"))
  end)

  lazy_teardown(function()
    if results then
      os.execute("rm -rf '" .. results .. "'")
    end
  end)

  it("exits 0 and reports every configuration with a positive req/s", function()
    if not has("wrk") then
      pending("wrk is not installed (apt-get install wrk)")
      return
    end
    assert.equals(0, status, output)
    for _, name in ipairs(CONFIGS) do
      local rps = output:match("\n| " .. name:gsub("%-", "%%-") .. " | ([%d.]+) |")
      assert.is_truthy(rps, "no report line for " .. name .. "\n" .. output)
      assert.is_true(tonumber(rps) > 0, name .. ": " .. rps)
    end
    assert.matches("Targets (issue 5)", output, 1, true)
    -- the raw numbers are kept
    local p = io.popen("ls '" .. results .. "'")
    local files = p:read("*a")
    p:close()
    assert.matches("%.tsv", files)
    assert.matches("%.md", files)
  end)

  it("leaves nothing running", function()
    if not has("wrk") then
      pending("wrk is not installed")
      return
    end
    -- the gateway (nginx -p PREFIX) and the plugin server (--socket
    -- PREFIX/...) of this run are gone, and so is its temporary prefix
    local prefix = output:match("prefix (/tmp/kong%-rs%-e2e%.[%w]+)")
    assert.is_truthy(prefix, output)
    local p = io.popen("ps -eo args | grep -F '" .. prefix .. "' | grep -v grep")
    local left = p:read("*a")
    p:close()
    assert.equals("", left)
    assert.is_falsy(io.open(prefix .. "/nginx.conf", "r"))
  end)
end)
