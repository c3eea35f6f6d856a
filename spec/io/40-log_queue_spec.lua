-- Log shipping from the log phase (rs-log-shipper, tests/plugins/src/log_shipper.rs):
-- entries pushed into a kong_rs::queue in `log`, sent in batches by an
-- async sender started from ngx.timer.at (cosockets are not available in
-- `log`), retried while the collector fails, bounded when it cannot keep up.
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"
local cjson = require "cjson.safe"

describe("log queue (integration)", function()
  local admin, proxy, collector

  local function collected()
    local http = require "socket.http"
    local body = assert(http.request(collector.url .. "/collected"))
    local entries = {}
    for _, batch in ipairs(cjson.decode(body)) do
      local decoded = cjson.decode(batch)
      entries[#entries + 1] = decoded
    end
    return entries
  end

  local function collector_state(state)
    local http = require "socket.http"
    assert(http.request(collector.url .. "/collector/" .. state))
  end

  local function stats(route)
    local res = proxy:get("/" .. route, nil, { ["x-shipper-stats"] = "1" })
    assert.equal(200, res.status, res.body)
    return cjson.decode(res.body)
  end

  lazy_setup(function()
    collector = servers.http()
    h.start({ plugins = { "rs-log-shipper" }, workers = 1 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "ship-svc", url = h.upstream_url() }))
    for name, config in pairs({
      ship = { url = collector.url .. "/collect", max_batch_size = 5, max_coalescing_delay_ms = 100 },
      tiny = { url = collector.url .. "/collect", max_entries = 3, max_batch_size = 10,
               max_coalescing_delay_ms = 2000 },
    }) do
      h.res_status(201, admin:post("/services/ship-svc/routes", { name = name, paths = { "/" .. name } }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = "rs-log-shipper", config = config }))
    end
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if collector then collector.stop() end
  end)

  it("ships one entry per request, in batches, from a timer", function()
    for i = 1, 12 do
      h.res_status(200, proxy:get("/ship/r" .. i))
    end
    local batches
    h.wait_until(function()
      batches = collected()
      local n = 0
      for _, batch in ipairs(batches) do n = n + #batch end
      return n >= 12
    end, 10)
    local paths = {}
    for _, batch in ipairs(batches) do
      assert.is_true(#batch <= 5, "batch of " .. #batch)
      for _, entry in ipairs(batch) do
        assert.equal(200, entry.status)
        paths[entry.path] = true
      end
    end
    for i = 1, 12 do
      assert.is_true(paths["/ship/r" .. i], "entry /ship/r" .. i)
    end
    -- counted once the collector's answer is back
    h.wait_until(function() return stats("ship").sent == 12 end, 5)
    assert.equal(0, stats("ship").queued)
  end)

  it("retries while the collector fails, and delivers once it is back", function()
    local before = #collected()
    collector_state("down")
    h.res_status(200, proxy:get("/ship/while-down"))
    h.wait_until(function() return stats("ship").failed_attempts >= 2 end, 10)
    collector_state("up")
    h.wait_until(function()
      for _, batch in ipairs(collected()) do
        for _, entry in ipairs(batch) do
          if entry.path == "/ship/while-down" then return true end
        end
      end
      return false
    end, 10)
    assert.is_true(#collected() > before)
    assert.equal(0, stats("ship").dropped_failed)
  end)

  it("drops with a counter when full, never grows past max_entries", function()
    for i = 1, 10 do
      h.res_status(200, proxy:get("/tiny/t" .. i))
    end
    local s = stats("tiny")
    -- a 2 s coalescing delay: nothing sent yet, three held, the rest dropped
    assert.equal(3, s.queued)
    assert.equal(7, s.dropped_full)
    h.wait_until(function() return stats("tiny").sent == 3 end, 10)
  end)
end)
