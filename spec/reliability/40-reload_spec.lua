-- Reload and restart (issue 4): `nginx -s reload` (HUP to the master) three
-- times under load loses no request (none unanswered, no non-2xx, every
-- response carries the plugin's header, one log line per answer); the
-- configuration survives a full restart of the gateway.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"

if h.skip_on_kong("reliability: reload under load, restart",
                  "gateway only: signals the nginx master found in the gateway's prefix") then
  return
end

describe("reliability: reload under load, restart", function()
  local admin, proxy

  lazy_setup(function()
    h.start({ plugins = { "rs-hello", "rs-file-log" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "r", paths = { "/r" } }))
    h.res_status(201, admin:post("/routes/r/plugins", { name = "rs-hello", config = { message = "reload" } }))
    h.res_status(201, admin:post("/routes/r/plugins", { name = "rs-file-log",
      config = { path = h.files_dir() .. "/reload.log" } }))
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("three HUPs under load: no request lost, every response had the plugin's header", function()
    local before = h.worker_pids()
    -- An exiting nginx worker closes its idle keepalive connections: a
    -- request written on one at that moment never reaches nginx. wrk counts
    -- it as an error; real clients resend it on a new connection (RFC 9112
    -- 9.3.1), and so does this client (once, only on a reused connection
    -- with nothing of an answer received). Anything else is a lost request.
    local connections, reloads = 16, 3
    local wait = S.retrying_client_background("http://127.0.0.1:" .. S.port("PROXY_PORT") .. "/r",
                                              6, connections, "X-Hello-From-Rust", "reload")
    local master = S.master_pid()
    for _ = 1, reloads do
      h.sleep(1.2)
      assert.is_true(S.sh("kill -HUP " .. master), "kill -HUP " .. master .. " failed")
    end
    local r, text = wait()
    assert.is_number(r.requests, text)
    assert.is_true(r.requests > 1000, text)
    assert.equal(0, r.lost, text)
    assert.equal(0, r.non2xx, text)
    assert.equal(0, r.unexpected, text)
    -- at most one close per connection per reload
    assert.is_true(r.retried <= connections * reloads, text)
    -- the reloads did happen: the workers are new
    h.wait_until(function()
      local now = h.worker_pids()
      return #now == #before and now[1] ~= before[1] and now[2] ~= before[2]
    end, 10)
    assert.equal(reloads, select(2, h.error_log():gsub("signal 1 %(SIGHUP%) received", "")))
    -- exactly one file-log line per answered request: every request nginx
    -- read was answered, and none of the resent ones had reached it before
    local lines
    h.wait_until(function()
      lines = #S.read_lines(h.files_dir() .. "/reload.log")
      return lines >= r.requests
    end, 10)
    h.sleep(0.5)
    lines = #S.read_lines(h.files_dir() .. "/reload.log")
    assert.equal(r.requests, lines, text)
    assert.falsy(h.error_log():find("exited on signal", 1, true))
  end)

  it("the configuration survives a full restart", function()
    h.restart()
    admin, proxy = h.admin(), h.proxy()
    -- the spec adapter picks new ports on restart: point the stored service
    -- at the new echo upstream (the service itself survived)
    h.res_status(200, admin:patch("/services/svc", { url = h.upstream_url() }))
    local res = proxy:get("/r")
    h.res_status(200, res)
    assert.equal("reload", res.headers["x-hello-from-rust"])
    local plugins = admin:get("/plugins").json.data
    assert.equal(2, #plugins)
  end)
end)
