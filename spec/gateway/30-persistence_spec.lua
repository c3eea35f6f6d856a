-- kong-rs-gateway configuration store: survives restarts, seeds from a
-- declarative file, serialises concurrent Admin API writes across workers.
local h = require "spec.support.helpers"

if h.skip_on_kong("kong-rs-gateway configuration", "gateway only: the gateway's prefix and its stored configuration") then
  return
end

local PLUGINS = { "echo-conf", "prio-low" }

describe("kong-rs-gateway configuration", function()
  local admin, proxy

  after_each(function()
    h.stop()
  end)

  it("survives a restart: nothing created through the Admin API is lost", function()
    h.start({ plugins = PLUGINS })
    admin, proxy = h.admin(), h.proxy()
    local svc = admin:post("/services", { name = "keep", url = h.upstream_url() }).json
    local route = admin:post("/services/keep/routes", { name = "keep-r", paths = { "/keep" } }).json
    local p = admin:post("/routes/keep-r/plugins", { name = "echo-conf", config = { value = "kept" } }).json
    h.res_status(200, admin:patch("/plugins/" .. p.id, { config = { value = "kept2" } }))
    h.res_status(201, admin:post("/services", { name = "gone", host = "gone.test" }))
    h.res_status(204, admin:delete("/services/gone"))

    h.restart()
    admin, proxy = h.admin(), h.proxy()
    assert.equal(svc.id, admin:get("/services/keep").json.id)
    assert.equal(route.id, admin:get("/routes/keep-r").json.id)
    local p2 = admin:get("/plugins/" .. p.id).json
    assert.equal("kept2", p2.config.value)
    assert.equal(p.created_at, p2.created_at)
    h.res_status(404, admin:get("/services/gone"))
    -- the restored upstream port may differ after restart: point the service at it again
    h.res_status(200, admin:patch("/services/keep", { url = h.upstream_url() }))
    assert.equal("kept2", proxy:get("/keep").headers["x-echo-value"])
  end)

  it("seeds from a declarative file", function()
    local file = os.tmpname()
    finally(function() os.remove(file) end)
    local f = assert(io.open(file, "w"))
    f:write([[{
      "_format_version": "3.0",
      "services": [
        { "name": "decl", "url": "http://127.0.0.1:9",
          "routes": [ { "name": "decl-r", "paths": ["/decl"],
                        "plugins": [ { "name": "echo-conf", "config": { "value": "from-file" } } ] } ],
          "plugins": [ { "name": "prio-low", "config": { "tag": "svc" } } ] }
      ],
      "plugins": [ { "name": "echo-conf", "config": { "value": "global-from-file" } } ]
    }]])
    f:close()
    h.start({ plugins = PLUGINS, declarative = file })
    os.remove(file)
    admin, proxy = h.admin(), h.proxy()
    assert.equal(3, #admin:get("/plugins").json.data)
    assert.equal("from-file", admin:get("/routes/decl-r/plugins").json.data[1].config.value)
    h.res_status(200, admin:patch("/services/decl", { url = h.upstream_url() }))
    local res = proxy:get("/decl")
    assert.equal("from-file", res.headers["x-echo-value"])
    assert.equal("prio-low:svc", res.headers["x-order"])
  end)

  it("refuses to start on an invalid declarative file, saying why", function()
    local file = os.tmpname()
    finally(function() os.remove(file) end)
    local f = assert(io.open(file, "w"))
    f:write([[{ "_format_version": "3.0", "plugins": [ { "name": "echo-conf", "config": {} } ] }]])
    f:close()
    local ok, err = pcall(h.start, { plugins = PLUGINS, declarative = file })
    os.remove(file)
    assert.is_false(ok)
    assert.matches("config.value: required field missing", tostring(err), 1, true)
  end)

  it("serialises concurrent writes from both workers", function()
    h.start({ plugins = PLUGINS })
    admin = h.admin()
    -- 40 creations in parallel (curl, separate connections over both workers)
    local ports = io.open(h.prefix_path() .. "/ports.env"):read("*a")
    local port = ports:match("ADMIN_PORT=(%d+)")
    local cmd = {}
    for i = 1, 40 do
      cmd[#cmd + 1] = string.format("curl -s -o /dev/null -w '%%{http_code}\\n' -X POST " ..
        "http://127.0.0.1:%s/services -d name=par%d -d host=h%d.test &", port, i, i)
    end
    cmd[#cmd + 1] = "wait"
    local p = io.popen(table.concat(cmd, "\n"))
    local out = p:read("*a")
    p:close()
    local created = select(2, out:gsub("201", ""))
    assert.equal(40, created, out)
    assert.equal(40, #admin:get("/services").json.data)
  end)
end)
