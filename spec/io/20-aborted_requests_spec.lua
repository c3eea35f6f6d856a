-- Clients that go away while an async phase awaits: nothing leaks. 10,000
-- requests, each closed by its client right after sending, through async
-- phases that sleep and that call an HTTP server; afterwards the worker
-- holds no more sockets than before (plus its keep-alive pool) and, on our
-- gateway, no async phase is left in progress (a drop counter in Rust).
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"

local function open_fds(pid)
  local p = assert(io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l"))
  local n = tonumber(p:read("*a"))
  p:close()
  return n
end

describe("async phases under aborted requests", function()
  local admin, proxy, http_server

  lazy_setup(function()
    http_server = servers.http()
    h.start({ plugins = { "rs-io-probe" }, workers = 1, debug = true })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "abort-svc", url = h.upstream_url() }))
    for name, config in pairs({
      ["abort-sleep"] = { mode = "sleep", sleep_ms = 20 },
      ["abort-http"] = { mode = "http", url = http_server.url .. "/delay?ms=20" },
      ["slow-sleep"] = { mode = "sleep", sleep_ms = 500 },
    }) do
      h.res_status(201, admin:post("/services/abort-svc/routes", { name = name, paths = { "/" .. name } }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = "rs-io-probe", config = config }))
    end
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if http_server then http_server.stop() end
  end)

  it("10,000 aborted requests leave no socket and no future behind", function()
    local worker = h.worker_pids()[1]
    -- warm up: the pool's connections exist before the count
    h.res_status(200, proxy:get("/abort-http"))
    h.res_status(200, proxy:get("/abort-sleep"))
    local fds_before = open_fds(worker)

    local base = "http://127.0.0.1:" .. h.proxy_port()
    assert.equal(5000, servers.abort(base .. "/abort-sleep", 5000, 200))
    assert.equal(5000, servers.abort(base .. "/abort-http", 5000, 200))

    -- every phase finishes (nginx runs them to the end without the client)
    local fds_after
    h.wait_until(function()
      fds_after = open_fds(worker)
      return fds_after <= fds_before + 32 -- the keep-alive pool (32 per peer)
    end, 15)
    if not h.is_kong then
      h.wait_until(function()
        local stats = admin:get("/kong-rs/plugins/rs-io-probe/stats?gc=true")
        return stats.status == 200 and stats.json.tasks == 0
      end, 15)
    end
    -- the worker is the same and still serves
    assert.same({ worker }, h.worker_pids())
    h.res_status(200, proxy:get("/abort-http"))
  end)

  it("a reload (HUP) while phases await: they finish, then the old worker goes", function()
    local old_workers = h.worker_pids()
    local wait = servers.burst_in_background("http://127.0.0.1:" .. h.proxy_port() .. "/slow-sleep", 50)
    h.sleep(0.2) -- the requests are in their 500 ms sleep
    h.reload()
    local _, ok, statuses = wait()
    assert.equal(50, ok, statuses)
    local now = h.worker_pids()
    for _, pid in ipairs(now) do
      for _, old in ipairs(old_workers) do
        assert.not_equal(old, pid)
      end
    end
    h.res_status(200, proxy:get("/abort-sleep"))
  end)
end)
