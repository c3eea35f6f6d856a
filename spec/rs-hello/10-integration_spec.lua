-- rs-hello through the Admin API and the proxy, in a real nginx worker
-- (kong-rs-gateway here, Kong under Pongo: see spec/support/helpers.lua).
local h = require "spec.support.helpers"

describe("rs-hello (integration)", function()
  local admin, proxy, plugin_id

  lazy_setup(function()
    h.start({ plugins = { "rs-hello" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "hello-svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/hello-svc/routes", { name = "hello", paths = { "/hello" } }))
    h.res_status(201, admin:post("/services/hello-svc/routes", { name = "plain", paths = { "/plain" } }))
    local res = admin:post("/routes/hello/plugins", { name = "rs-hello", config = { message = "from rust" } })
    h.res_status(201, res)
    plugin_id = res.json.id
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("sets X-Hello-From-Rust on proxied responses", function()
    local res = proxy:get("/hello/some/path?x=1")
    h.res_status(200, res)
    assert.equal("from rust", res.headers["x-hello-from-rust"])
    local echoed = h.echo(res)
    assert.equal("GET", echoed.method)
  end)

  it("does not run on routes it is not configured for", function()
    local res = proxy:get("/plain")
    h.res_status(200, res)
    assert.is_nil(res.headers["x-hello-from-rust"])
  end)

  it("a PATCH of its config is seen by the next request on every worker", function()
    local workers = h.worker_pids()
    h.res_status(200, admin:patch("/plugins/" .. plugin_id, { config = { message = "patched" } }))
    if h.is_kong then
      -- Kong propagates through its cache: eventually, not necessarily next
      h.wait_until(function()
        return proxy:get("/hello").headers["x-hello-from-rust"] == "patched"
      end, 10)
    end
    local seen, nseen = {}, 0
    for _ = 1, 400 do
      local res = proxy:get("/hello")
      h.res_status(200, res)
      assert.equal("patched", res.headers["x-hello-from-rust"])
      local pid = h.echo(res).worker_pid
      if pid and not seen[pid] then
        seen[pid] = true
        nseen = nseen + 1
      end
      if nseen >= #workers and #workers > 0 then
        break
      end
    end
    if not h.is_kong then
      assert.equal(2, #workers)
      assert.equal(#workers, nseen, "not every worker answered within 400 requests")
    end
  end)

  it("answers deny_status with the message as body", function()
    h.res_status(200, admin:patch("/plugins/" .. plugin_id,
                                  { config = { message = "go away", deny_status = 403 } }))
    local res
    if h.is_kong then
      h.wait_until(function() res = proxy:get("/hello"); return res.status == 403 end, 10)
    end
    res = proxy:get("/hello")
    assert.equal(403, res.status)
    assert.matches("go away", res.body, 1, true)
    h.res_status(200, admin:patch("/plugins/" .. plugin_id, { config = { deny_status = ngx and ngx.null or require("cjson").null } }))
  end)

  it("refuses an invalid config with 400 and the Rust message", function()
    local res = admin:post("/plugins", { name = "rs-hello", config = { message = "x", deny_status = 200 } })
    h.res_status(400, res)
    assert.equal("schema violation", res.json.name)
    assert.matches("deny_status", res.body, 1, true)

    res = admin:post("/plugins", { name = "rs-hello", config = {} })
    h.res_status(400, res)
    assert.same({ config = { message = "required field missing" } }, res.json.fields)

    res = admin:post("/plugins", { name = "rs-hello", config = { message = "x", unknown = true } })
    h.res_status(400, res)
  end)
end)
