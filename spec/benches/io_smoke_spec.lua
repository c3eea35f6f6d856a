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

local function has(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == 0 or r == true
end

local function missing_tool()
  for _, tool in ipairs({ "wrk", "redis-server", "redis-cli" }) do
    if not has(tool) then
      return tool
    end
  end
end

describe("benches/io/run --smoke", function()
  local output, status, results

  lazy_setup(function()
    if missing_tool() then
      return
    end
    results = os.tmpname()
    os.remove(results)
    local p = assert(io.popen("benches/io/run --smoke --results '" .. results .. "' 2>&1; echo \"EXIT:$?\""))
    output = p:read("*a")
    p:close()
    status = tonumber(output:match("EXIT:(%d+)%s*$"))
  end)

  lazy_teardown(function()
    if results then
      os.execute("rm -rf '" .. results .. "'")
    end
  end)

  it("exits 0 and reports every configuration, with both ratios", function()
    local tool = missing_tool()
    if tool then
      pending(tool .. " is not installed (scripts/setup installs it)")
      return
    end
    assert.equals(0, status, output)
    for _, name in ipairs(CONFIGS) do
      local rps = output:match("\n| " .. name:gsub("%-", "%%-") .. " | ([%d.]+) |")
      assert.is_truthy(rps, "no report line for " .. name .. "\n" .. output)
      assert.is_true(tonumber(rps) > 0, name .. ": " .. rps)
    end
    -- the plugin server's CPU is counted for the model's rows
    local server = output:match("\n| ps%-get | [%d.]+ | [%d.]+ | (%d+) |")
    assert.is_truthy(server, output)
    assert.is_true(tonumber(server) > 0, output)
    assert.matches("Rust / Lua added cost: GET", output, 1, true)
    assert.matches("Rust vs plugin-server model: added cost ratio (ps / rs): GET", output, 1, true)
    -- the raw numbers are kept
    local p = io.popen("ls '" .. results .. "'")
    local files = p:read("*a")
    p:close()
    assert.matches("%.tsv", files)
    assert.matches("%.md", files)
  end)

  it("leaves nothing running", function()
    local tool = missing_tool()
    if tool then
      pending(tool .. " is not installed")
      return
    end
    -- the gateway (nginx -p PREFIX), the plugin server (--socket PREFIX/...)
    -- and redis-server (--dir PREFIX) of this run are gone, and so is its
    -- temporary prefix
    local prefix = output:match("prefix (/tmp/kong%-rs%-io%-bench%.[%w]+)")
    assert.is_truthy(prefix, output)
    local p = io.popen("ps -eo args | grep -F '" .. prefix .. "' | grep -v grep")
    local left = p:read("*a")
    p:close()
    assert.equals("", left)
    assert.is_falsy(io.open(prefix .. "/nginx.conf", "r"))
  end)
end)
