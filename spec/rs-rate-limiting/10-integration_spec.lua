-- rs-rate-limiting through the Admin API and the proxy (policy local: the
-- kong_rate_limiting_counters shared dict, counted across both workers),
-- on kong-rs-gateway and on real Kong (spec/support/helpers.lua).
local h = require "spec.support.helpers"

-- Minute windows: start a test early enough in a minute that it ends in it.
local function fresh_minute()
  local second = os.time() % 60
  if second > 45 then
    h.sleep(61 - second)
  end
end

describe("rs-rate-limiting (integration, policy local)", function()
  local admin, proxy

  local function route(name, config)
    h.res_status(201, admin:post("/services/rl-svc/routes", { name = name, paths = { "/" .. name } }))
    local res = admin:post("/routes/" .. name .. "/plugins", { name = "rs-rate-limiting", config = config })
    h.res_status(201, res)
    return res.json
  end

  lazy_setup(function()
    h.start({ plugins = { "rs-rate-limiting" }, workers = 2 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "rl-svc", url = h.upstream_url() }))
    route("ip", { minute = 6, limit_by = "ip" })
    route("multi", { minute = 3, hour = 5, limit_by = "ip" })
    route("hidden", { minute = 2, limit_by = "ip", hide_client_headers = true })
    route("custom", { minute = 1, limit_by = "ip", error_code = 403, error_message = "Go slower" })
    route("header", { minute = 1, limit_by = "header", header_name = "X-Tenant" })
    route("path", { minute = 1, limit_by = "path", path = "/path/exact" })
    route("service", { minute = 2, limit_by = "service" })
    route("consumer", { minute = 1 }) -- no consumer: by IP
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("lets exactly the limit through across the workers, with Kong's headers, then answers 429", function()
    fresh_minute()
    for n = 1, 6 do
      local res = proxy:get("/ip")
      h.res_status(200, res)
      assert.equal("6", res.headers["x-ratelimit-limit-minute"])
      assert.equal(tostring(6 - n), res.headers["x-ratelimit-remaining-minute"])
      assert.equal("6", res.headers["ratelimit-limit"])
      assert.equal(tostring(6 - n), res.headers["ratelimit-remaining"])
      local reset = tonumber(res.headers["ratelimit-reset"])
      assert.truthy(reset and reset >= 1 and reset <= 60, res.headers["ratelimit-reset"])
      assert.is_nil(res.headers["retry-after"])
    end
    for _ = 1, 3 do
      local res = proxy:get("/ip")
      assert.equal(429, res.status)
      assert.same("API rate limit exceeded", res.json.message)
      assert.matches("application/json", res.headers["content-type"], 1, true)
      assert.equal("0", res.headers["x-ratelimit-remaining-minute"])
      assert.equal("0", res.headers["ratelimit-remaining"])
      assert.equal(res.headers["ratelimit-reset"], res.headers["retry-after"])
      assert.truthy(tonumber(res.headers["retry-after"]) >= 1)
    end
  end)

  it("reports every window and names the tightest in RateLimit-*", function()
    fresh_minute()
    local res = proxy:get("/multi")
    h.res_status(200, res)
    assert.equal("3", res.headers["x-ratelimit-limit-minute"])
    assert.equal("2", res.headers["x-ratelimit-remaining-minute"])
    assert.equal("5", res.headers["x-ratelimit-limit-hour"])
    assert.equal("4", res.headers["x-ratelimit-remaining-hour"])
    assert.equal("3", res.headers["ratelimit-limit"])
    assert.equal("2", res.headers["ratelimit-remaining"])
    assert.truthy(tonumber(res.headers["ratelimit-reset"]) <= 60)
  end)

  it("hide_client_headers: no rate-limit header, even on the 429", function()
    fresh_minute()
    for _ = 1, 2 do
      local res = proxy:get("/hidden")
      h.res_status(200, res)
      assert.is_nil(res.headers["x-ratelimit-limit-minute"])
      assert.is_nil(res.headers["ratelimit-limit"])
    end
    local res = proxy:get("/hidden")
    assert.equal(429, res.status)
    assert.is_nil(res.headers["ratelimit-remaining"])
    assert.is_nil(res.headers["retry-after"])
    assert.same("API rate limit exceeded", res.json.message)
  end)

  it("answers error_code with error_message", function()
    fresh_minute()
    h.res_status(200, proxy:get("/custom"))
    local res = proxy:get("/custom")
    assert.equal(403, res.status)
    assert.same("Go slower", res.json.message)
  end)

  it("limit_by header counts each value apart, the client IP without the header", function()
    fresh_minute()
    h.res_status(200, proxy:get("/header", nil, { ["X-Tenant"] = "a" }))
    h.res_status(200, proxy:get("/header", nil, { ["X-Tenant"] = "b" }))
    assert.equal(429, proxy:get("/header", nil, { ["X-Tenant"] = "a" }).status)
    h.res_status(200, proxy:get("/header"))
    assert.equal(429, proxy:get("/header").status)
  end)

  it("limit_by path counts the configured path apart from the others", function()
    fresh_minute()
    h.res_status(200, proxy:get("/path/exact"))
    assert.equal(429, proxy:get("/path/exact").status)
    h.res_status(200, proxy:get("/path/other")) -- by IP, a counter of its own
  end)

  it("limit_by service and consumer (without a consumer: the client IP)", function()
    fresh_minute()
    h.res_status(200, proxy:get("/service"))
    h.res_status(200, proxy:get("/service"))
    assert.equal(429, proxy:get("/service").status)
    h.res_status(200, proxy:get("/consumer"))
    assert.equal(429, proxy:get("/consumer").status)
  end)

  it("refuses an invalid config with 400", function()
    local res = admin:post("/plugins", { name = "rs-rate-limiting", config = { limit_by = "ip" } })
    h.res_status(400, res)
    assert.matches("at least one of these fields must be non-empty", res.body, 1, true)
    res = admin:post("/plugins", { name = "rs-rate-limiting", config = { second = 10, minute = 5 } })
    h.res_status(400, res)
    assert.matches("cannot be lower than the limit for second", res.body, 1, true)
  end)
end)
