-- lua-io-probe: the Lua twin of rs-io-probe's Redis modes (benches/io),
-- written the way Kong's bundled plugins talk to Redis (resty.redis, a
-- pooled cosocket, a pipeline for INCR + EXPIRE).
local ok, redis = pcall(require, "resty.redis")
if not ok then
  redis = require "nginx.redis" -- Debian's name for lua-resty-redis
end

local kong = kong
local tostring = tostring
local null = ngx.null

local LuaIoProbe = {
  VERSION = "0.1.0",
  PRIORITY = 900,
}

function LuaIoProbe:access(conf)
  local key = kong.request.get_header("x-key") or ""
  if conf.mode == "exit" then
    -- the benchmark's baseline: the same answer, no Redis
    kong.response.set_header("x-io-probe", "done")
    return kong.response.exit(200, "(nil)")
  end
  local red = redis:new()
  red:set_timeouts(conf.timeout_ms, conf.timeout_ms, conf.timeout_ms)
  local connected, err = red:connect(conf.host, conf.port)
  if not connected then
    return kong.response.exit(502, err)
  end
  local value
  if conf.mode == "redis_get" then
    value, err = red:get(key)
  else
    red:init_pipeline()
    red:incr(key)
    red:expire(key, 60)
    local replies
    replies, err = red:commit_pipeline()
    value = replies and replies[1]
  end
  if value == nil then
    return kong.response.exit(502, err)
  end
  red:set_keepalive(60000, 32)
  kong.response.set_header("x-io-probe", "done")
  return kong.response.exit(200, value == null and "(nil)" or tostring(value))
end

return LuaIoProbe
