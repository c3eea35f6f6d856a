-- Benchmark workload "headers" through a MODEL of the plugin-server mechanism
-- (benches/plugins/ps_bench/rpc.lua), not Kong's plugin server: one access
-- event; the server reads three request headers, sets two upstream headers
-- and one response header: six PDK round trips.
local rpc = require "ps_bench.rpc"

local handle_event = rpc.handle_event

local PsBench = { PRIORITY = 1000, VERSION = "0.1.0" }

function PsBench:access(conf) -- luacheck: ignore self
  return handle_event("ps-bench-headers", conf, "access")
end

return PsBench
