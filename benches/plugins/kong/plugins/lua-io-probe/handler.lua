-- lua-io-probe: the Lua twin of rs-io-probe's Redis modes (benches/io),
-- written the way Kong's bundled plugins talk to Redis (resty.redis, a
-- pooled cosocket, a pipeline for INCR + EXPIRE).
local ok, redis = pcall(require, "resty.redis")
if not ok then
  redis = require "nginx.redis" -- Debian's name for lua-resty-redis
end

local kong = kong
local tostring = tostring
local tonumber = tonumber
local null = ngx.null

local LuaIoProbe = {
  VERSION = "0.1.0",
  PRIORITY = 900,
}

-- GET / from conf.host:conf.port on a pooled cosocket and answer with the
-- response: the twin of rs-io-probe's http mode (hyper over the cosocket),
-- written as a lean Lua client would (status line, headers, a
-- content-length body).
local function http_get(conf)
  local sock = ngx.socket.tcp()
  sock:settimeout(conf.timeout_ms)
  local ok, err = sock:connect(conf.host, conf.port)
  if not ok then
    return kong.response.exit(502, err)
  end
  ok, err = sock:send("GET / HTTP/1.1\r\nhost: " .. conf.host .. ":" .. conf.port .. "\r\n\r\n")
  if not ok then
    return kong.response.exit(502, err)
  end
  local line
  line, err = sock:receive("*l")
  if not line then
    return kong.response.exit(502, err)
  end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  local length
  while true do
    line, err = sock:receive("*l")
    if not line then
      return kong.response.exit(502, err)
    end
    if line == "" then
      break
    end
    local value = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if value then
      length = tonumber(value)
    end
  end
  local body = ""
  if length and length > 0 then
    body, err = sock:receive(length)
    if not body then
      return kong.response.exit(502, err)
    end
  end
  sock:setkeepalive(60000, 32)
  kong.response.set_header("x-io-status", tostring(status))
  kong.response.set_header("x-io-probe", "done")
  return kong.response.exit(status or 502, body)
end

function LuaIoProbe:access(conf)
  local key = kong.request.get_header("x-key") or ""
  if conf.mode == "exit" then
    -- the benchmark's baseline: the same answer, no Redis
    kong.response.set_header("x-io-probe", "done")
    return kong.response.exit(200, "(nil)")
  end
  if conf.mode == "http" then
    return http_get(conf)
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
