-- Benchmark workload "empty" in Lua: three handlers that do nothing.
local LuaBenchEmpty = { PRIORITY = 1000, VERSION = "0.1.0" }

function LuaBenchEmpty:access(conf) -- luacheck: ignore
end

function LuaBenchEmpty:header_filter(conf) -- luacheck: ignore
end

function LuaBenchEmpty:log(conf) -- luacheck: ignore
end

return LuaBenchEmpty
