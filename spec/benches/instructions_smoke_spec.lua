-- The instruction-count benchmark (benches/instructions/run) in its smoke
-- mode: nginx under callgrind, a few dozen requests per configuration (about
-- 15 s), so the harness, the marks and the report cannot rot. Counts are
-- deterministic, so the checks are on what must hold whatever the machine:
-- every configuration was measured, and decoding a 2 KB body in Lua costs
-- instructions that the bare POST does not.
local h = require "spec.support.helpers"

if h.skip_on_kong("benches/instructions/run --smoke", "gateway only: the benchmark starts its own kong-rs-gateway " ..
                  "(real Kong is measured by hand, see benches/README.md)") then
  return
end

if h.is_kong then
  return
end

local CONFIGS = {
  "none", "lua-empty", "rs-empty", "c-noop-empty", "lua-headers", "rs-headers",
  "none-json", "lua-json", "rs-json",
}

describe("benches/instructions/run --smoke", function()
  local output, ok, per_request

  lazy_setup(function()
    local dir = os.tmpname()
    os.remove(dir)
    local pipe = assert(io.popen("benches/instructions/run --smoke --no-build --results " .. dir .. " 2>&1"))
    output = pipe:read("*a")
    local closed, _, code = pipe:close()
    ok = closed == true or code == 0
    per_request = {}
    local tsv = io.popen("cat " .. dir .. "/instructions-*.tsv 2>/dev/null")
    for line in tsv:lines() do
      local name, _, interval, marks, requests = line:match("^(%S+)\t(%d+)\t(%d+)\t(%d+)\t(%d+)$")
      if name then
        per_request[name] = (tonumber(interval) - tonumber(marks)) / tonumber(requests)
      end
    end
    tsv:close()
    os.execute("rm -rf " .. dir)
  end)

  it("runs nginx under callgrind and reports every configuration", function()
    assert.is_true(ok, output)
    for _, name in ipairs(CONFIGS) do
      local ir = per_request[name]
      assert.is_number(ir, name .. " not measured:\n" .. output)
      -- a proxied request through nginx and the Kong-shaped runloop
      assert.is_true(ir > 20000 and ir < 5000000, name .. ": " .. tostring(ir))
    end
    assert.matches("| workload | Lua adds | Rust adds | Rust / Lua |", output, nil, true)
    assert.matches("The floor of a native phase (c-noop-empty", output, nil, true)
  end)

  it("counts the work a plugin does", function()
    -- cjson.decode of the 2 KB document and the ten rules: tens of thousands
    assert.is_true(per_request["lua-json"] - per_request["none-json"] > 20000, output)
  end)
end)
