-- kong.cache on the gateway: Kong's node cache API (get, probe,
-- invalidate, invalidate_local, purge) over one shared dict, so values
-- are shared by the workers as Kong's L2 is. What differs from Kong's
-- mlcache-based cache: values are strings (or nil: a miss cached for
-- neg_ttl), there is no per-worker L1 copy, and invalidation is local to
-- this node (no cluster events). One load per key per worker at a time:
-- a second request for a key being loaded waits for the first (a
-- semaphore), then reads what it stored.
local semaphore = require "ngx.semaphore"

local ngx = ngx
local type = type
local pcall = pcall
local error = error
local tostring = tostring

local DICT = "kong_rs_cache"
local NEGATIVE = "\0kong-rs-negative" -- a cached miss
local WAIT = 5 -- seconds a waiting request waits for the loader

local _M = {}

local loading = {} -- key -> semaphore, in this worker

local function dict()
  local shm = ngx.shared[DICT]
  if not shm then
    error("kong.cache: no lua_shared_dict " .. DICT, 3)
  end
  return shm
end

local function stored(shm, key)
  local value = shm:get(key)
  if value == NEGATIVE then
    return true, nil
  end
  return value ~= nil, value
end

function _M:get(key, opts, cb, ...)
  if type(key) ~= "string" then
    error("key must be a string", 2)
  end
  local shm = dict()
  local hit, value = stored(shm, key)
  if hit then
    return value, nil, 2
  end
  local pending = loading[key]
  if pending then
    pending:wait(WAIT)
    hit, value = stored(shm, key)
    if hit then
      return value, nil, 2
    end
  end
  if type(cb) ~= "function" then
    error("callback must be a function", 2)
  end
  local sema = semaphore.new()
  loading[key] = sema
  local ok, loaded, err, ttl = pcall(cb, ...)
  loading[key] = nil
  sema:post(1000)
  if not ok then
    return nil, "failed to get from node cache: callback threw an error: " .. tostring(loaded)
  end
  if err then
    return nil, "failed to get from node cache: " .. tostring(err)
  end
  opts = opts or {}
  if loaded == nil then
    shm:set(key, NEGATIVE, opts.neg_ttl or 300)
  elseif type(loaded) == "string" then
    shm:set(key, loaded, ttl or opts.ttl or 3600)
  else
    return nil, "failed to get from node cache: the gateway's cache holds strings, got " .. type(loaded)
  end
  return loaded, nil, 3
end

function _M:probe(key)
  local shm = dict()
  local ttl = shm:ttl(key)
  if ttl == nil then
    return nil
  end
  local _, value = stored(shm, key)
  return ttl, nil, value
end

function _M:invalidate_local(key)
  dict():delete(key)
  return true
end

function _M:invalidate(key)
  return self:invalidate_local(key)
end

function _M:purge()
  dict():flush_all()
  return true
end

return _M
