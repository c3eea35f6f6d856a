-- kong_rs::cache through kong.cache (rs-io-probe in `cache` mode: keyed by
-- the request path, loading with a slow HTTP GET): a hit does not load, a
-- miss is cached for neg_ttl, concurrent requests for one key load once
-- per worker, a failing loader is not cached.
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"

describe("kong_rs::cache (integration)", function()
  local admin, proxy, http_server

  local function loads(res)
    return tonumber(res.headers["x-cache-loads"])
  end

  lazy_setup(function()
    http_server = servers.http()
    h.start({ plugins = { "rs-io-probe" }, workers = 1 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "cache-svc", url = h.upstream_url() }))
    for name, url in pairs({
      cache = http_server.url .. "/delay?ms=100",
      ["cache-broken"] = "http://127.0.0.1:1/",
    }) do
      h.res_status(201, admin:post("/services/cache-svc/routes", { name = name, paths = { "/" .. name } }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", {
        name = "rs-io-probe", config = { mode = "cache", url = url, fail_open_502 = true } }))
    end
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if http_server then http_server.stop() end
  end)

  it("loads on a miss, answers hits from the cache", function()
    local first = proxy:get("/cache/a")
    assert.equal(200, first.status, first.body)
    assert.equal("slept 100", first.body)
    local second = proxy:get("/cache/a")
    assert.equal(200, second.status)
    assert.equal("slept 100", second.body)
    assert.equal(loads(first), loads(second), "a hit does not load")
  end)

  it("caches a miss (the loader's None) too", function()
    local first = proxy:get("/cache/missing")
    assert.equal(404, first.status, first.body)
    local second = proxy:get("/cache/missing")
    assert.equal(404, second.status)
    assert.equal(loads(first), loads(second))
  end)

  it("loads a key once for 50 concurrent requests", function()
    local before = loads(proxy:get("/cache/a"))
    local _, ok, statuses = servers.burst("http://127.0.0.1:" .. h.proxy_port() .. "/cache/burst", 50)
    assert.equal(50, ok, statuses)
    local after = loads(proxy:get("/cache/burst"))
    assert.equal(before + 1, after)
  end)

  it("does not cache a failing loader", function()
    local before = loads(proxy:get("/cache/a"))
    local first = proxy:get("/cache-broken/x")
    assert.equal(502, first.status, first.body)
    assert.matches("refused", first.body, 1, true)
    local second = proxy:get("/cache-broken/x")
    assert.equal(502, second.status)
    -- both failing requests ran the loader, then a new key loads once more
    assert.equal(before + 3, loads(proxy:get("/cache/after-broken")))
  end)
end)
