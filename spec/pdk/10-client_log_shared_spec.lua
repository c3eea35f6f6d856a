-- The Rust PDK's kong.client.authenticate, whole consumer/credential
-- entities, kong.log.serialize and ngx.shared dicts, through rs-pdk-extras
-- (tests/plugins/src/pdk_extras.rs) in a real nginx worker. Written to pass
-- unchanged on kong-rs-gateway and on Kong 3.9.3 (Kong's spec.helpers).
--
-- The shared dict: one that exists on each backend without configuration.
-- The gateway declares `kong_rs` (gateway/conf/nginx.conf.tmpl; it also
-- holds the gateway's own configuration under other keys); Kong declares
-- `kong_rate_limiting_counters` (kong/templates/nginx_kong.lua, the
-- rate-limiting plugin's local counters, unused here). Every key the spec
-- writes starts with a per-run prefix.
local h = require "spec.support.helpers"
local cjson = require "cjson.safe"

local null = cjson.null
local DICT = h.is_kong and "kong_rate_limiting_counters" or "kong_rs"
local CREDENTIAL_ID = "c0ffee00-0000-4000-8000-00000000c0de"
local PREFIX = "rs-pdk-spec:" .. os.time() .. ":" .. math.random(1e6) .. ":"

local function decode_base64(s)
  return (require("mime").unb64(s))
end

-- the entity as the Lua PDK hands it back: no null fields
local function without_nulls(t)
  local out = {}
  for k, v in pairs(t) do
    if v ~= null then
      out[k] = v
    end
  end
  return out
end

describe("Rust PDK: authenticate, entities, serialize, shared dicts", function()
  local admin, proxy
  local alice, bob

  -- what the access phase reported: the answer's body, or the X-Probe header
  local function report(res)
    if res.headers["x-probe"] then
      return assert(cjson.decode(decode_base64(res.headers["x-probe"])))
    end
    return assert(res.json, "no report in: " .. tostring(res.body))
  end

  local function call(headers, path)
    local res = proxy:send({ method = "GET", path = path or "/extras", headers = headers })
    h.res_status(200, res)
    return report(res), res
  end

  local function auth(consumer, credential)
    return cjson.encode({ consumer = consumer, credential = credential })
  end

  -- runs shared dict operations; returns their results
  local function ops(list)
    local r = call({ ["X-Answer"] = "1", ["X-Ops"] = cjson.encode(list) })
    return r.ops, r.pid
  end

  lazy_setup(function()
    h.start({ plugins = { "rs-pdk-extras", "prio-low" } })
    admin, proxy = h.admin(), h.proxy()
    local function post(path, body)
      local res = admin:post(path, body)
      h.res_status(201, res)
      return res.json
    end
    post("/services", { name = "extras-svc", url = h.upstream_url() })
    post("/services/extras-svc/routes", { name = "extras", paths = { "/extras" } })
    post("/routes/extras/plugins", { name = "rs-pdk-extras", config = { dict = DICT } })
    alice = post("/consumers", { username = "alice", custom_id = "a-1", tags = { "t1", "t2" } })
    bob = post("/consumers", { username = "bob" })
    -- runs after rs-pdk-extras (priority 10 < 1250): sees its consumer
    post("/plugins", { name = "prio-low", config = { tag = "global" } })
    post("/consumers/alice/plugins", { name = "prio-low", config = { tag = "alice" } })
    h.settle()
    h.wait_until(function()
      local res = proxy:send({ method = "GET", path = "/extras", headers = { ["X-Answer"] = "1" } })
      return res.status == 200
    end, 20)
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("authenticate from Rust: Kong runs the consumer's plugins, get_consumer has every field", function()
    local credential = { id = CREDENTIAL_ID, consumer_id = alice.id }
    local r, res = call({ ["X-Auth"] = auth(alice, credential) })
    assert.equal("ok", r.authenticate)
    -- Kong's plugins iterator picked alice's configuration of prio-low
    assert.equal("prio-low:alice", res.headers["x-order"])
    local c = r.consumer.ok
    assert.equal(alice.id, c.id)
    assert.equal("alice", c.name)
    assert.same(without_nulls(alice), c.fields)
    assert.same({ "t1", "t2" }, c.fields.tags)
    assert.equal("a-1", c.fields.custom_id)
    assert.same({ id = CREDENTIAL_ID, name = null, fields = credential }, r.credential.ok)

    -- nobody authenticated: the global configuration, no consumer
    r, res = call({})
    assert.equal("prio-low:global", res.headers["x-order"])
    assert.same({ ok = null }, r.consumer)
    assert.same({ ok = null }, r.credential)

    -- a consumer alone (bob has no plugin of his own)
    r, res = call({ ["X-Auth"] = auth(bob) })
    assert.equal("ok", r.authenticate)
    assert.equal("prio-low:global", res.headers["x-order"])
    assert.equal("bob", r.consumer.ok.name)
    assert.same({ ok = null }, r.credential)
  end)

  it("authenticate's errors are Kong's; serialize outside the log phase is Kong's phase error", function()
    local function authenticate_error(value)
      local r = call({ ["X-Answer"] = "1", ["X-Auth"] = value })
      return r.authenticate, r
    end
    local cases = {
      { "{}", "either credential or consumer must be provided" },
      { '{"consumer": "bob"}', "consumer must be a table or nil" },
      { '{"credential": 42}', "credential must be a table or nil" },
    }
    for _, case in ipairs(cases) do
      local got, r = authenticate_error(case[1])
      assert.is_string(got)
      assert.truthy(got:find(case[2], 1, true), case[1] .. " gave " .. got)
      assert.same({ ok = null }, r.consumer)
    end
    local r = call({ ["X-Answer"] = "1" })
    assert.truthy(r.serialize:find("function cannot be called in access phase (only in: log)", 1, true),
                  r.serialize)
  end)

  it("kong.log.serialize() in the log phase: Kong's table as JSON", function()
    local id = PREFIX .. "log"
    local _, res = call({
      ["X-Auth"] = auth(alice, { id = CREDENTIAL_ID, consumer_id = alice.id }),
      ["X-Probe-Id"] = id,
      ["Authorization"] = "Basic c2VjcmV0",
    }, "/extras/log?q=1&q=2&flag")
    assert.equal("prio-low:alice", res.headers["x-order"])
    local entry = h.wait_until(function()
      local results = ops({ { op = "get", key = "rs-pdk-extras:log:" .. id } })
      return results[1].ok ~= null and cjson.decode(results[1].ok)
    end, 10)

    local s = entry.serialize.ok
    assert.is_table(s, cjson.encode(entry))
    assert.equal("GET", s.request.method)
    assert.equal("/extras/log?q=1&q=2&flag", s.request.uri)
    assert.same({ q = { "1", "2" }, flag = true }, s.request.querystring)
    assert.equal("REDACTED", s.request.headers.authorization)
    assert.equal(id, s.request.headers["x-probe-id"])
    assert.equal(200, s.response.status)
    assert.equal("prio-low:alice", s.response.headers["x-order"])
    assert.equal("upstream", s.source)
    assert.equal(alice.id, s.consumer.id)
    assert.equal("alice", s.consumer.username)
    assert.same({ "t1", "t2" }, s.consumer.tags)
    assert.same({ id = CREDENTIAL_ID, consumer_id = alice.id }, s.authenticated_entity)
    assert.equal("extras", s.route.name)
    assert.equal("extras-svc", s.service.name)
    assert.equal(1, #s.tries)
    for _, k in ipairs({ "kong", "proxy", "request" }) do
      assert.is_number(s.latencies[k], k)
    end
    assert.is_number(s.started_at)
    assert.equal("127.0.0.1", s.client_ip)
    -- authenticate is for access only; the consumer is still there in log
    assert.truthy(entry.authenticate:find("function cannot be called in log phase (only in: access)", 1, true),
                  entry.authenticate)
    assert.equal(alice.id, entry.consumer.ok.id)
  end)

  it("ngx.shared: get, set, add, incr, delete with ngx.shared's answers; a missing dict is an error", function()
    local k, n = PREFIX .. "k", PREFIX .. "n"
    local results = ops({
      { op = "get", key = k },
      { op = "set", key = k, value = "v1" },
      { op = "get", key = k },
      { op = "add", key = k, value = "v2" },
      { op = "get", key = k },
      { op = "add", key = PREFIX .. "k2", value = "w" },
      { op = "incr", key = n, by = 5, init = 0 },
      { op = "incr", key = n, by = -2 },
      { op = "get", key = n },
      { op = "incr", key = k },
      { op = "incr", key = PREFIX .. "none" },
      { op = "delete", key = k },
      { op = "get", key = k },
      { op = "get", key = "" },
      { op = "get", key = k, dict = "no_such_dict" },
    })
    local function ok(i) return results[i].ok end
    local function err(i) return results[i].err or ("no error: " .. cjson.encode(results[i])) end
    assert.equal(null, ok(1))
    assert.equal(true, ok(2))
    assert.equal("v1", ok(3))
    assert.equal(false, ok(4))
    assert.equal("v1", ok(5))
    assert.equal(true, ok(6))
    assert.equal(5, ok(7))
    assert.equal(3, ok(8))
    assert.equal("3", ok(9))
    assert.equal("ngx.shared." .. DICT .. ":incr: not a number", err(10))
    assert.equal("ngx.shared." .. DICT .. ":incr: not found", err(11))
    assert.equal(true, ok(12))
    assert.equal(null, ok(13))
    assert.equal("ngx.shared." .. DICT .. ":get: empty key", err(14))
    assert.truthy(err(15):find('"no_such_dict"', 1, true), err(15))
  end)

  it("ngx.shared: a ttl expires the key; incr's ttl applies to the initial value", function()
    local k, n = PREFIX .. "ttl", PREFIX .. "ttl-n"
    local results = ops({
      { op = "set", key = k, value = "soon", ttl = 0.3 },
      { op = "incr", key = n, by = 1, init = 10, ttl = 0.3 },
      { op = "incr", key = n, by = 1, ttl = 0.3 },
      { op = "get", key = k },
    })
    assert.equal(true, results[1].ok)
    assert.equal(11, results[2].ok)
    -- ngx.shared refuses init_ttl without init
    assert.truthy(results[3].err and results[3].err:find('must provide "init"', 1, true),
                  cjson.encode(results[3]))
    assert.equal("soon", results[4].ok)
    h.sleep(0.6)
    results = ops({ { op = "get", key = k }, { op = "get", key = n } })
    assert.same({ { ok = null }, { ok = null } }, results)
  end)

  it("ngx.shared is shared by every worker", function()
    local key = PREFIX .. "hits"
    -- Kong lists a worker once it has finished its init: wait for both
    local workers
    h.wait_until(function()
      workers = h.worker_pids()
      return #workers == 2
    end, 10)
    local seen, n, count = {}, 0, 0
    for i = 1, 400 do
      local results, pid = ops({ { op = "incr", key = key, by = 1, init = 0 } })
      count = i
      assert.equal(i, results[1].ok)
      if not seen[pid] then
        seen[pid] = true
        n = n + 1
      end
      if n == #workers and i >= 10 then
        break
      end
    end
    assert.equal(#workers, n)
    local results = ops({ { op = "get", key = key } })
    assert.equal(tostring(count), results[1].ok)
  end)
end)
