-- The kong-rs spec adapter, referenced rather than copied: it drives the
-- kong-rs gateway (gateway/bin/kong-rs-gateway) of a kong-rs checkout, so a
-- copy here would drift from the gateway it starts. KONG_RS_HOME names the
-- checkout (default: the one this crate was generated from). Under Pongo
-- or Kong's bin/busted the same adapter drives real Kong (.pongo/).
--
-- What this file adds: the gateway finds this plugin's Lua files (this
-- directory) and native module (build/, scripts/build) before anything of
-- the checkout.
local ffi = require "ffi"
pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/support/[^/]+$") or "."
if here:sub(1, 1) ~= "/" then
  local p = io.popen("cd '" .. here .. "' && pwd")
  here = p:read("*l")
  p:close()
end
local KONG_RS = os.getenv("KONG_RS_HOME") or "__KONG_RS__"

local function prepend(name, value)
  local old = os.getenv(name)
  ffi.C.setenv(name, old and old ~= "" and (value .. ";" .. old) or value, 1)
end
prepend("KONG_RS_LUA_PATH", here .. "/?.lua")
prepend("KONG_RS_LUA_CPATH", here .. "/build/?.so")

return dofile(KONG_RS .. "/spec/support/helpers.lua")
