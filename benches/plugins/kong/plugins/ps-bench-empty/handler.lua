-- Benchmark workload "empty" through a MODEL of the plugin-server mechanism
-- (benches/plugins/ps_bench/rpc.lua), not Kong's plugin server: an access
-- event and a log event (from a timer, as Kong does) that do nothing in the
-- server. No header_filter: a plugin server cannot be reached there (no
-- cosockets), and Kong's external plugins have no such handler.
local rpc = require "ps_bench.rpc"

local handle_event = rpc.handle_event
local handle_log_event = rpc.handle_log_event

local PsBenchEmpty = { PRIORITY = 1000, VERSION = "0.1.0" }

function PsBenchEmpty:access(conf) -- luacheck: ignore self
  return handle_event("ps-bench-empty", conf, "access")
end

function PsBenchEmpty:log(conf) -- luacheck: ignore self
  return handle_log_event("ps-bench-empty", conf)
end

return PsBenchEmpty
