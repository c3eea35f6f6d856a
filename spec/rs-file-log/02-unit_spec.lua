local PLUGIN_NAME = "rs-file-log"
local stub = require("spec.support.kong_stub")
local cjson = require("cjson")


local function read_lines(path)
  local file = io.open(path, "r")
  if not file then
    return {}
  end
  local lines = {}
  for line in file:lines() do
    lines[#lines + 1] = cjson.decode(line)
  end
  file:close()
  return lines
end


describe(PLUGIN_NAME .. ": (unit)", function()
  local handler, dir

  setup(function()
    stub.install()
    handler = require("kong.plugins." .. PLUGIN_NAME .. ".handler")
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
  end)

  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("registers only the log phase", function()
    assert.is_function(handler.log)
    assert.is_nil(handler.access)
    assert.is_nil(handler.response)
    assert.equal(9, handler.PRIORITY)
  end)

  it("appends one JSON line per request", function()
    local path = dir .. "/access.log"
    local conf = { path = path, reopen = false }
    for i = 1, 3 do
      local state = stub.install({ method = "POST", path = "/r/" .. i, query = "a=b" })
      state.status = 200 + i
      handler:log(conf)
    end
    local lines = read_lines(path)
    assert.equal(3, #lines)
    for i, line in ipairs(lines) do
      assert.equal("POST", line.method)
      assert.equal("/r/" .. i, line.path)
      assert.equal("a=b", line.query)
      assert.equal(200 + i, line.status)
      assert.equal("127.0.0.1", line.client_ip)
      assert.equal("route-id", line.route_id)
      assert.equal("service-id", line.service_id)
      assert.is_number(line.latency_ms)
    end
  end)

  it("keeps non-UTF-8 request paths losslessly (base64)", function()
    local path = dir .. "/bytes.log"
    stub.install({ path = "/caf\233" })
    handler:log({ path = path, reopen = true })
    assert.same({ base64 = "L2NhZuk=" }, read_lines(path)[1].path)
  end)

  it("logs a write error and does not fail the request", function()
    local state = stub.install()
    handler:log({ path = dir .. "/missing/dir/x.log", reopen = true })
    assert.same({}, state.exits)
    local errors = stub.logs_at(state, "err")
    assert.equal(1, #errors)
    assert.matches("could not write to " .. dir .. "/missing/dir/x.log", errors[1], nil, true)
  end)
end)
