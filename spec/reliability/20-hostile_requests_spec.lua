-- Bad input, proxy side (issue 4): hostile requests reach every bundled
-- plugin (and rs-bench-json where JSON is expected) over raw sockets.
-- Nothing crashes (worker PIDs unchanged), nothing passes wrongly (rs-hello
-- with deny_status denies every one and the upstream never sees them;
-- rs-bench-json refuses invalid JSON with 400), and rs-file-log writes one
-- valid JSON line per request that reached the plugins.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"
local cjson = require "cjson.safe"

if h.skip_on_kong("reliability: hostile requests",
                  "gateway only: raw requests to the ports in the gateway's ports.env, the echo upstream's hit counter") then
  return
end

local MB = 1024 * 1024

local function req(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: localhost", "Connection: close" }
  for _, kv in ipairs(headers or {}) do
    lines[#lines + 1] = kv
  end
  if body and not table.concat(headers or {}, "\n"):lower():find("transfer-encoding", 1, true) then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local function repeated(name, n)
  local out = {}
  for i = 1, n do out[i] = name .. ": v" .. i end
  return out
end

-- name, function(prefix) -> raw request
local SHAPES = {
  { "no headers at all (HTTP/1.0)", function(p) return "GET " .. p .. " HTTP/1.0\r\n\r\n" end },
  { "plain GET", function(p) return req("GET", p) end },
  { "100 repeated headers", function(p) return req("GET", p, repeated("X-Multi", 100)) end },
  { "repeated Cookie and Accept", function(p)
      return req("GET", p, { "Cookie: a=1", "Cookie: b=2", "Accept: a/b", "Accept: c/d" }) end },
  { "non-UTF-8 header value", function(p) return req("GET", p, { "X-Bin: \255\254\128caf\233" }) end },
  { "control characters in a header value", function(p) return req("GET", p, { "X-Ctl: a\1b\27c\127d\te" }) end },
  { "7 KB header value", function(p) return req("GET", p, { "X-Long: " .. string.rep("x", 7 * 1024) }) end },
  { "64 KB header value (nginx refuses)", function(p) return req("GET", p, { "X-Huge: " .. string.rep("x", 64 * 1024) }) end },
  { "4 KB path", function(p) return req("GET", p .. "/" .. string.rep("a", 4 * 1024)) end },
  { "32 KB path (nginx refuses)", function(p) return req("GET", p .. "/" .. string.rep("a", 32 * 1024)) end },
  { "non-UTF-8 bytes in the path", function(p) return req("GET", p .. "/caf\233/\255\254") end },
  { "percent-encoded NUL in the path (nginx refuses)", function(p) return req("GET", p .. "/%00/x") end },
  { "percent-encoded bytes in the path, NUL in the query", function(p) return req("GET", p .. "/%FF%FE%0D%0A?q=%00%ff") end },
  { "empty body", function(p) return req("POST", p, { "Content-Type: application/json" }, "") end },
  { "invalid JSON", function(p) return req("POST", p, { "Content-Type: application/json" }, "{\"id\": ") end },
  { "non-UTF-8 JSON", function(p) return req("POST", p, { "Content-Type: application/json" }, "{\"id\":\"\255\254\"}") end },
  { "JSON nested 100,000 deep", function(p)
      return req("POST", p, { "Content-Type: application/json" }, string.rep("[", 100000)) end },
  { "JSON null", function(p) return req("POST", p, { "Content-Type: application/json" }, "null") end },
  { "JSON number overflow", function(p) return req("POST", p, { "Content-Type: application/json" }, "1e999999") end },
  { "chunked invalid JSON", function(p)
      return req("POST", p, { "Transfer-Encoding: chunked", "Content-Type: application/json" },
                 "5\r\n{\"a\":\r\n3\r\n[[[\r\n0\r\n\r\n") end },
  { "4 MB body (buffered to a temp file)", function(p)
      return req("POST", p, { "Content-Type: application/json" }, "{\"notes\":\"" .. string.rep("n", 4 * MB) .. "\"}") end },
  { "4 MB invalid JSON (buffered to a temp file)", function(p)
      return req("POST", p, { "Content-Type: application/json" }, string.rep("{", 4 * MB)) end },
  -- Kong sets no client_max_body_size on the proxy (0): it passes
  { "12 MB body (no size limit, like Kong)", function(p)
      return req("POST", p, { "Content-Type: application/octet-stream" }, string.rep("z", 12 * MB)) end },
}

-- statuses nginx answers itself before any plugin runs (malformed request)
local NGINX_REFUSALS = { [400] = true, [413] = true, [414] = true, [494] = true }

describe("reliability: hostile requests", function()
  local admin, workers, log_path

  lazy_setup(function()
    S.start({ plugins = { "rs-hello", "rs-file-log", "rs-bench-json" } })
    admin = h.admin()
    log_path = h.files_dir() .. "/hostile.log"
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    for _, r in ipairs({ "hello", "deny", "json" }) do
      h.res_status(201, admin:post("/services/svc/routes", { name = r, paths = { "/" .. r } }))
      h.res_status(201, admin:post("/routes/" .. r .. "/plugins", { name = "rs-file-log", config = { path = log_path } }))
    end
    h.res_status(201, admin:post("/routes/hello/plugins", { name = "rs-hello", config = { message = "hi" } }))
    h.res_status(201, admin:post("/routes/deny/plugins", { name = "rs-hello", config = { message = "denied", deny_status = 403 } }))
    h.res_status(201, admin:post("/routes/json/plugins", { name = "rs-bench-json" }))
    workers = h.worker_pids()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  local function run(prefix, label, make, check)
    local before_lines = #S.read_lines(log_path)
    local before_hits = S.upstream_hits(admin)
    local status, head, body = S.raw(S.port("PROXY_PORT"), make(prefix))
    assert.is_number(status, label .. ": no HTTP answer: " .. tostring(head):sub(1, 200))
    local hits = S.upstream_hits(admin) - before_hits
    if label:find("(nginx refuses", 1, true) then
      -- malformed at the HTTP level: nginx answers before any plugin runs
      assert.is_truthy(NGINX_REFUSALS[status], label .. ": " .. status)
      assert.equal(0, hits, label .. ": refused by nginx yet proxied")
      return
    end
    check(status, head, body, hits)
    -- rs-file-log: one valid JSON line for this request, with its status
    local lines
    h.wait_until(function()
      lines = S.read_lines(log_path)
      return #lines > before_lines
    end, 5)
    h.sleep(0.05)
    lines = S.read_lines(log_path)
    assert.equal(before_lines + 1, #lines, label .. ": one line per request")
    local entry = cjson.decode(lines[#lines])
    assert.is_table(entry, label .. ": not JSON: " .. lines[#lines]:sub(1, 200))
    assert.equal(status, entry.status, label)
    assert.is_not_nil(entry.method)
    assert.is_not_nil(entry.path)
  end

  for _, shape in ipairs(SHAPES) do
    local label, make = shape[1], shape[2]

    it("rs-hello (header): " .. label, function()
      run("/hello", label, make, function(status, head, _, hits)
        assert.equal(200, status, label)
        assert.matches("\r\nX%-Hello%-From%-Rust: hi\r\n", "\r\n" .. head .. "\r\n", nil)
        assert.equal(1, hits)
      end)
    end)

    it("rs-hello (deny_status 403) denies: " .. label, function()
      run("/deny", label, make, function(status, _, body, hits)
        assert.equal(403, status, label)
        assert.equal("denied", body)
        assert.equal(0, hits, label .. ": a denied request reached the upstream")
      end)
    end)

    it("rs-bench-json: " .. label, function()
      run("/json", label, make, function(status, _, body, hits)
        -- none of the shapes is a valid document: all refused before the upstream
        assert.equal(400, status, label .. ": " .. body:sub(1, 200))
        assert.matches("^{\"message\":\"", body)
        assert.equal(0, hits, label .. ": an invalid body reached the upstream")
      end)
    end)
  end

  it("the valid document passes rs-bench-json (the check above is not vacuous)", function()
    local f = assert(io.open(S.ROOT .. "/benches/data/valid.json"))
    local doc = f:read("*a")
    f:close()
    local status, _, body = S.raw(S.port("PROXY_PORT"), req("POST", "/json", { "Content-Type: application/json" }, doc))
    assert.equal(200, status, body)
  end)

  it("no worker died, the gateway still serves", function()
    assert.same(workers, h.worker_pids())
    assert.falsy(S.log_has_death(h.error_log()))
    local status = S.raw(S.port("PROXY_PORT"), req("GET", "/hello"))
    assert.equal(200, status)
  end)
end)
