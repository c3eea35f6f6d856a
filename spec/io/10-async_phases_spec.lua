-- Async phases (rs-io-probe, tests/plugins/src/io_probe.rs): a Rust future
-- whose I/O nginx performs with cosockets, against real servers started
-- here (an HTTP server with slow, hanging and resetting paths; redis-server).
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"

describe("async phases (integration)", function()
  local admin, proxy, http_server, redis, closed_port

  local function route(name, config)
    h.res_status(201, admin:post("/services/io-svc/routes", { name = name, paths = { "/" .. name } }))
    local res = admin:post("/routes/" .. name .. "/plugins", { name = "rs-io-probe", config = config })
    h.res_status(201, res)
    return res.json.id
  end

  lazy_setup(function()
    http_server = servers.http()
    redis = servers.redis()
    -- A port nothing listens on (taken, then freed).
    local socket = require "socket"
    local s = assert(socket.bind("127.0.0.1", 0))
    closed_port = select(2, s:getsockname())
    s:close()

    h.start({ plugins = { "rs-io-probe" }, workers = 1 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "io-svc", url = h.upstream_url() }))
    route("http", { mode = "http", url = http_server.url, fail_open_502 = true })
    route("http-short", { mode = "http", url = http_server.url, timeout_ms = 300, fail_open_502 = true })
    route("refused", { mode = "http", url = "http://127.0.0.1:" .. closed_port, fail_open_502 = true })
    route("refused-closed", { mode = "http", url = "http://127.0.0.1:" .. closed_port })
    route("sleep", { mode = "sleep", sleep_ms = 100 })
    route("incr", { mode = "redis_incr", host = "127.0.0.1", port = redis.port, fail_open_502 = true })
    route("get", { mode = "redis_get", host = "127.0.0.1", port = redis.port, fail_open_502 = true })
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if http_server then http_server.stop() end
    if redis then redis.stop() end
  end)

  it("awaits an HTTP call and answers with its response; the PDK works across awaits", function()
    local res = proxy:get("/http", nil, { ["x-path"] = "/delay?ms=50" })
    assert.equal(200, res.status, res.body)
    assert.equal("slept 50", res.body)
    assert.equal("200", res.headers["x-io-status"])
    assert.equal("done", res.headers["x-io-probe"])
  end)

  it("keeps the worker serving: 200 concurrent 100 ms calls on one worker take ~0.1 s, not 20 s", function()
    -- warm the connection pool and the JIT
    h.res_status(200, proxy:get("/http", nil, { ["x-path"] = "/warm" }))
    local elapsed, ok, statuses = servers.burst("http://127.0.0.1:" .. h.proxy_port() .. "/sleep", 200)
    assert.equal(200, ok, statuses)
    -- a worker that blocked would need 200 x 0.1 s = 20 s
    assert.is_true(elapsed < 1.5, "200 concurrent sleeps took " .. elapsed .. " s")
  end)

  it("a refused connection is an error naming the peer (502 by the probe's choice)", function()
    local res = proxy:get("/refused")
    assert.equal(502, res.status, res.body)
    assert.matches("127.0.0.1:" .. closed_port, res.body, 1, true)
    assert.matches("refused", res.body, 1, true)
    assert.equal("done", res.headers["x-io-probe"])
  end)

  it("fails closed by default: the same error is a 500 and a log line", function()
    local before = #h.error_log()
    local res = proxy:get("/refused-closed")
    assert.equal(500, res.status, res.body)
    assert.same({ message = "An unexpected error occurred" }, res.json)
    h.wait_until(function()
      return h.error_log():sub(before + 1):find("rs-io-probe failed in access phase", 1, true) ~= nil
    end, 5)
  end)

  it("a server that hangs runs into the timeout, within it", function()
    local socket = require "socket"
    local started = socket.gettime()
    local res = proxy:get("/http-short", nil, { ["x-path"] = "/hang" })
    local took = socket.gettime() - started
    assert.equal(502, res.status, res.body)
    assert.matches("timed out", res.body, 1, true)
    assert.is_true(took < 2, "took " .. took .. " s")
  end)

  it("a connection reset is an error, not a crash", function()
    local res = proxy:get("/http", nil, { ["x-path"] = "/reset" })
    assert.equal(502, res.status, res.body)
    assert.matches("GET http://127.0.0.1:" .. http_server.port .. "/reset", res.body, 1, true)
  end)

  it("talks to Redis: INCR + EXPIRE pipelined, GET", function()
    redis.cli("DEL io-counter")
    for i = 1, 3 do
      local res = proxy:get("/incr", nil, { ["x-key"] = "io-counter" })
      assert.equal(200, res.status, res.body)
      assert.equal(tostring(i), res.body)
    end
    assert.equal("3", redis.cli("GET io-counter"))
    local ttl = tonumber(redis.cli("TTL io-counter"))
    assert.is_true(ttl > 0 and ttl <= 60, "ttl " .. tostring(ttl))
    local res = proxy:get("/get", nil, { ["x-key"] = "io-counter" })
    assert.equal("3", res.body)
  end)

  it("reuses Redis connections from nginx's pool", function()
    local before = tonumber(redis.cli("INFO stats"):match("total_connections_received:(%d+)"))
    for _ = 1, 20 do
      h.res_status(200, proxy:get("/get", nil, { ["x-key"] = "io-counter" }))
    end
    local after = tonumber(redis.cli("INFO stats"):match("total_connections_received:(%d+)"))
    -- one worker: at most one new connection (plus redis-cli's own)
    assert.is_true(after - before <= 2, "new connections: " .. (after - before))
  end)

  it("Redis down: an error naming it; back up: served again", function()
    redis.kill()
    local res = proxy:get("/get", nil, { ["x-key"] = "io-counter" })
    assert.equal(502, res.status, res.body)
    assert.matches("127.0.0.1:" .. redis.port, res.body, 1, true)
    redis.start()
    h.wait_until(function()
      return proxy:get("/get", nil, { ["x-key"] = "io-counter" }).status == 200
    end, 5)
  end)
end)
