-- ps-io-probe: rs-io-probe's Redis modes through a MODEL of the plugin-server
-- mechanism (benches/plugins/ps_bench/rpc.lua), not Kong's plugin server, for
-- benches/io. One access event; the server (benches/plugin-server) reads the
-- x-key header (a PDK round trip), does the Redis GET or INCR + EXPIRE
-- pipeline itself on its own connection, then asks for
-- kong.response.exit(200, value, { ["x-io-probe"] = "done" }) (a second round
-- trip), which rpc.lua performs once the event is over.
local rpc = require "ps_bench.rpc"

local handle_event = rpc.handle_event

local PsIoProbe = { PRIORITY = 900, VERSION = "0.1.0" }

function PsIoProbe:access(conf) -- luacheck: ignore self
  return handle_event("ps-io-probe", conf, "access")
end

return PsIoProbe
