-- TLS by nginx (sslhandshake) for kong_rs::http, a panic inside an async
-- phase's future, and kong.client.load_consumer awaited from Rust.
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"

describe("async phases: TLS and panics", function()
  local admin, proxy, https_server

  local function route(name, config)
    h.res_status(201, admin:post("/services/tls-svc/routes", { name = name, paths = { "/" .. name } }))
    h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = "rs-io-probe", config = config }))
  end

  lazy_setup(function()
    https_server = servers.https()
    h.start({ plugins = { "rs-io-probe" }, workers = 1 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "tls-svc", url = h.upstream_url() }))
    route("tls-noverify", { mode = "http", url = https_server.url, tls_verify = false, fail_open_502 = true })
    route("tls-verify", { mode = "http", url = https_server.url, tls_verify = true, fail_open_502 = true })
    route("panic", { mode = "panic_after_await" })
    route("consumer", { mode = "consumer" })
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if https_server then https_server.stop() end
  end)

  it("talks HTTPS through nginx's TLS", function()
    for _ = 1, 3 do -- the later ones on a pooled TLS connection
      local res = proxy:get("/tls-noverify", nil, { ["x-path"] = "/delay?ms=1" })
      assert.equal(200, res.status, res.body)
      assert.equal("slept 1", res.body)
    end
  end)

  it("refuses a certificate nginx cannot verify, naming the peer", function()
    local res = proxy:get("/tls-verify", nil, { ["x-path"] = "/x" })
    assert.equal(502, res.status, res.body)
    assert.matches("TLS with 127.0.0.1:" .. https_server.port, res.body, 1, true)
  end)

  it("awaits kong.client.load_consumer (by id or username), then authenticates", function()
    local res = admin:post("/consumers", { username = "io-alice" })
    h.res_status(201, res)
    local id = res.json.id
    h.settle()
    for _, wanted in ipairs({ "io-alice", id }) do
      local answer = proxy:get("/consumer", nil, { ["x-consumer"] = wanted })
      assert.equal(200, answer.status, answer.body)
      assert.same({ id = id, username = "io-alice" }, answer.json)
    end
    local missing = proxy:get("/consumer", nil, { ["x-consumer"] = "nobody-here" })
    assert.equal(404, missing.status, missing.body)
  end)

  it("answers 500 and logs when a future panics after an await; the worker lives on", function()
    local workers = h.worker_pids()
    local before = #h.error_log()
    local res = proxy:get("/panic")
    assert.equal(500, res.status, res.body)
    assert.same({ message = "An unexpected error occurred" }, res.json)
    h.wait_until(function()
      return h.error_log():sub(before + 1):find("panics after an await, on purpose", 1, true) ~= nil
    end, 5)
    assert.same(workers, h.worker_pids())
    h.res_status(200, proxy:get("/tls-noverify", nil, { ["x-path"] = "/ok" }))
  end)
end)
