-- rs-jwt with a JWKS served by a test HTTP server (spec/support/test_servers.py:
-- POST /jwks sets the document, GET /jwks serves it or 503 while /jwks/down,
-- /jwks/hits counts the GETs): fetched once for the node (two workers), not
-- per request; a new kid is fetched at most once per refresh_interval; the
-- keys are served stale while the identity provider is down, until
-- max_stale; then 500 (closed), and back when it is up.
local h = require "spec.support.helpers"
local servers = require "spec.support.servers"
local tokens = require "spec.rs-jwt.tokens"

describe("rs-jwt (JWKS)", function()
  local admin, proxy, keys, idp

  local function idp_call(method, path, body)
    local http = require "socket.http"
    local ltn12 = require "ltn12"
    local out = {}
    local _, status = http.request({
      method = method, url = idp.url .. path, sink = ltn12.sink.table(out),
      source = body and ltn12.source.string(body) or nil,
      headers = body and { ["content-length"] = #body, ["content-type"] = "application/json" } or nil,
    })
    assert.equal(200, status)
    return table.concat(out)
  end

  local function hits()
    return tonumber(idp_call("GET", "/jwks/hits"))
  end

  local function publish(kids)
    local doc = {}
    for kid, which in pairs(kids) do doc[kid] = keys[which .. "_n"] end
    idp_call("POST", "/jwks", tokens.jwks(doc))
  end

  local function token(kid, private)
    return tokens.token({ alg = "RS256", kid = kid }, { sub = "alice" }, private)
  end

  local function get(path, t)
    return proxy:get(path, nil, { Authorization = "Bearer " .. t })
  end

  lazy_setup(function()
    keys = tokens.keys()
    idp = servers.http()
    publish({ a = "rsa" })
    h.start({ plugins = { "rs-jwt" }, workers = 2 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "jwks-svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/jwks-svc/routes", { name = "jwks", paths = { "/jwks" } }))
    h.res_status(201, admin:post("/routes/jwks/plugins", { name = "rs-jwt", config = {
      jwks_url = idp.url .. "/jwks", jwks_ttl = 2, refresh_interval = 1, max_stale = 3, jwks_timeout = 1000,
    } }))
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if idp then idp.stop() end
    if keys then keys.cleanup() end
  end)

  it("fetches the JWKS once for the node and verifies by kid", function()
    local t = token("a", keys.rsa)
    for _ = 1, 30 do
      local res = get("/jwks", t)
      assert.equal(200, res.status, res.body)
    end
    assert.equal(1, hits(), "one fetch for 30 requests over two workers")
    local res = get("/jwks", token("a", keys.rsa2))
    assert.equal(401, res.status)
    assert.same({ message = "Invalid signature" }, res.json)
  end)

  it("fetches a rotated key on its first unknown kid, at most once per refresh_interval", function()
    publish({ a = "rsa", b = "rsa2" })
    h.sleep(1.1) -- past refresh_interval since the first fetch
    local before = hits()
    local res = get("/jwks", token("b", keys.rsa2))
    assert.equal(200, res.status, res.body)
    assert.equal(before + 1, hits())
    -- Tokens with random kids: refused, and they cannot make the gateway fetch per request.
    for i = 1, 30 do
      res = get("/jwks", token("random-" .. i, keys.rsa2))
      assert.equal(401, res.status)
      assert.same({ message = "No credentials found for given 'kid'" }, res.json)
    end
    assert.truthy(hits() <= before + 2, "at most one more fetch in the refresh interval, got " .. (hits() - before))
  end)

  it("serves the keys stale while the identity provider is down, until max_stale; then 500, and recovers", function()
    local t = token("a", keys.rsa)
    assert.equal(200, get("/jwks", t).status)
    idp_call("GET", "/jwks/down")
    local before = hits()
    -- past jwks_ttl (2 s), within ttl + max_stale (5 s): stale keys
    local deadline = os.time() + 3
    local served = 0
    while os.time() < deadline do
      local res = get("/jwks", t)
      assert.equal(200, res.status, res.body)
      served = served + 1
      h.sleep(0.05)
    end
    local tried = hits() - before
    assert.truthy(tried >= 1, "it tried to refresh")
    assert.truthy(tried <= 5, "at most one fetch per refresh_interval (1 s) on the node, got " .. tried ..
                              " for " .. served .. " requests")
    -- past ttl + max_stale: closed
    h.wait_until(function() return get("/jwks", t).status == 500 end, 10, 0.2)
    assert.matches("JWKS .* answered 503", h.error_log())
    idp_call("GET", "/jwks/up")
    h.wait_until(function() return get("/jwks", t).status == 200 end, 10, 0.2)
  end)
end)
