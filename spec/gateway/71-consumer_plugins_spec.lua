-- Consumers at run time: kong.client.load_consumer / authenticate /
-- get_consumer / get_credential (kong/pdk/client.lua), plugins configured
-- for a consumer chosen as Kong's plugins iterator chooses them
-- (kong/runloop/plugins_iterator.lua lookup_cfg), and kong.log.serialize()
-- (kong/pdk/log.lua). The lua-auth-probe fixture authenticates the consumer
-- named by the X-Consumer header. Written to pass unchanged on Kong 3.9.3
-- (Pongo) and on kong-rs-gateway.
local h = require "spec.support.helpers"
local cjson = require "cjson.safe"

local null = cjson.null
local PLUGINS = { "lua-auth-probe", "prio-high", "prio-low" }
local CREDENTIAL_ID = "c0ffee00-0000-4000-8000-00000000c0de"

describe("consumers at run time", function()
  local admin, proxy, log_path
  local consumers = {}
  local routes = {}

  local function get(path, consumer, headers)
    headers = headers or {}
    headers["X-Consumer"] = consumer
    return proxy:send({ method = "GET", path = path, headers = headers })
  end

  -- the JSON lines the log phase wrote for requests to `uri`
  local function logged(uri)
    local f = io.open(log_path)
    if not f then return {} end
    local out = {}
    for line in f:lines() do
      local entry = cjson.decode(line)
      if entry and entry.serialized.request.uri == uri then
        out[#out + 1] = entry
      end
    end
    f:close()
    return out
  end

  lazy_setup(function()
    h.start({ plugins = PLUGINS })
    admin, proxy = h.admin(), h.proxy()
    log_path = h.files_dir() .. "/serialize.log"
    os.remove(log_path)
    local function post(path, body)
      local res = admin:post(path, body)
      h.res_status(201, res)
      return res.json
    end
    local svc_a = post("/services", { name = "svc-a", url = h.upstream_url() })
    local svc_b = post("/services", { name = "svc-b", url = h.upstream_url() })
    routes.a1 = post("/services/svc-a/routes", { name = "a1", paths = { "/a1" } })
    routes.a2 = post("/services/svc-a/routes", { name = "a2", paths = { "/a2" } })
    routes.b1 = post("/services/svc-b/routes", { name = "b1", paths = { "/b1" } })
    routes.answer = post("/services/svc-a/routes", { name = "answer", paths = { "/answer" } })
    for _, name in ipairs({ "alice", "bob", "carol", "dave" }) do
      consumers[name] = post("/consumers", { username = name })
    end

    post("/plugins", { name = "lua-auth-probe", config = { log_path = log_path } })
    post("/routes/answer/plugins", { name = "lua-auth-probe", config = { answer = true } })
    -- runs before the authentication: its consumer configuration never applies
    post("/plugins", { name = "prio-high", config = { tag = "global" } })
    post("/consumers/alice/plugins", { name = "prio-high", config = { tag = "alice" } })
    -- runs after it: every precedence level of Kong's lookup_cfg
    post("/plugins", { name = "prio-low", config = { tag = "global" } })
    post("/consumers/alice/plugins", { name = "prio-low", config = { tag = "alice" } })
    post("/routes/a2/plugins", { name = "prio-low", config = { tag = "route-a2" } })
    post("/plugins", { name = "prio-low", route = { id = routes.a2.id }, consumer = { id = consumers.bob.id },
                       config = { tag = "a2+bob" } })
    post("/services/svc-b/plugins", { name = "prio-low", config = { tag = "svc-b" } })
    post("/plugins", { name = "prio-low", service = { id = svc_b.id }, consumer = { id = consumers.carol.id },
                       config = { tag = "svc-b+carol" } })
    post("/plugins", { name = "prio-low", route = { id = routes.b1.id }, service = { id = svc_b.id },
                       config = { tag = "b1+svc-b" } })
    post("/plugins", { name = "prio-low", route = { id = routes.b1.id }, service = { id = svc_b.id },
                       consumer = { id = consumers.dave.id }, config = { tag = "b1+svc-b+dave" } })
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("a plugin configured for a consumer applies once that consumer is authenticated, by Kong's precedence", function()
    local cases = {
      -- path, consumer, prio-low's configuration
      { "/a1", nil, "global" },
      { "/a1", "alice", "alice" },          -- consumer > global
      { "/a1", "bob", "global" },           -- bob's is for route a2 only
      { "/a2", nil, "route-a2" },
      { "/a2", "alice", "alice" },          -- consumer > route
      { "/a2", "bob", "a2+bob" },           -- route+consumer > consumer, route
      { "/a2", "carol", "route-a2" },       -- carol's is for svc-b only
      { "/b1", nil, "b1+svc-b" },           -- route+service > service
      { "/b1", "alice", "b1+svc-b" },       -- route+service > consumer
      { "/b1", "carol", "svc-b+carol" },    -- service+consumer > route+service
      { "/b1", "dave", "b1+svc-b+dave" },   -- route+service+consumer first
    }
    for _, case in ipairs(cases) do
      local path, consumer, want = case[1], case[2], case[3]
      local res = get(path, consumer and consumers[consumer].username)
      h.res_status(200, res)
      local what = path .. " as " .. tostring(consumer)
      -- prio-high runs before lua-auth-probe: no consumer yet, its global
      -- configuration even for alice
      assert.equal("prio-high:global,prio-low:" .. want, res.headers["x-order"], what)
      assert.equal(consumer or "none", res.headers["x-probe-consumer"], what)
    end
  end)

  it("the consumer can be named by id too; an unknown one is refused by the probe", function()
    local res = get("/a1", consumers.dave.id)
    h.res_status(200, res)
    assert.equal("dave", res.headers["x-probe-consumer"])
    assert.equal(CREDENTIAL_ID, res.headers["x-probe-credential"])
    res = get("/a1", "nobody")
    h.res_status(401, res)
    assert.same({ message = "unknown consumer" }, res.json)
    assert.equal("none", res.headers["x-probe-consumer"])
  end)

  it("kong.client: load_consumer, authenticate, get_consumer, get_credential with Kong's errors", function()
    local res = get("/answer", "bob")
    h.res_status(200, res)
    local j = res.json
    assert.same({ consumer = null, credential = null }, j.before)
    assert.same({
      authenticate_nil = "either credential or consumer must be provided",
      authenticate_bad_consumer = "consumer must be a table or nil",
      authenticate_bad_credential = "credential must be a table or nil",
      load_nil = "consumer_id must be a string",
      load_number = "consumer_id must be a string",
      load_not_uuid = "cannot load a consumer with an id that is not a uuid",
      serialize = "function cannot be called in access phase (only in: log)",
    }, j.errors)
    assert.equal(null, j.load_unknown_id)
    assert.equal(null, j.load_unknown_username)
    -- the entity as Kong's DAO returns it: no null fields
    local bob = consumers.bob
    assert.same({ id = bob.id, username = "bob", created_at = bob.created_at, updated_at = bob.updated_at },
                j.consumer)
    assert.same({ id = CREDENTIAL_ID, consumer_id = bob.id }, j.credential)
    -- a credential alone is a valid authentication, and clears the consumer
    assert.equal(null, j.credential_only)
    assert.equal(null, j.credential_only_consumer)
  end)

  it("kong.client.authenticate is for the access phase only", function()
    local res = get("/a1", "alice")
    h.res_status(200, res)
    assert.equal("function cannot be called in header_filter phase (only in: access)",
                 res.headers["x-probe-authenticate-error"])
  end)

  it("kong.log.serialize() in the log phase has Kong's shape", function()
    local res = proxy:send({ method = "GET", path = "/a2?q=1&q=2&r=x",
                             headers = { ["X-Consumer"] = "bob", ["Authorization"] = "Basic c2VjcmV0",
                                         ["X-Extra"] = "yes" } })
    h.res_status(200, res)
    local entry = h.wait_until(function() return logged("/a2?q=1&q=2&r=x")[1] end, 10)
    local s = entry.serialized
    local bob = consumers.bob

    assert.equal("GET", s.request.method)
    assert.equal("/a2?q=1&q=2&r=x", s.request.uri)
    assert.matches("^http://[^/]+/a2%?q=1&q=2&r=x$", s.request.url)
    assert.same({ q = { "1", "2" }, r = "x" }, s.request.querystring)
    assert.equal("REDACTED", s.request.headers.authorization)
    assert.equal("yes", s.request.headers["x-extra"])
    assert.equal("bob", s.request.headers["x-consumer"])
    assert.is_number(s.request.size)
    assert.is_string(s.request.id)

    assert.equal(200, s.response.status)
    assert.is_number(s.response.size)
    assert.equal("prio-high:global,prio-low:a2+bob", s.response.headers["x-order"])
    assert.equal("200", tostring(s.upstream_status))
    assert.matches("%?q=1&q=2&r=x$", s.upstream_uri)
    assert.equal("upstream", s.source)

    for _, k in ipairs({ "kong", "proxy", "request", "receive" }) do
      assert.is_number(s.latencies[k], k)
      assert.is_true(s.latencies[k] >= 0, k)
    end
    assert.equal(1, #s.tries)
    assert.is_string(s.tries[1].ip)
    assert.is_number(s.tries[1].port)
    assert.is_number(s.tries[1].balancer_start)

    assert.equal(routes.a2.id, s.route.id)
    assert.equal("a2", s.route.name)
    assert.equal("svc-a", s.service.name)
    assert.equal(bob.id, s.consumer.id)
    assert.equal("bob", s.consumer.username)
    assert.same(s.consumer, entry.consumer)
    -- Kong's build_authenticated_entity: the credential's id and consumer_id
    assert.same({ id = CREDENTIAL_ID, consumer_id = bob.id }, s.authenticated_entity)
    assert.equal("127.0.0.1", s.client_ip)
    assert.is_number(s.started_at)
    assert.is_true(math.abs(s.started_at / 1000 - os.time()) < 60)
    assert.is_string(s.workspace)
    assert.equal("default", s.workspace_name)
  end)

  it("kong.log.serialize() of a request Kong answered itself", function()
    local res = get("/a1?refused=1", "nobody")
    h.res_status(401, res)
    local entry = h.wait_until(function() return logged("/a1?refused=1")[1] end, 10)
    local s = entry.serialized
    assert.equal(401, s.response.status)
    assert.equal("kong", s.source)
    assert.equal(-1, s.latencies.proxy)
    assert.is_nil(s.consumer)
    assert.is_nil(s.authenticated_entity)
    assert.equal(0, #s.tries) -- Kong prepares the balancer data when the route matches
    assert.equal(routes.a1.id, s.route.id)
  end)
end)
