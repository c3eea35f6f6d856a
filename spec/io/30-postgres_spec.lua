-- kong_rs::postgres in an async access phase (rs-io-probe, mode postgres:
-- `SELECT $1::text` with the request's x-key header), against a real
-- PostgreSQL started here (password required over TCP: SCRAM-SHA-256).
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"

describe("PostgreSQL from an async phase (integration)", function()
  local admin, proxy, pg

  local function route(name, config)
    h.res_status(201, admin:post("/services/pg-svc/routes", { name = name, paths = { "/" .. name } }))
    h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = "rs-io-probe", config = config }))
  end

  local function pg_config(overrides)
    local config = {
      mode = "postgres",
      host = "127.0.0.1",
      port = pg.port,
      postgres_user = pg.user,
      postgres_password = pg.password,
      postgres_database = pg.database,
      fail_open_502 = true,
    }
    for k, v in pairs(overrides or {}) do
      config[k] = v
    end
    return config
  end

  lazy_setup(function()
    pg = servers.postgres()
    h.start({ plugins = { "rs-io-probe" }, workers = 1 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "pg-svc", url = h.upstream_url() }))
    route("pg", pg_config())
    route("pg-wrong-password", pg_config({ postgres_password = "not-the-password" }))
    route("pg-closed", pg_config({ postgres_password = "not-the-password", fail_open_502 = false }))
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if pg then pg.stop() end
  end)

  it("runs a query with a parameter and answers its result; the PDK works across awaits", function()
    local res = proxy:get("/pg", nil, { ["x-key"] = "hello from kong" })
    assert.equal(200, res.status, res.body)
    assert.equal("hello from kong", res.body)
    assert.equal("kong", res.headers["x-pg-user"])
    assert.equal("done", res.headers["x-io-probe"])
  end)

  it("a parameter is a value, never SQL; UTF-8 comes back intact", function()
    local value = "'; DROP TABLE x; -- gr\195\188\195\159e \226\156\147"
    local res = proxy:get("/pg", nil, { ["x-key"] = value })
    assert.equal(200, res.status, res.body)
    assert.equal(value, res.body)
  end)

  it("serves concurrent queries on one worker", function()
    local _, ok, statuses = servers.burst("http://127.0.0.1:" .. h.proxy_port() .. "/pg", 20)
    assert.equal(20, ok, statuses)
  end)

  it("a wrong password is refused: PostgreSQL's error, naming the peer", function()
    local res = proxy:get("/pg-wrong-password", nil, { ["x-key"] = "x" })
    assert.equal(502, res.status, res.body)
    assert.matches("postgres 127.0.0.1:" .. pg.port, res.body, 1, true)
    assert.matches("password authentication failed", res.body, 1, true)
    assert.matches("28P01", res.body, 1, true)
  end)

  it("fails closed by default: the same error is a 500", function()
    local res = proxy:get("/pg-closed", nil, { ["x-key"] = "x" })
    assert.equal(500, res.status, res.body)
    assert.same({ message = "An unexpected error occurred" }, res.json)
  end)

  it("PostgreSQL down: an error naming it; back up: served again", function()
    pg.kill()
    local res = proxy:get("/pg", nil, { ["x-key"] = "x" })
    assert.equal(502, res.status, res.body)
    assert.matches("postgres 127.0.0.1:" .. pg.port, res.body, 1, true)
    assert.matches("refused", res.body, 1, true)
    pg.start()
    h.wait_until(function()
      local again = proxy:get("/pg", nil, { ["x-key"] = "back" })
      return again.status == 200 and again.body == "back"
    end, 5)
  end)
end)
