-- Direct reads (src/pdk/ngx.rs): inside a worker, Rust reads request headers
-- straight from nginx instead of calling kong.request.get_header. The result
-- must be exactly what the PDK gives: rs-bench-headers (Rust) and its Lua
-- twin lua-bench-headers (kong.request.get_header) copy x-bench-a/b/c into
-- upstream headers; for every request shape both must send the upstream the
-- same values, and the expected ones.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"
local cjson = require "cjson.safe"

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
  -- an upstream header set to "" is removed by nginx: nil upstream
  { "none", {}, nil, ",", "missing" },
  { "names in any case", { "X-BENCH-A: up", "X-Bench-B: mixed", "x-bEnCh-c: c" }, "up", "mixed,c", "ok" },
  { "repeated: the first value", { "x-bench-a: first", "x-bench-a: second", "x-bench-b: b", "x-bench-c: c" },
    "first", "b,c", "ok" },
  { "non-UTF-8 bytes", { "x-bench-a: \255\254caf\233", "x-bench-b: b", "x-bench-c: c" },
    "\255\254caf\233", "b,c", "ok" },
  { "empty value (present: ok)", { "x-bench-a: ", "x-bench-b: b", "x-bench-c: c" }, nil, "b,c", "ok" },
  -- nginx matches $http_x_bench_a against x_bench_a too (the gateway, like
  -- Kong's template, sets underscores_in_headers on)
  { "underscores in the name", { "x_bench_a: u", "x-bench-b: b", "x-bench-c: c" }, "u", "b,c", "ok" },
  { "4000-byte value", { "x-bench-a: " .. LONG, "x-bench-b: b", "x-bench-c: c" }, LONG, "b,c", "ok" },
}

describe("direct header reads from Rust", function()
  local admin

  lazy_setup(function()
    S.start({ plugins = { "rs-bench-headers", "lua-bench-headers" } })
    admin = h.admin()
    for _, name in ipairs({ "rs-bench-headers", "lua-bench-headers" }) do
      h.res_status(201, admin:post("/services", { name = name, url = h.upstream_url() }))
      h.res_status(201, admin:post("/services/" .. name .. "/routes", { name = name, paths = { "/" .. name } }))
      h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = name }))
    end
  end)

  lazy_teardown(function()
    h.stop()
  end)

  local function send(plugin, headers)
    local status, head, body = S.raw(S.port("PROXY_PORT"), request("/" .. plugin, headers))
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
