-- Benchmark workload "headers" in Lua: read three request headers, set two
-- upstream headers and one response header (same as rs-bench-headers).
local kong = kong
local get_header = kong.request.get_header
local set_upstream_header = kong.service.request.set_header
local set_response_header = kong.response.set_header

local LuaBenchHeaders = { PRIORITY = 1000, VERSION = "0.1.0" }

function LuaBenchHeaders:access(conf) -- luacheck: ignore
  local a = get_header("x-bench-a")
  local b = get_header("x-bench-b")
  local c = get_header("x-bench-c")
  local complete = a ~= nil and b ~= nil and c ~= nil
  set_upstream_header("x-upstream-a", a or "")
  set_upstream_header("x-upstream-bc", (b or "") .. "," .. (c or ""))
  set_response_header("x-bench", complete and "ok" or "missing")
end

return LuaBenchHeaders
