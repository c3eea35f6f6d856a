-- Kong's stream subsystem (issue 12): a Rust plugin's `preread` runs for
-- TCP connections on `stream_listen` and can let a connection through or
-- close it (rs-stream-gate, src/plugins/stream_gate.rs); its `log` runs
-- when the connection closes; lines are tagged with the plugin's name.
--
-- Real Kong only: Debian's nginx has no stream Lua module, so the gateway
-- has no stream subsystem to run it in.
local h = require "spec.support.helpers"

if not h.is_kong then
  describe("stream phases (preread, log)", function()
    pending("real Kong only: Debian's nginx has no stream Lua module, so kong-rs-gateway has no stream subsystem")
  end)
  return
end

local helpers = require "spec.helpers"
local socket = require "socket"

local ALLOW_PORT, DENY_PORT = 19000, 19001
local MESSAGE = "echo, ping, pong. echo, ping, pong. echo, ping, pong.\n"

local function exchange(port)
  local tcp = socket.tcp()
  tcp:settimeout(5)
  assert(tcp:connect(helpers.get_proxy_ip(false), port))
  tcp:send(MESSAGE)
  local data, err, partial = tcp:receive("*a")
  tcp:close()
  return data or partial, err
end

describe("rs-stream-gate on Kong's stream subsystem", function()
  lazy_setup(function()
    local bp = helpers.get_db_utils(os.getenv("KONG_DATABASE") or "postgres",
                                    { "routes", "services", "plugins" },
                                    { "rs-stream-gate", "rs-hello" })
    local service = bp.services:insert({
      name = "tcp-echo",
      host = helpers.mock_upstream_host,
      port = helpers.mock_upstream_stream_port,
      protocol = "tcp",
    })
    for port, deny in pairs({ [ALLOW_PORT] = false, [DENY_PORT] = true }) do
      local route = bp.routes:insert({
        destinations = { { port = port } },
        protocols = { "tcp" },
        service = service,
      })
      bp.plugins:insert({
        name = "rs-stream-gate",
        route = { id = route.id },
        protocols = { "tcp" },
        config = { deny = deny },
      })
    end
    assert(helpers.start_kong({
      database = os.getenv("KONG_DATABASE") or "postgres",
      plugins = "bundled,rs-stream-gate,rs-hello",
      nginx_conf = "spec/fixtures/custom_nginx.template",
      stream_listen = helpers.get_proxy_ip(false) .. ":" .. ALLOW_PORT .. ", " ..
                      helpers.get_proxy_ip(false) .. ":" .. DENY_PORT,
    }))
  end)

  lazy_teardown(function()
    helpers.stop_kong()
  end)

  it("lets a connection through when preread continues", function()
    local log_before = #h.error_log()
    assert.equal(MESSAGE, exchange(ALLOW_PORT))
    helpers.wait_until(function()
      local log = h.error_log():sub(log_before + 1)
      return log:find("[rs-stream-gate] rs-stream-gate preread: stream connection from ", 1, true)
         and log:find("[rs-stream-gate] rs-stream-gate log: stream connection closed", 1, true)
    end, 10)
  end)

  it("closes the connection when preread exits, before any upstream byte", function()
    local log_before = #h.error_log()
    local data = exchange(DENY_PORT)
    assert.equal("", data or "")
    helpers.wait_until(function()
      local log = h.error_log():sub(log_before + 1)
      return log:find("rs-stream-gate preread: stream connection from ", 1, true) ~= nil
    end, 10)
  end)

  it("may not be enabled on an HTTP-only Rust plugin's stream route", function()
    local admin = helpers.admin_client()
    local res = admin:post("/plugins", {
      body = { name = "rs-hello", protocols = { "tcp" }, config = { message = "hi" } },
      headers = { ["Content-Type"] = "application/json" },
    })
    local body = res:read_body()
    admin:close()
    assert.equal(400, res.status, body)
    assert.matches("protocols", body, 1, true)
  end)
end)
