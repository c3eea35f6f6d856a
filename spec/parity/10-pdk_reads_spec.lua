-- PDK parity (issue 12): every read the Rust PDK offers, made by a Rust
-- plugin (rs-pdk-probe) and by its Lua twin (lua-pdk-probe) on the same
-- requests, must give the same answers: the same values, the same errors
-- (a call Kong refuses in a phase fails on both sides), and the same log
-- lines tagged with each plugin's own name. Runs unchanged on the gateway
-- and on real Kong (Kong's spec.helpers): Kong is the reference, the
-- gateway must agree with it, and Rust must agree with Lua on both.
--
-- Writes are compared the same way in spec/gateway/50-direct_calls_spec.lua
-- (rs-header-ops and lua-header-ops).
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"
local cjson = require "cjson.safe"

local function proxy_port()
  if h.is_kong then
    return require("spec.helpers").get_proxy_port()
  end
  return S.port("PROXY_PORT")
end

local function decode_base64(s)
  return (require("mime").unb64(s))
end

-- The same request for both plugins: PROBE is the route's path prefix.
local function chunked(body)
  return ("%x"):format(#body) .. "\r\n" .. body .. "\r\n0\r\n\r\n"
end
local SMALL = '{"small":"body \255 with a byte"}'
local BIG = ("0123456789abcdef"):rep(20 * 64) -- 20 KB, above Kong's 8k buffer

local CASES = {
  { "duplicate, empty, non-UTF-8 and mixed-case headers; a busy query",
    "GET /PROBE/a?a=1&a=2&flag&empty=&b=%FF HTTP/1.1\r\nHost: probe.test\r\nX-Dup: a\r\nX-Dup: b\r\n" ..
    "X-Empty: \r\nX-Bin: \255\254caf\233\r\nX-MIXED-case: Up\r\nx_under: u\r\nConnection: close\r\n\r\n" },
  { "HTTP/1.0", "GET /PROBE/old?a= HTTP/1.0\r\nHost: probe.test\r\n\r\n" },
  { "a small body", "POST /PROBE/small HTTP/1.1\r\nHost: probe.test\r\nContent-Type: application/json\r\n" ..
    "Content-Length: " .. #SMALL .. "\r\nConnection: close\r\n\r\n" .. SMALL },
  { "a chunked body", "POST /PROBE/chunked HTTP/1.1\r\nHost: probe.test\r\nTransfer-Encoding: chunked\r\n" ..
    "Connection: close\r\n\r\n" .. chunked(SMALL) },
  { "a body above client_body_buffer_size (buffered to a file)",
    "POST /PROBE/big HTTP/1.1\r\nHost: probe.test\r\nContent-Length: " .. #BIG ..
    "\r\nConnection: close\r\n\r\n" .. BIG },
  { "an empty body", "POST /PROBE/empty HTTP/1.1\r\nHost: probe.test\r\nContent-Length: 0\r\n" ..
    "Connection: close\r\n\r\n" },
  { "HEAD", "HEAD /PROBE/head HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n" },
  { "an unknown method", "PURGE /PROBE/purge HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n" },
  { "dot segments and escapes in the path",
    "GET /PROBE/x/../y/%41%20b HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n" },
}

local function header(head, name)
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k and k:lower() == name then
      return v
    end
  end
end

-- What one probe reported, with its route name replaced by PROBE.
local function probe(prefix, raw)
  local status, head, body = S.raw(proxy_port(), (raw:gsub("PROBE", prefix)))
  local function report(name)
    local encoded = header(head, name)
    assert(encoded, "no " .. name .. " header in:\n" .. head)
    local text = assert(decode_base64(encoded))
    return assert(cjson.decode((text:gsub(prefix:gsub("%p", "%%%0"), "PROBE"))))
  end
  return {
    status = status,
    access = report("x-probe-access"),
    header_filter = report("x-probe-header-filter"),
    body_length = #body,
  }
end

describe("PDK parity: rs-pdk-probe and lua-pdk-probe make the same reads", function()
  local admin

  lazy_setup(function()
    h.start({ plugins = { "rs-pdk-probe", "lua-pdk-probe", "rs-version" } })
    admin = h.admin()
    h.res_status(201, admin:post("/services", { name = "probe-svc", url = h.upstream_url() }))
    for _, name in ipairs({ "rs-pdk-probe", "lua-pdk-probe" }) do
      h.res_status(201, admin:post("/services/probe-svc/routes",
                                   { name = name, paths = { "/" .. name }, strip_path = false }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = name }))
    end
    -- A second Rust plugin of the same library logging on the same requests.
    h.res_status(201, admin:post("/routes/rs-pdk-probe/plugins", { name = "rs-version" }))
    -- Kong applies Admin API changes after its router rebuild.
    h.wait_until(function()
      local status = S.raw(proxy_port(), "GET /rs-pdk-probe/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local lua_status = S.raw(proxy_port(), "GET /lua-pdk-probe/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      return status == 200 and lua_status == 200
    end, 20)
  end)

  lazy_teardown(function()
    h.stop()
  end)

  for _, case in ipairs(CASES) do
    local name, raw = case[1], case[2]
    it(name, function()
      local rust = probe("rs-pdk-probe", raw)
      local lua = probe("lua-pdk-probe", raw)
      assert.equal(lua.status, rust.status)
      assert.same(lua.access, rust.access)
      assert.same(lua.header_filter, rust.header_filter)
      -- Calls Kong refuses in a phase fail on both sides.
      assert.same({ err = true }, rust.access["response.get_status in access"])
      assert.same({ err = true }, rust.header_filter["request.get_raw_body in header_filter"])
    end)
  end

  it("reads a repeated header as its first value, as Kong 3.6+ does", function()
    local rust = probe("rs-pdk-probe", CASES[1][2])
    assert.same({ ok = "a" }, rust.access["get_header x-dup"])
    assert.same({ ok = "\\xff\\xfecaf\\xe9" }, rust.access["get_header x-bin"])
  end)

  it("gives no body (not an error) for one buffered to a file, as Kong's nil, err", function()
    local rust = probe("rs-pdk-probe", CASES[5][2])
    assert.equal(200, rust.status)
    assert.same({ ok = cjson.null }, rust.access["get_raw_body"])
    local empty = probe("rs-pdk-probe", CASES[6][2])
    assert.same({ ok = "" }, empty.access["get_raw_body"])
  end)

  it("tags every Rust log line with its own plugin's name", function()
    local log_before = #h.error_log()
    for _ = 1, 4 do -- both workers
      probe("rs-pdk-probe", CASES[2][2])
      probe("lua-pdk-probe", CASES[2][2])
    end
    local lines
    h.wait_until(function()
      lines = {}
      for line in h.error_log():sub(log_before + 1):gmatch("[^\n]+") do
        lines[#lines + 1] = line
      end
      local n = 0
      for _, line in ipairs(lines) do
        if line:find("pdk-probe log line", 1, true) or line:find("rs-version 1.0.0 answered", 1, true) then
          n = n + 1
        end
      end
      return n >= 12
    end, 10)
    for _, line in ipairs(lines) do
      if line:find("pdk-probe log line for /rs-pdk-probe", 1, true) then
        assert.matches("[rs-pdk-probe] pdk-probe log line", line, 1, true)
      elseif line:find("pdk-probe log line for /lua-pdk-probe", 1, true) then
        assert.matches("[lua-pdk-probe] pdk-probe log line", line, 1, true)
      elseif line:find("rs-version 1.0.0 answered", 1, true) then
        assert.matches("[rs-version] rs-version 1.0.0 answered", line, 1, true)
      end
    end
  end)
end)
