-- kong-rs-gateway runloop: router, plugin precedence and order, access
-- semantics, conf identity, cross-worker propagation, PDK phase checks,
-- buffered `response` phase. Pure-Lua fixture plugins only.
local h = require "spec.support.helpers"

if h.skip_on_kong("kong-rs-gateway proxy", "gateway only: fixture plugins, worker pids from the echo upstream") then
  return
end

describe("kong-rs-gateway proxy", function()
  local admin, proxy

  local function plugin(path, body)
    local res = admin:post(path, body)
    h.res_status(201, res)
    return res.json
  end

  lazy_setup(function()
    h.start({ plugins = { "echo-conf", "prio-high", "prio-low", "resp-phase" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "echo", url = h.upstream_url("/up") }))
    h.res_status(201, admin:post("/services", { name = "echo2", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/echo/routes", { name = "short", paths = { "/api" } }))
    h.res_status(201, admin:post("/services/echo/routes", { name = "long", paths = { "/api/v2" } }))
    h.res_status(201, admin:post("/services/echo/routes", { name = "nostrip", paths = { "/keep" }, strip_path = false }))
    h.res_status(201, admin:post("/services/echo2/routes", { name = "host", hosts = { "example.test" },
                                                             preserve_host = true }))
    h.res_status(201, admin:post("/services/echo2/routes", { name = "wild", hosts = { "*.wild.test" } }))
    h.res_status(201, admin:post("/services/echo2/routes", { name = "post", methods = { "POST" }, paths = { "/m" } }))
  end)

  lazy_teardown(function()
    h.stop()
  end)

  describe("router", function()
    it("answers 404 like Kong when no route matches", function()
      local res = proxy:get("/nothing-here")
      h.res_status(404, res)
      assert.same({ message = "no Route matched with those values" }, res.json)
    end)

    it("prefers the longest prefix and strips it", function()
      local e = h.echo(proxy:get("/api/v2/users?x=1"))
      assert.equal("/up/users", e.path)
      e = h.echo(proxy:get("/api/v1/users"))
      assert.equal("/up/v1/users", e.path)
      e = h.echo(proxy:get("/api"))
      assert.equal("/up", e.path)
    end)

    it("keeps the path with strip_path=false and forwards the query", function()
      local res = proxy:get("/keep/a?b=1&c=%20")
      local e = h.echo(res)
      assert.equal("/up/keep/a", e.path)
      assert.equal("b=1&c=%20", res.json.query)
    end)

    it("matches hosts (exact and wildcard) and preserves Host when asked", function()
      local e = h.echo(proxy:get("/x", nil, { Host = "example.test" }))
      assert.equal("example.test", e.headers.host)
      e = h.echo(proxy:get("/x", nil, { Host = "a.wild.test" }))
      assert.matches("^127%.0%.0%.1:%d+$", e.headers.host)
      h.res_status(404, proxy:get("/x", nil, { Host = "other.test" }))
    end)

    it("routes on the normalised path, as Kong (kong/tools/uri.lua normalize)", function()
      -- dot segments leave the route's prefix: no match
      assert.same({ message = "no Route matched with those values" }, proxy:get("/api/../nothing").json)
      h.res_status(404, proxy:get("/api/%2e%2e/v2//users"))
      -- ... or enter it
      assert.equal("/up/x", h.echo(proxy:get("/nothing/../api/v2/x")).path)
      assert.equal("/up/v1/users", h.echo(proxy:get("/api/v2/../v1//users")).path)
      -- decoded for routing, escaped again for the upstream
      assert.equal("/up/a%20b", h.echo(proxy:get("/api/a%20b")).path)
      assert.equal("/up/users", h.echo(proxy:get("/api/v%32/users")).path)
    end)

    it("matches methods", function()
      h.res_status(404, proxy:get("/m"))
      local e = h.echo(proxy:post("/m", { a = 1 }))
      assert.equal("POST", e.method)
      assert.equal('{"a":1}', e.body)
    end)

    it("answers a repeated request as the first time, and forgets its answers when routes change", function()
      -- answers are cached per method, host and path (as Kong's router)
      for _ = 1, 3 do
        h.res_status(404, proxy:get("/m"))
        assert.equal("POST", h.echo(proxy:post("/m", { a = 1 })).method)
        h.res_status(404, proxy:get("/x", nil, { Host = "other.test" }))
        assert.equal("example.test", h.echo(proxy:get("/x", nil, { Host = "example.test" })).headers.host)
      end
      -- enough misses for both workers to have cached the 404
      for _ = 1, 10 do
        h.res_status(404, proxy:get("/later"))
      end
      h.res_status(201, admin:post("/services/echo/routes", { name = "later", paths = { "/later" } }))
      for _ = 1, 10 do
        assert.equal("/up", h.echo(proxy:get("/later")).path)
      end
    end)

    it("answers 502 with Kong's message when the upstream is down", function()
      h.res_status(201, admin:post("/services", { name = "dead", url = "http://127.0.0.1:1" }))
      h.res_status(201, admin:post("/services/dead/routes", { paths = { "/dead" } }))
      local res = proxy:get("/dead")
      h.res_status(502, res)
      assert.same({ message = "An invalid response was received from the upstream server" }, res.json)
    end)
  end)

  describe("plugins", function()
    local route_plugin

    lazy_setup(function()
      plugin("/plugins", { name = "echo-conf", config = { value = "global" } })
      plugin("/services/echo/plugins", { name = "echo-conf", config = { value = "service" } })
      route_plugin = plugin("/routes/long/plugins", { name = "echo-conf", config = { value = "route" } })
      plugin("/plugins", { name = "prio-low", config = { tag = "g" } })
      plugin("/routes/long/plugins", { name = "prio-high", config = { tag = "r" } })
    end)

    it("apply with Kong's precedence: route > service > global", function()
      assert.equal("route", proxy:get("/api/v2").headers["x-echo-value"])
      assert.equal("service", proxy:get("/api").headers["x-echo-value"])
      assert.equal("global", proxy:get("/x", nil, { Host = "example.test" }).headers["x-echo-value"])
      -- the conf reaches the upstream request too (kong.service.request)
      assert.equal("route", h.echo(proxy:get("/api/v2")).headers["x-echo-value"])
    end)

    it("run by PRIORITY, highest first", function()
      assert.equal("prio-high:r,prio-low:g", proxy:get("/api/v2").headers["x-order"])
      assert.equal("prio-low:g", proxy:get("/api").headers["x-order"])
    end)

    it("get a conf table with Kong's run-time keys and without nulls", function()
      local res = proxy:get("/api/v2")
      h.res_status(200, res)
      -- config fields (limits and nested are null: absent, as Kong's DAO
      -- reads them) and the keys of kong/runloop/plugins_iterator.lua
      assert.equal("__key__,__plugin_id,__seq__,__ws_id,mode,route_id,status,tags,value",
                   res.headers["x-conf-keys"])
      -- kong.db.plugins:cache_key(name, route, service, consumer, nil, ws_id)
      local key = "plugins:echo-conf:" .. route_plugin.route.id .. "::::"
      assert.equal(key, res.headers["x-conf-key"]:sub(1, #key))
      assert.matches("^%x+%-[%x-]+$", res.headers["x-conf-key"]:sub(#key + 1))
      assert.equal("number", res.headers["x-conf-seq"])
      local global = proxy:get("/x", nil, { Host = "example.test" })
      assert.matches("^plugins:echo%-conf:::::%x+%-[%x-]+$", global.headers["x-conf-key"])
      assert.equal(res.headers["x-conf-key"]:sub(#key + 1), global.headers["x-conf-key"]:sub(#"plugins:echo-conf:::::" + 1))
      local service = proxy:get("/api")
      assert.matches("service_id", service.headers["x-conf-keys"], 1, true)
      assert.not_matches("route_id", service.headers["x-conf-keys"], 1, true)
    end)

    it("get the same conf table until a plugin is written, then every plugin a new one (as Kong)", function()
      -- a single worker, so that the ids are comparable
      local function conf_ids(n)
        local pid, id
        for _ = 1, n do
          local res = proxy:get("/api/v2")
          local p = h.echo(res).worker_pid
          pid = pid or p
          if p == pid then
            id = id or res.headers["x-conf-id"]
            assert.equal(id, res.headers["x-conf-id"])
            assert.equal(route_plugin.id, res.headers["x-plugin-id"])
          end
        end
        return pid, id
      end
      local pid, id = conf_ids(50)
      local function id_on(worker)
        for _ = 1, 100 do
          local res = proxy:get("/api/v2")
          if h.echo(res).worker_pid == worker then
            return res.headers["x-conf-id"], res
          end
        end
        error("worker " .. worker .. " took none of 100 requests")
      end
      -- routes and services do not touch the plugins iterator
      h.res_status(201, admin:post("/services", { name = "unrelated", host = "u.test" }))
      h.res_status(201, admin:post("/services/unrelated/routes", { name = "unrelated", paths = { "/unrelated" } }))
      assert.equal(id, id_on(pid))
      -- a write to another plugin rebuilds every conf table
      local other = plugin("/routes/unrelated/plugins", { name = "prio-low", config = { tag = "u" } })
      local id2 = id_on(pid)
      assert.not_equal(id, id2)
      h.res_status(204, admin:delete("/plugins/" .. other.id))
      local id3 = id_on(pid)
      assert.not_equal(id2, id3)
      -- and so does a write to this one
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { config = { value = "route2" } }))
      local id4, res = id_on(pid)
      assert.not_equal(id3, id4)
      assert.equal("route2", res.headers["x-echo-value"])
    end)

    it("see a config change on the next request of every worker", function()
      local workers = h.worker_pids()
      assert.equal(2, #workers)
      for round = 1, 3 do
        local value = "round" .. round
        h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { config = { value = value } }))
        local seen, n = {}, 0
        for _ = 1, 400 do
          local res = proxy:get("/api/v2")
          assert.equal(value, res.headers["x-echo-value"])
          local pid = h.echo(res).worker_pid
          if not seen[pid] then seen[pid] = true; n = n + 1 end
          if n == #workers then break end
        end
        assert.equal(#workers, n)
      end
    end)

    it("delay kong.response.exit in access until the phase ends", function()
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id,
                                    { config = { value = "stop", mode = "exit", status = 401 } }))
      local res = proxy:get("/api/v2")
      h.res_status(401, res)
      assert.same({ message = "stop" }, res.json)
      assert.equal("application/json; charset=utf-8", res.headers["content-type"])
      -- prio-low (lower priority) did not run after the exit; prio-high did
      assert.equal("prio-high:r", res.headers["x-order"])
      -- header_filter still ran, with the plugin's own kong.ctx.plugin
      assert.equal("true", res.headers["x-plugin-ctx"])
      -- nothing after the exit line ran
      assert.is_nil(h.error_log():find("not reached", 1, true))
    end)

    it("answer 500 and log when an access handler raises", function()
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { config = { mode = "error" } }))
      local res = proxy:get("/api/v2")
      h.res_status(500, res)
      assert.same({ message = "An unexpected error occurred" }, res.json)
      h.wait_until(function()
        return h.error_log():find("[echo-conf] ", 1, true) and h.error_log():find("echo-conf failed on purpose", 1, true)
      end, 5)
    end)

    it("raise Kong's phase error for a PDK call in the wrong phase", function()
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { config = { mode = "forbidden" } }))
      h.res_status(500, proxy:get("/api/v2"))
      h.wait_until(function()
        return h.error_log():find("function cannot be called in access phase (only in: response, " ..
                                  "header_filter, body_filter, log, error, admin_api)", 1, true)
      end, 5)
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { config = { mode = "none" } }))
    end)

    it("run global plugins in rewrite, where exit is immediate", function()
      local res = proxy:get("/api", nil, { ["X-Rewrite-Exit"] = "1" })
      h.res_status(418, res)
      assert.same({ message = "exit in rewrite" }, res.json)
    end)

    it("skip disabled plugins", function()
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { enabled = false }))
      assert.equal("service", proxy:get("/api/v2").headers["x-echo-value"])
      h.res_status(200, admin:patch("/plugins/" .. route_plugin.id, { enabled = true }))
      assert.equal("stop", proxy:get("/api/v2").headers["x-echo-value"])
    end)

    it("buffer the response for a `response` handler", function()
      local p = plugin("/routes/short/plugins", { name = "resp-phase" })
      local res = proxy:get("/api/buffered")
      h.res_status(200, res)
      assert.equal("200", res.headers["x-service-status"])
      assert.equal(tostring(#res.body), res.headers["x-body-length"])
      assert.equal("/up/buffered", h.echo(res).path)
      h.res_status(200, admin:patch("/plugins/" .. p.id, { config = { replace = true } }))
      res = proxy:get("/api/buffered")
      h.res_status(201, res)
      assert.same({ replaced = true }, res.json)
    end)
  end)
end)
