-- rs-rate-limiting, policy redis, beyond one node: two gateways (two nginx
-- instances, 2 workers each) and one redis-server on 127.0.0.1; interleaved
-- traffic through both is limited cluster-wide; Redis killed mid-run
-- (fault_tolerant on: requests pass and say nothing; off: 500), then back.
local h = require "spec.support.helpers"

if h.skip_on_kong("rs-rate-limiting (cluster, policy redis)",
                  "two gateways side by side: kong-rs-gateway only (spec.helpers manages one Kong)") then
  return
end

local servers = require "spec.support.servers"
local cjson = require "cjson.safe"

local PLUGIN_ID = "6f3c2b7e-1d4a-4c1b-9d7e-5a1b2c3d4e5f"
local LIMIT = 10

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  return out:match("__rc=0%s*$") ~= nil, out
end

local function fresh_minute()
  local second = os.time() % 60
  if second > 40 then
    h.sleep(61 - second)
  end
end

-- The second gateway, started with the gateway script as h.start does.
local function start_second()
  local _, dir = sh("mktemp -d \"${TMPDIR:-/tmp}/kong-rs-spec-b.XXXXXX\"")
  dir = dir:gsub("__rc=%d+%s*$", ""):gsub("%s+$", "")
  local port = function() return 20000 + math.random(0, 39999) end
  local ok, out = sh("env KONG_PLUGINS=rs-rate-limiting KONG_RS_PROXY_PORT=" .. port() ..
                     " KONG_RS_ADMIN_PORT=" .. port() .. " KONG_RS_UPSTREAM_PORT=" .. port() ..
                     " '" .. h.root .. "/gateway/bin/kong-rs-gateway' start --prefix '" .. dir ..
                     "' --workers 2")
  assert(ok, out)
  local ports = {}
  for line in io.lines(dir .. "/ports.env") do
    local k, v = line:match("^([%w_]+)=(%d+)$")
    if k then ports[k] = tonumber(v) end
  end
  return { prefix = dir, ports = ports }
end

local function stop_second(b)
  sh("'" .. h.root .. "/gateway/bin/kong-rs-gateway' stop --prefix '" .. b.prefix .. "'")
  sh("rm -rf '" .. b.prefix .. "'")
end

-- A request to 127.0.0.1:port (LuaSocket, one connection each).
local function http(port, method, path, body)
  local socket = require "socket"
  local sock = socket.tcp()
  sock:settimeout(10)
  assert(sock:connect("127.0.0.1", port))
  local data = body and cjson.encode(body) or ""
  sock:send(method .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" ..
            "Content-Type: application/json\r\nContent-Length: " .. #data .. "\r\n\r\n" .. data)
  local raw = sock:receive("*a")
  sock:close()
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  local headers = {}
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  return { status = tonumber(head:match("^HTTP/%d%.%d (%d+)")), headers = headers, body = rest,
           json = cjson.decode(rest) }
end

describe("rs-rate-limiting (cluster, policy redis)", function()
  local redis, b
  local gateways -- { admin port, proxy port } of both

  local function configure(port, upstream, config)
    h.res_status(201, http(port, "POST", "/services", { name = "rl", url = upstream }))
    h.res_status(201, http(port, "POST", "/services/rl/routes", { name = "rl", paths = { "/rl" } }))
    h.res_status(201, http(port, "POST", "/routes/rl/plugins",
                           { id = PLUGIN_ID, name = "rs-rate-limiting", config = config }))
  end

  local function patch(config)
    for _, g in ipairs(gateways) do
      h.res_status(200, http(g.admin, "PATCH", "/plugins/" .. PLUGIN_ID, { config = config }))
    end
  end

  -- `n` requests alternating between the gateways: the statuses, counted.
  local function burst(n)
    local counts, last = {}, nil
    for i = 1, n do
      local g = gateways[i % 2 + 1]
      last = http(g.proxy, "GET", "/rl")
      counts[last.status] = (counts[last.status] or 0) + 1
    end
    return counts, last
  end

  lazy_setup(function()
    redis = servers.redis()
    h.start({ plugins = { "rs-rate-limiting" }, workers = 2 })
    b = start_second()
    local config = { minute = LIMIT, limit_by = "ip", policy = "redis", fault_tolerant = true,
                     redis = { host = "127.0.0.1", port = redis.port, timeout = 500 } }
    local a_ports = {}
    -- the first gateway's ports, through the helpers' clients
    local admin = h.admin()
    h.res_status(201, admin:post("/services", { name = "rl", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/rl/routes", { name = "rl", paths = { "/rl" } }))
    h.res_status(201, admin:post("/routes/rl/plugins",
                                 { id = PLUGIN_ID, name = "rs-rate-limiting", config = config }))
    configure(b.ports.ADMIN_PORT, "http://127.0.0.1:" .. b.ports.UPSTREAM_PORT, config)
    local f = assert(io.open(h.prefix_path() .. "/ports.env"))
    for line in f:lines() do
      local k, v = line:match("^([%w_]+)=(%d+)$")
      if k then a_ports[k] = tonumber(v) end
    end
    f:close()
    gateways = {
      { admin = a_ports.ADMIN_PORT, proxy = a_ports.PROXY_PORT },
      { admin = b.ports.ADMIN_PORT, proxy = b.ports.PROXY_PORT },
    }
  end)

  lazy_teardown(function()
    if b then stop_second(b) end
    h.stop()
    if redis then redis.stop() end
  end)

  it("runs two gateways of two workers each", function()
    assert.equal(2, #h.worker_pids())
    local _, out = sh("ps -o pid= --ppid $(cat '" .. b.prefix .. "/logs/nginx.pid')")
    local n = 0
    for _ in out:gsub("__rc=%d+%s*$", ""):gmatch("%d+") do n = n + 1 end
    assert.equal(2, n)
  end)

  it("lets exactly the limit through per window, cluster-wide", function()
    fresh_minute()
    local counts, last = burst(3 * LIMIT)
    assert.same({ [200] = LIMIT, [429] = 2 * LIMIT }, counts)
    assert.same("API rate limit exceeded", last.json.message)
    assert.equal("0", last.headers["x-ratelimit-remaining-minute"])
    assert.equal(tostring(LIMIT), last.headers["ratelimit-limit"])
    -- both gateways count the same keys
    local keys = redis.cli("KEYS 'rs-ratelimit:*'")
    assert.matches("rs-ratelimit:" .. PLUGIN_ID .. ":127.0.0.1:", keys, 1, true)
  end)

  it("Redis killed: fault_tolerant passes requests without headers; off: 500", function()
    redis.kill()
    local counts, last = burst(6)
    assert.same({ [200] = 6 }, counts)
    assert.is_nil(last.headers["ratelimit-limit"])
    assert.is_nil(last.headers["x-ratelimit-remaining-minute"])
    patch({ fault_tolerant = false })
    counts, last = burst(4)
    assert.same({ [500] = 4 }, counts)
    assert.same("An unexpected error occurred", last.json.message)
  end)

  it("Redis back: limiting resumes, cluster-wide", function()
    redis.start()
    fresh_minute()
    local counts, last = burst(2 * LIMIT)
    -- a new, empty Redis: the window counts from zero again
    assert.same({ [200] = LIMIT, [429] = LIMIT }, counts)
    assert.equal(429, last.status)
    patch({ fault_tolerant = true })
  end)
end)
