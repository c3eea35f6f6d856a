-- __NAME__ through the Admin API and the proxy, in a real nginx worker: the
-- kong-rs gateway here, real Kong under Pongo (spec/support/helpers.lua).
local h = require "spec.support.helpers"

describe("__NAME__ (integration)", function()
  local admin, proxy

  lazy_setup(function()
    h.start({ plugins = { "__NAME__" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "with", paths = { "/with" } }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "deny", paths = { "/deny" } }))
    h.res_status(201, admin:post("/routes/with/plugins", { name = "__NAME__", config = { message = "from rust" } }))
    h.res_status(201, admin:post("/routes/deny/plugins",
                                 { name = "__NAME__", config = { message = "no", deny_status = 403 } }))
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("sets x-__NAME__ on proxied responses", function()
    local res = proxy:get("/with/x")
    h.res_status(200, res)
    assert.equal("from rust", res.headers["x-__NAME__"])
  end)

  it("answers deny_status with the message, without proxying", function()
    local res = proxy:get("/deny")
    assert.equal(403, res.status)
    assert.matches("no", res.body, nil, true)
  end)

  it("a config the Rust constructor refuses is a 400 at the Admin API", function()
    local res = admin:post("/plugins", { name = "__NAME__", config = { message = "" } })
    assert.equal(400, res.status, res.body)
    assert.matches("message must be non-empty", res.body, nil, true)
  end)
end)
