-- lua-rate-limiting-twin: the Lua twin of rs-rate-limiting for
-- benches/ratelimit/run. It does per request what Kong 3.9's bundled
-- rate-limiting does (kong/plugins/rate-limiting/{handler,policies}.lua),
-- limit_by ip, windows second..day:
--   local: per window a shm:get of the counter, the headers, then the
--          increments (shm:incr per window) in an ngx.timer.at(0) callback;
--   redis: per window a pooled resty.redis connection, an EVAL of INCR
--          (+ EXPIRE on the first) and set_keepalive: one round trip per
--          window (sync_rate -1).
-- Written for the benchmark, not a replacement of Kong's plugin.
local ok, redis = pcall(require, "resty.redis")
if not ok then
  redis = require "nginx.redis" -- Debian's name for lua-resty-redis
end

local kong = kong
local ngx = ngx
local max = math.max
local floor = math.floor
local fmt = string.format
local timer_at = ngx.timer.at
local shm = ngx.shared.kong_rate_limiting_counters

local PERIODS = { "second", "minute", "hour", "day" }
local EXPIRATION = { second = 1, minute = 60, hour = 3600, day = 86400 }
local X_LIMIT = { second = "X-RateLimit-Limit-Second", minute = "X-RateLimit-Limit-Minute",
                  hour = "X-RateLimit-Limit-Hour", day = "X-RateLimit-Limit-Day" }
local X_REMAINING = { second = "X-RateLimit-Remaining-Second", minute = "X-RateLimit-Remaining-Minute",
                      hour = "X-RateLimit-Remaining-Hour", day = "X-RateLimit-Remaining-Day" }
local INCR_SCRIPT = [[
  local cache_key, expiration = KEYS[1], ARGV[1]
  local result_incr = redis.call("incr", cache_key)
  if result_incr == 1 then
    redis.call("expire", cache_key, expiration)
  end
  return result_incr - 1
]]

local Twin = { VERSION = "0.1.0", PRIORITY = 910 }

-- kong.tools.timestamp.get_timestamps, for the windows up to a day
local function timestamps(now)
  return { second = now * 1000, minute = (now - now % 60) * 1000,
           hour = (now - now % 3600) * 1000, day = (now - now % 86400) * 1000 }
end

local function key(conf, identifier, period, period_date)
  return fmt("ratelimit:%s:%s:%s:%s:%s", conf.route_id or "", conf.service_id or "",
             identifier, period_date, period)
end

local function redis_usage(conf, cache_key, period)
  local red = redis:new()
  red:set_timeout(conf.redis_timeout)
  local connected, err = red:connect(conf.redis_host, conf.redis_port)
  if not connected then
    return nil, err
  end
  local times
  times, err = red:get_reused_times()
  if err then
    return nil, err
  end
  local current
  current, err = red:eval(INCR_SCRIPT, 1, cache_key, EXPIRATION[period])
  if err then
    return nil, err
  end
  red:set_keepalive(10000, 100)
  return current ~= ngx.null and current or 0
end

local function increment(premature, conf, identifier, stamps)
  if premature then
    return
  end
  for _, period in ipairs(PERIODS) do
    if conf[period] then
      shm:incr(key(conf, identifier, period, stamps[period]), 1, 0, EXPIRATION[period])
    end
  end
end

function Twin:access(conf)
  local now = ngx.time()
  local identifier = kong.client.get_forwarded_ip()
  local stamps = timestamps(now)
  local usage, stop = {}, nil
  for _, period in ipairs(PERIODS) do
    local limit = conf[period]
    if limit then
      local cache_key = key(conf, identifier, period, stamps[period])
      local current, err
      if conf.policy == "redis" then
        current, err = redis_usage(conf, cache_key, period)
      else
        current, err = shm:get(cache_key)
        current = current or 0
      end
      if err then
        kong.log.err("failed to get usage: ", err)
        usage = nil
        break
      end
      local remaining = limit - current
      usage[period] = { limit = limit, remaining = remaining }
      if remaining <= 0 then
        stop = period
      end
    end
  end
  if usage then
    local limit, window, remaining, reset
    for _, period in ipairs(PERIODS) do
      local u = usage[period]
      if u then
        local current_remaining = u.remaining
        if stop == nil or stop == period then
          current_remaining = current_remaining - 1
        end
        current_remaining = max(0, current_remaining)
        local current_window = EXPIRATION[period]
        if not limit or current_remaining < remaining
           or (current_remaining == remaining and current_window > window) then
          limit, window, remaining = u.limit, current_window, current_remaining
          reset = max(1, window - floor((now * 1000 - stamps[period]) / 1000))
        end
        ngx.header[X_LIMIT[period]] = u.limit
        ngx.header[X_REMAINING[period]] = current_remaining
      end
    end
    ngx.header["RateLimit-Limit"] = limit
    ngx.header["RateLimit-Remaining"] = remaining
    ngx.header["RateLimit-Reset"] = reset
    if stop then
      ngx.header["Retry-After"] = reset
      return kong.response.error(conf.error_code, conf.error_message)
    end
  end
  if conf.policy ~= "redis" then
    local ok_timer, err = timer_at(0, increment, conf, identifier, stamps)
    if not ok_timer then
      kong.log.err("failed to create timer: ", err)
    end
  end
end

return Twin
