-- kong-rs-gateway PDK: values as Kong documents them, service request
-- rewriting, phase restrictions with Kong's messages.
local h = require "spec.support.helpers"

if h.skip_on_kong("kong-rs-gateway PDK", "gateway only: pdk-probe fixture and exact gateway values") then
  return
end

describe("kong-rs-gateway PDK", function()
  local admin, proxy

  lazy_setup(function()
    h.start({ plugins = { "pdk-probe" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "probe-svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/probe-svc/routes", { name = "report", paths = { "/report" } }))
    h.res_status(201, admin:post("/services/probe-svc/routes", { name = "rewrite", paths = { "/rewrite" } }))
    h.res_status(201, admin:post("/routes/report/plugins", { name = "pdk-probe", config = { mode = "report" } }))
    h.res_status(201, admin:post("/routes/rewrite/plugins", { name = "pdk-probe", config = { mode = "rewrite" } }))
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("kong.request / client / router / node return Kong's values", function()
    local res = proxy:send({ method = "POST", path = "/report/a%20b?a=1&a=2&b=x",
                             headers = { ["X-Test"] = "t1", ["Content-Type"] = "text/plain",
                                         ["X-Joined"] = "a, b" },
                             body = "hello body" })
    h.res_status(200, res)
    assert.equal("yes", res.headers["x-probe"])
    local j = res.json
    assert.equal("POST", j.method)
    assert.equal("/report/a b", j.path) -- normalised, as Kong's get_path
    assert.equal("/report/a%20b", j.raw_path)
    assert.equal("/report/a%20b?a=1&a=2&b=x", j.path_with_query)
    assert.equal("a=1&a=2&b=x", j.raw_query)
    assert.equal("1", j.query_arg)
    assert.same({ "1", "2" }, j.query.a)
    assert.equal("t1", j.header)
    assert.equal("t1", j.headers_x_test)
    assert.equal("http", j.scheme)
    assert.equal("127.0.0.1", j.host)
    assert.is_number(j.port)
    assert.equal(1.1, j.http_version)
    assert.equal("hello body", j.raw_body)
    assert.is_true(j.start_time_ok)
    assert.equal("127.0.0.1", j.client_ip)
    assert.is_true(j.client_port_ok)
    assert.equal("report", j.route)
    assert.equal("probe-svc", j.service)
    assert.equal(admin:get("/").json.node_id, j.node_id)
    assert.equal("http", j.subsystem)
    assert.is_true(j.requests_counted)
    assert.equal("a, b", j.header_joined) -- one header holding ", ": its value
    assert.is_nil(j.raw_body_error)
    assert.equal("3.9.3", j.version)
  end)

  it("kong.request.get_header returns the first of repeated headers, as Kong 3.9", function()
    -- nginx 1.22 gives the first value of most repeated headers and joins
    -- X-Forwarded-For and Cookie; Kong's nginx (1.25) joins every one with
    -- ", ": either way Kong's get_header (kong/tools/http.lua) answers the
    -- first value
    local S = require "spec.reliability.support"
    local status, _, body = S.raw(S.port("PROXY_PORT"), table.concat({
      "GET /report HTTP/1.1", "Host: localhost", "Connection: close",
      "X-Twice: first", "X-Twice: second", "X-Test: a", "X-Test: b", "", "" }, "\r\n"))
    assert.equal(200, status, body)
    local j = require("cjson").decode(body)
    assert.equal("first", j.header_first)
    assert.equal("a", j.header)
    assert.same({ "a", "b" }, j.headers_x_test)
  end)

  it("kong.request.get_raw_body refuses a body buffered to a file, with Kong's message", function()
    local res = proxy:send({ method = "POST", path = "/report", headers = { ["Content-Type"] = "text/plain" },
                             body = string.rep("x", 16 * 1024) })
    h.res_status(200, res)
    assert.is_nil(res.json.raw_body)
    assert.equal("request body did not fit into client body buffer, consider raising 'client_body_buffer_size'",
                 res.json.raw_body_error)
    -- 8 KB stays in memory (client_body_buffer_size 8k; nginx allows a
    -- quarter more for a body of known length)
    res = proxy:send({ method = "POST", path = "/report", headers = { ["Content-Type"] = "text/plain" },
                       body = string.rep("y", 8 * 1024) })
    h.res_status(200, res)
    assert.equal(8 * 1024, #res.json.raw_body)
  end)

  it("kong.service.request rewrites the upstream request", function()
    local res = proxy:send({ method = "GET", path = "/rewrite/orig?z=9",
                             headers = { ["X-Remove-Me"] = "1" } })
    h.res_status(200, res)
    local e = h.echo(res)
    assert.equal("PUT", e.method)
    assert.equal("/rewritten", e.path)
    assert.equal("x=1&y=2", res.json.query)
    assert.equal("1", e.headers["x-added"])
    assert.same({ "a", "b" }, e.headers["x-multi"])
    assert.is_nil(e.headers["x-remove-me"])
    assert.equal("new body", e.body)
    assert.equal("200", res.headers["x-service-status"])
    assert.equal("present", res.headers["x-service-header"])
  end)

  it("enforces Kong's phase restrictions", function()
    local res = proxy:get("/rewrite/x")
    assert.equal("function cannot be called in header_filter phase (only in: rewrite, access, balancer)",
                 res.headers["x-phase-error"])
    h.wait_until(function()
      return h.error_log():find("pdk-probe log phase exit: function cannot be called in log phase " ..
                                "(only in: rewrite, access, response, header_filter, error, admin_api)", 1, true)
    end, 5)
    assert.matches("[pdk-probe] pdk-probe log phase exit", h.error_log(), 1, true)
  end)
end)
