-- kong-rs-gateway Admin API: Kong's shapes and errors (kong/api/endpoints.lua,
-- kong/db/errors.lua). Uses pure-Lua fixture plugins only.
local h = require "spec.support.helpers"

if h.skip_on_kong("kong-rs-gateway Admin API", "gateway only: tests the gateway's own Admin API emulation") then
  return
end

local PLUGINS = { "echo-conf", "prio-high", "prio-low", "resp-phase" }

describe("kong-rs-gateway Admin API", function()
  local admin

  lazy_setup(function()
    h.start({ plugins = PLUGINS })
    admin = h.admin()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("GET / and /status answer", function()
    local res = admin:get("/")
    h.res_status(200, res)
    assert.equal("Welcome to kong", res.json.tagline)
    assert.truthy(res.json.node_id:match("^%x+%-"))
    h.res_status(200, admin:get("/status"))
    assert.equal(true, admin:get("/status").json.database.reachable)
  end)

  it("has no debug endpoints unless started with --debug (KONG_RS_DEBUG=1)", function()
    assert.same({ message = "Not found" }, admin:get("/kong-rs/upstream").json)
    h.res_status(404, admin:get("/kong-rs/plugins/rs-hello/stats?gc=true"))
    h.stop()
    h.start({ plugins = PLUGINS, debug = true })
    admin = h.admin()
    assert.is_number(admin:get("/kong-rs/upstream").json.hits)
    h.stop()
    h.start({ plugins = PLUGINS })
    admin = h.admin()
  end)

  it("lists enabled plugins", function()
    local res = admin:get("/plugins/enabled")
    h.res_status(200, res)
    table.sort(res.json.enabled_plugins)
    assert.same({ "echo-conf", "prio-high", "prio-low", "resp-phase" }, res.json.enabled_plugins)
  end)

  it("serves a plugin schema without functions", function()
    local res = admin:get("/schemas/plugins/echo-conf")
    h.res_status(200, res)
    assert.equal("echo-conf", res.json.name)
    assert.equal("value", next(res.json.fields[2].config.fields[1]))
    -- the config record's custom_validator is a function: omitted
    assert.is_nil(res.body:find("custom_validator", 1, true))
  end)

  describe("services", function()
    it("creates from url, with Kong's defaults", function()
      local res = admin:post("/services", { name = "svc-a", url = "http://127.0.0.1:9/base" })
      h.res_status(201, res)
      local s = res.json
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-%x%x%x%x%-%x+$", s.id)
      assert.equal("http", s.protocol)
      assert.equal("127.0.0.1", s.host)
      assert.equal(9, s.port)
      assert.equal("/base", s.path)
      assert.equal(5, s.retries)
      assert.equal(60000, s.read_timeout)
      assert.is_number(s.created_at)
      assert.is_nil(s.url)
    end)

    it("accepts form bodies with typed fields", function()
      local res = admin:post("/services", "name=svc-form&host=example.test&port=8080",
                             { ["Content-Type"] = "application/x-www-form-urlencoded" })
      h.res_status(201, res)
      assert.equal(8080, res.json.port)
    end)

    it("gets by id and by name; 404 with Kong's body", function()
      local created = admin:get("/services/svc-a").json
      assert.equal("svc-a", admin:get("/services/" .. created.id).json.name)
      local res = admin:get("/services/does-not-exist")
      h.res_status(404, res)
      assert.same({ message = "Not found" }, res.json)
    end)

    it("lists with data and next", function()
      local res = admin:get("/services")
      h.res_status(200, res)
      assert.equal(2, #res.json.data)
      assert.is_true(res.body:find('"next":null', 1, true) ~= nil)
      local page = admin:get("/services?size=1")
      assert.equal(1, #page.json.data)
      assert.equal("1", page.json.offset)
    end)

    it("refuses a duplicate name with 409", function()
      local res = admin:post("/services", { name = "svc-a", host = "x.test" })
      h.res_status(409, res)
      assert.same({
        code = 5,
        name = "unique constraint violation",
        message = "UNIQUE violation detected on '{name=\"svc-a\"}'",
        fields = { name = "svc-a" },
      }, res.json)
    end)

    it("refuses invalid JSON with 400", function()
      local res = admin:send({ method = "POST", path = "/services", body = "{\"name\":",
                               headers = { ["Content-Type"] = "application/json" } })
      h.res_status(400, res)
      assert.same({ message = "Cannot parse JSON body" }, res.json)
    end)

    it("reports schema violations like Kong", function()
      local res = admin:post("/services", { name = "bad", host = "x.test", port = 70000, foo = 1 })
      h.res_status(400, res)
      assert.same({
        code = 2,
        name = "schema violation",
        message = "2 schema violations (foo: unknown field; port: value should be between 0 and 65535)",
        fields = { foo = "unknown field", port = "value should be between 0 and 65535" },
      }, res.json)
    end)

    it("PATCH updates, PUT upserts by name, DELETE answers 204", function()
      local res = admin:patch("/services/svc-form", { port = 8081 })
      h.res_status(200, res)
      assert.equal(8081, res.json.port)
      assert.equal("example.test", res.json.host)

      res = admin:put("/services/svc-put", { host = "put.test" })
      h.res_status(200, res)
      assert.equal("svc-put", res.json.name)
      local id = res.json.id
      res = admin:put("/services/svc-put", { host = "put2.test" })
      h.res_status(200, res)
      assert.equal(id, res.json.id)
      assert.equal("put2.test", res.json.host)

      h.res_status(204, admin:delete("/services/svc-put"))
      h.res_status(404, admin:get("/services/svc-put"))
      h.res_status(204, admin:delete("/services/svc-put"))
    end)

    it("survives absurd and non-UTF-8 input with 4xx", function()
      local bad = {
        { "POST", "/services", "{\"name\":\"\255\254\",\"host\":\"x\"}" },
        { "POST", "/plugins", "{\"name\":\"echo-conf\",\"config\":{\"value\":\"\255\"" },
        { "POST", "/plugins", "{\"name\":\"echo-conf\",\"config\":[1,2,3]}" },
        { "POST", "/plugins", "{\"name\":\"echo-conf\",\"config\":{\"value\":\"x\",\"status\":1e999}}" },
        { "POST", "/plugins", "{\"name\":\"echo-conf\",\"config\":{\"value\":\"x\",\"limits\":{\"a\":-1}}}" },
        { "POST", "/plugins", string.rep("[", 5000) },
        { "POST", "/routes", "{\"paths\":[\"/a\",{\"x\":1}]}" },
        { "POST", "/plugins", "[]" },
        { "PATCH", "/services/svc-a", "{\"port\":\"80\"}" },
      }
      for _, case in ipairs(bad) do
        local res = admin:send({ method = case[1], path = case[2], body = case[3],
                                 headers = { ["Content-Type"] = "application/json" } })
        assert(res.status >= 400 and res.status < 500,
               case[3]:sub(1, 60) .. " -> " .. res.status .. " " .. res.body)
      end
      -- still healthy
      h.res_status(200, admin:get("/services/svc-a"))
    end)
  end)

  describe("routes", function()
    it("are created nested under a service", function()
      local res = admin:post("/services/svc-a/routes", { name = "r-a", paths = { "/a" } })
      h.res_status(201, res)
      assert.same({ "/a" }, res.json.paths)
      assert.equal(true, res.json.strip_path)
      assert.equal(false, res.json.preserve_host)
      assert.same({ "http", "https" }, res.json.protocols)
      local svc = admin:get("/services/svc-a").json
      assert.same({ id = svc.id }, res.json.service)
      local list = admin:get("/services/svc-a/routes")
      assert.equal(1, #list.json.data)
      assert.equal(svc.id, admin:get("/routes/r-a/service").json.id)
    end)

    it("need methods, hosts or paths", function()
      local res = admin:post("/routes", { name = "r-empty" })
      h.res_status(400, res)
      assert.equal("schema violation (must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http')",
                   res.json.message)
    end)

    it("refuse regex paths with a clear message", function()
      local res = admin:post("/routes", { paths = { "~/x$" } })
      h.res_status(400, res)
      assert.matches("not supported", res.json.fields.paths)
    end)

    it("refuse a service that does not exist", function()
      local res = admin:post("/routes", { paths = { "/z" }, service = { id = "7f2ea9d8-4bd4-4b3b-9b6a-7e3e7c0a1a11" } })
      h.res_status(400, res)
      assert.equal("foreign key violation", res.json.name)
    end)

    it("keep a service with routes from being deleted", function()
      local res = admin:delete("/services/svc-a")
      h.res_status(400, res)
      assert.equal("an existing 'routes' entity references this 'services' entity", res.json.message)
    end)
  end)

  describe("plugins", function()
    it("validate config with the plugin schema and fill defaults", function()
      local res = admin:post("/routes/r-a/plugins", { name = "echo-conf", config = { value = "v1" } })
      h.res_status(201, res)
      assert.same({ "grpc", "grpcs", "http", "https" }, res.json.protocols)
      assert.equal(true, res.json.enabled)
      assert.equal("none", res.json.config.mode)
      assert.equal(403, res.json.config.status)
      assert.is_true(res.body:find('"tags":[]', 1, true) ~= nil)
    end)

    it("accept Kong's form syntax", function()
      local res = admin:post("/services/svc-a/plugins",
        "name=echo-conf&config.value=form&config.status=401&config.tags[]=a&config.tags[]=b",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      h.res_status(201, res)
      assert.equal(401, res.json.config.status)
      assert.same({ "a", "b" }, res.json.config.tags)
    end)

    it("report a missing required field", function()
      local res = admin:post("/plugins", { name = "echo-conf", config = {} })
      h.res_status(400, res)
      assert.same({
        code = 2,
        name = "schema violation",
        message = "schema violation (config.value: required field missing)",
        fields = { config = { value = "required field missing" } },
      }, res.json)
    end)

    it("put the custom_validator message on the config field", function()
      local res = admin:post("/plugins", { name = "echo-conf", config = { value = "invalid" } })
      h.res_status(400, res)
      assert.same({ config = "value must not be 'invalid'" }, res.json.fields)
      assert.equal("schema violation (config: value must not be 'invalid')", res.json.message)
    end)

    it("reject unknown fields and plugins", function()
      local res = admin:post("/plugins", { name = "echo-conf", config = { value = "x", nope = true } })
      h.res_status(400, res)
      assert.same({ config = { nope = "unknown field" } }, res.json.fields)
      res = admin:post("/plugins", { name = "not-a-plugin" })
      h.res_status(400, res)
      assert.equal("plugin 'not-a-plugin' not enabled; add it to the 'plugins' configuration property",
                   res.json.fields.name)
    end)

    it("are unique per name and scope", function()
      local res = admin:post("/routes/r-a/plugins", { name = "echo-conf", config = { value = "again" } })
      h.res_status(409, res)
      assert.equal("unique constraint violation", res.json.name)
    end)

    it("PATCH merges config", function()
      local p = admin:get("/routes/r-a/plugins").json.data[1]
      local res = admin:patch("/plugins/" .. p.id, { config = { status = 429 } })
      h.res_status(200, res)
      assert.equal("v1", res.json.config.value)
      assert.equal(429, res.json.config.status)
    end)

    it("are deleted with their route", function()
      local r = admin:post("/services/svc-a/routes", { name = "r-tmp", paths = { "/tmp" } }).json
      local p = admin:post("/routes/r-tmp/plugins", { name = "prio-low" }).json
      h.res_status(204, admin:delete("/routes/" .. r.id))
      h.res_status(404, admin:get("/plugins/" .. p.id))
    end)
  end)
end)
