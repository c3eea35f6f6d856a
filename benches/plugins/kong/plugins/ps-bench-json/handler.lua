-- Benchmark workload "json" through a MODEL of the plugin-server mechanism
-- (benches/plugins/ps_bench/rpc.lua), not Kong's plugin server: one access
-- event; the server fetches the ~2 KB body with one PDK round trip
-- (kong.request.get_raw_body), validates it, and a violation costs one more
-- (kong.response.exit).
local rpc = require "ps_bench.rpc"

local handle_event = rpc.handle_event

local PsBench = { PRIORITY = 1000, VERSION = "0.1.0" }

function PsBench:access(conf) -- luacheck: ignore self
  return handle_event("ps-bench-json", conf, "access")
end

return PsBench
