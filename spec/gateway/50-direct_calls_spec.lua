-- Direct calls (src/pdk/ngx.rs), reads first: inside a worker, Rust reads request headers
-- straight from nginx instead of calling kong.request.get_header. The result
-- must be exactly what the PDK gives: rs-bench-headers (Rust) and its Lua
-- twin lua-bench-headers (kong.request.get_header) copy x-bench-a/b/c into
-- upstream headers; for every request shape both must send the upstream the
-- same values, and the expected ones.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"
local cjson = require "cjson.safe"

-- Runs on both backends: on Kong, Rust's direct nginx calls and Kong's own
-- kong.* functions must agree the same way.

local function request(path, headers)
  -- HTTP/1.0: the answer is not chunked
  local lines = { "GET " .. path .. " HTTP/1.0", "Host: localhost" }
  for _, line in ipairs(headers) do
    lines[#lines + 1] = line
  end
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

local LONG = string.rep("v", 4000)

-- name, request headers, expected upstream x-upstream-a, x-upstream-bc, response x-bench
local CASES = {
  { "all three", { "x-bench-a: 1", "x-bench-b: 2", "x-bench-c: 3" }, "1", "2,3", "ok" },
  -- set_header(name, "") sends " " as Kong does (kong/pdk/private/checks.lua);
  -- the upstream reads it back as ""
  { "none", {}, "", ",", "missing" },
  { "names in any case", { "X-BENCH-A: up", "X-Bench-B: mixed", "x-bEnCh-c: c" }, "up", "mixed,c", "ok" },
  { "repeated: the first value", { "x-bench-a: first", "x-bench-a: second", "x-bench-b: b", "x-bench-c: c" },
    "first", "b,c", "ok" },
  { "non-UTF-8 bytes", { "x-bench-a: \255\254caf\233", "x-bench-b: b", "x-bench-c: c" },
    "\255\254caf\233", "b,c", "ok" },
  { "empty value (present: ok)", { "x-bench-a: ", "x-bench-b: b", "x-bench-c: c" }, "", "b,c", "ok" },
  -- a repeated header is joined into $http_* by nginx >= 1.23 (Kong's);
  -- get_header answers its first value, as Kong 3.6+ does
  { "repeated, one joined by the client", { "x-bench-a: a, b", "x-bench-b: b", "x-bench-c: c" },
    "a, b", "b,c", "ok" },
  -- nginx matches $http_x_bench_a against x_bench_a too (the gateway, like
  -- Kong's template, sets underscores_in_headers on)
  { "underscores in the name", { "x_bench_a: u", "x-bench-b: b", "x-bench-c: c" }, "u", "b,c", "ok" },
  { "4000-byte value", { "x-bench-a: " .. LONG, "x-bench-b: b", "x-bench-c: c" }, LONG, "b,c", "ok" },
}

-- Twice: with the direct calls, and with them off in every worker (the
-- direct-calls-off fixture, at init_worker) — the fallback to kong.* that
-- runs where lua-nginx-module's C functions are not found. Both must give
-- exactly what Kong's kong.request.get_header gives.
for _, mode in ipairs({ "direct", "fallback" }) do
describe("header reads from Rust (" .. mode .. ")", function()
  local admin

  lazy_setup(function()
    local plugins = { "rs-bench-headers", "lua-bench-headers" }
    if mode == "fallback" then
      plugins[#plugins + 1] = "direct-calls-off"
    end
    S.start({ plugins = plugins })
    if mode == "fallback" then
      -- every worker switched them off, and they were there to switch off
      h.wait_until(function()
        local _, n = h.error_log():gsub("kong%-rs direct calls off %(they were available: true%)", "")
        return n == #h.worker_pids()
      end, 10)
    end
    admin = h.admin()
    for _, name in ipairs({ "rs-bench-headers", "lua-bench-headers" }) do
      h.res_status(201, admin:post("/services", { name = name, url = h.upstream_url() }))
      h.res_status(201, admin:post("/services/" .. name .. "/routes", { name = name, paths = { "/" .. name } }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = name }))
    end
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  local function send(plugin, headers)
    local status, head, body = S.raw(h.proxy_port(), request("/" .. plugin, headers))
    assert.equal(200, status, head)
    local echo = assert(cjson.decode(body), body)
    return {
      a = echo.headers["x-upstream-a"],
      bc = echo.headers["x-upstream-bc"],
      bench = head:lower():match("\r\nx%-bench: ([^\r]*)"),
    }
  end

  for _, case in ipairs(CASES) do
    local name, headers, a, bc, bench = case[1], case[2], case[3], case[4], case[5]
    it(name .. ": the same values as kong.request.get_header", function()
      local rust = send("rs-bench-headers", headers)
      local lua = send("lua-bench-headers", headers)
      assert.same(lua, rust)
      assert.equal(a, rust.a)
      assert.equal(bc, rust.bc)
      assert.equal(bench, rust.bench)
    end)
  end
end)
end

-- Direct writes: kong.service.request.set_header and kong.response.set_header
-- from Rust go straight into nginx where Kong allows them; other writes are
-- queued for Lua. rs-header-ops performs a configured list of writes in
-- order, lua-header-ops makes the same kong.* calls from Lua: the upstream
-- and the client must see the same headers, whatever path each write took.
local function set(name, value) return { op = "service_set", name = name, value = value } end
local function add(name, value) return { op = "service_add", name = name, value = value } end
local function clear(name) return { op = "service_clear", name = name } end
local function rset(name, value) return { op = "response_set", name = name, value = value } end
local function radd(name, value) return { op = "response_add", name = name, value = value } end
local function rclear(name) return { op = "response_clear", name = name } end

-- name, config, upstream headers to compare, response headers to compare,
-- expected values (upstream and response, by name; false = absent)
local WRITES = {
  { "set", { access = { set("x-a", "1") } }, { "x-a" }, {}, { ["x-a"] = "1" } },
  { "clear, then set", { access = { clear("x-a"), set("x-a", "2") } }, { "x-a" }, {}, { ["x-a"] = "2" } },
  { "set, then clear", { access = { set("x-a", "1"), clear("x-a") } }, { "x-a" }, {}, { ["x-a"] = false } },
  { "add, then set", { access = { add("x-m", "1"), set("x-m", "2") } }, { "x-m" }, {}, { ["x-m"] = "2" } },
  { "set, then add", { access = { set("x-m", "1"), add("x-m", "2") } }, { "x-m" }, {}, {} },
  { "set replaces a client header", { access = { set("x-bench-a", "mine") } }, { "x-bench-a" }, {},
    { ["x-bench-a"] = "mine" } },
  -- Kong sends an empty value as " " (kong/pdk/private/checks.lua); read back as ""
  { "set to empty sends a space", { access = { set("x-bench-a", "") } }, { "x-bench-a" }, {}, { ["x-bench-a"] = "" } },
  { "response set to empty sends a space", { access = { rset("x-r", "") } }, {}, { "x-r" }, { ["x-r"] = "" } },
  { "host (kong.* path)", { access = { set("Host", "example.test") } }, { "host" }, {}, { host = "example.test" } },
  { "response set", { access = { rset("x-r", "1") } }, {}, { "x-r" }, { ["x-r"] = "1" } },
  { "response set, then clear", { access = { rset("x-r", "1"), rclear("x-r") } }, {}, { "x-r" }, { ["x-r"] = false } },
  { "response clear, then set", { access = { rclear("x-r"), rset("x-r", "2") } }, {}, { "x-r" }, { ["x-r"] = "2" } },
  { "response add, then set", { access = { radd("x-r", "a"), rset("x-r", "b") } }, {}, { "x-r" }, { ["x-r"] = "b" } },
  { "response set, then add", { access = { rset("x-r", "a"), radd("x-r", "b") } }, {}, { "x-r" }, {} },
  { "response set in access, again in header_filter",
    { access = { rset("x-hf", "0") }, header_filter = { rset("x-hf", "1") } }, {}, { "x-hf" }, { ["x-hf"] = "1" } },
  { "response underscores", { header_filter = { rset("x_under", "u") } }, {}, { "x-under", "x_under" }, {} },
  { "response transfer-encoding (kong.* path: ignored)", { header_filter = { rset("Transfer-Encoding", "gzip") } },
    {}, { "transfer-encoding" }, {} },
}

local function response_headers(head)
  local out = {}
  for line in head:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      name = name:lower()
      if out[name] then
        out[name] = out[name] .. ", " .. value
      else
        out[name] = value
      end
    end
  end
  return out
end

describe("direct header writes from Rust", function()
  local admin

  lazy_setup(function()
    S.start({ plugins = { "rs-header-ops", "lua-header-ops" } })
    admin = h.admin()
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    for i, case in ipairs(WRITES) do
      for _, plugin in ipairs({ "rs-header-ops", "lua-header-ops" }) do
        local route = plugin .. "-" .. i
        h.res_status(201, admin:post("/services/svc/routes", { name = route, paths = { "/" .. route } }))
        h.res_status(201, admin:post("/routes/" .. route .. "/plugins", { name = plugin, config = case[2] }))
      end
    end
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  local function send(route)
    local status, head, body = S.raw(h.proxy_port(),
                                     request("/" .. route, { "x-bench-a: client" }))
    local echo = cjson.decode(body) or {}
    return status, response_headers(head), echo.headers or {}
  end

  for i, case in ipairs(WRITES) do
    local name, upstream_names, response_names, expected = case[1], case[3], case[4], case[5]
    it(name .. ": what Lua's kong.* calls produce", function()
      local rs_status, rs_response, rs_upstream = send("rs-header-ops-" .. i)
      local lua_status, lua_response, lua_upstream = send("lua-header-ops-" .. i)
      assert.equal(200, rs_status)
      assert.equal(lua_status, rs_status)
      for _, header in ipairs(upstream_names) do
        assert.same(lua_upstream[header], rs_upstream[header], "upstream " .. header)
      end
      for _, header in ipairs(response_names) do
        assert.same(lua_response[header], rs_response[header], "response " .. header)
      end
      for header, value in pairs(expected) do
        local got = rs_upstream[header]
        if got == nil then got = rs_response[header] end
        assert.same(value or nil, got, header)
      end
    end)
  end
end)
