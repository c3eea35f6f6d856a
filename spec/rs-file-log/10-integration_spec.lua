-- rs-file-log through the Admin API and the proxy, in a real nginx worker.
local h = require "spec.support.helpers"
local cjson = require "cjson.safe"

local function read_lines(path)
  local f = io.open(path, "rb")
  if not f then
    return {}
  end
  local lines = {}
  for line in f:lines() do
    lines[#lines + 1] = line
  end
  f:close()
  return lines
end

describe("rs-file-log (integration)", function()
  local admin, proxy, plugin_id, log_path, route_id, service_id

  lazy_setup(function()
    h.start({ plugins = { "rs-file-log" } })
    admin, proxy = h.admin(), h.proxy()
    -- a private directory the workers (nobody, under root) can write to
    log_path = h.files_dir() .. "/rs-file-log.log"
    local svc = admin:post("/services", { name = "log-svc", url = h.upstream_url() })
    h.res_status(201, svc)
    service_id = svc.json.id
    local route = admin:post("/services/log-svc/routes", { name = "logged", paths = { "/logged" } })
    h.res_status(201, route)
    route_id = route.json.id
    local res = admin:post("/routes/logged/plugins", { name = "rs-file-log", config = { path = log_path } })
    h.res_status(201, res)
    plugin_id = res.json.id
    assert.equal(false, res.json.config.reopen)
    h.settle()
  end)

  lazy_teardown(function()
    h.stop() -- removes the files directory
  end)

  it("writes exactly one JSON line per request", function()
    local n = 7
    for i = 1, n do
      h.res_status(200, proxy:get("/logged/item/" .. i .. "?q=" .. i))
    end
    h.res_status(404, proxy:get("/not-routed"))
    h.wait_until(function() return #read_lines(log_path) >= n end, 10)
    h.sleep(0.2) -- a late duplicate would show up now
    local lines = read_lines(log_path)
    assert.equal(n, #lines)
    for i, line in ipairs(lines) do
      local entry = cjson.decode(line)
      assert.is_table(entry, "not JSON: " .. line)
      assert.equal("GET", entry.method)
      assert.equal(200, entry.status)
      assert.equal("127.0.0.1", entry.client_ip)
      assert.equal(route_id, entry.route_id or (entry.route and entry.route.id))
      assert.equal(service_id, entry.service_id or (entry.service and entry.service.id))
      assert.matches("/logged/item/" .. i, line, 1, true)
    end
  end)

  it("a PATCH of its config is seen by the next request on every worker", function()
    local new_path = log_path .. ".2"
    local workers = h.worker_pids()
    h.res_status(200, admin:patch("/plugins/" .. plugin_id, { config = { path = new_path } }))
    h.settle()
    local before_old = #read_lines(log_path)
    local before_new = #read_lines(new_path)
    local seen, nseen, sent = {}, 0, 0
    for _ = 1, 400 do
      local res = proxy:get("/logged/after-patch")
      h.res_status(200, res)
      sent = sent + 1
      local pid = h.echo(res).worker_pid
      if pid and not seen[pid] then
        seen[pid] = true
        nseen = nseen + 1
      end
      if nseen >= #workers and #workers > 0 then break end
    end
    h.wait_until(function() return #read_lines(new_path) - before_new >= sent end, 10)
    assert.equal(sent, #read_lines(new_path) - before_new)
    assert.equal(before_old, #read_lines(log_path), "a request still logged to the old path")
    if not h.is_kong then
      assert.equal(2, #workers)
      assert.equal(#workers, nseen)
    end
  end)

  it("refuses a relative path with 400 and the Rust message", function()
    local res = admin:post("/plugins", { name = "rs-file-log", config = { path = "relative.log" } })
    h.res_status(400, res)
    assert.equal("schema violation", res.json.name)
    assert.matches("absolute", res.body, 1, true)
  end)
end)
