-- kong.log: plain functions (the Rust bridge caches them), namespaced by the
-- plugin currently running, formatted like Kong: "[kong] file:line [plugin] msg".
local errlog = require "ngx.errlog"

local ngx = ngx
local raw_log = errlog.raw_log
local get_phase = ngx.get_phase
local getinfo = debug.getinfo
local select = select
local tostring = tostring
local concat = table.concat


local function namespace()
  local phase = get_phase()
  if phase == "init" or phase == "init_worker" or phase == "timer" then
    return nil
  end
  return ngx.ctx.KONG_PLUGIN
end

local function level(lvl)
  return function(...)
    local n = select("#", ...)
    local buf = {}
    for i = 1, n do
      buf[i] = tostring((select(i, ...)))
    end
    local info = getinfo(2, "Sl")
    local where = ""
    if info and info.currentline and info.currentline > 0 then
      where = (info.short_src:match("[^/]+$") or info.short_src) .. ":" .. info.currentline .. " "
    end
    local ns = namespace()
    raw_log(lvl, "[kong] " .. where .. (ns and ("[" .. ns .. "] ") or "") .. concat(buf))
  end
end

local _M = {
  emerg = level(ngx.EMERG), alert = level(ngx.ALERT), crit = level(ngx.CRIT),
  err = level(ngx.ERR), warn = level(ngx.WARN), notice = level(ngx.NOTICE),
  info = level(ngx.INFO), debug = level(ngx.DEBUG),
}
_M.inspect = setmetatable({}, { __call = function() end })

return setmetatable(_M, { __call = function(_, ...) return _M.notice(...) end })
