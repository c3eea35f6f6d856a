-- Matches a request to a Route by hosts, methods and plain path prefixes,
-- the way Kong's traditional router orders candidates: routes matching on
-- more attributes first, then the longest path prefix, then regex_priority,
-- then creation time. Regex paths are refused by the Admin API.
local json = require "kong_rs_gateway.json"

local type = type
local ipairs = ipairs
local sort = table.sort
local sub = string.sub
local byte = string.byte
local find = string.find
local lower = string.lower

local null = json.null
local SLASH = byte("/")

-- Kong caches its router's answers per request attributes in an LRU of
-- 5,000 (kong/router/atc.lua, MATCH_LRUCACHE_SIZE): a repeated request
-- costs one lookup, whichever route it hits, not a scan that grows with the
-- route's place in the order. Here a table per router (a rebuild starts
-- empty), emptied when it holds that many answers.
local MATCH_CACHE_SIZE = 5000

local _M = {}

local function list(v)
  if v == nil or v == null or type(v) ~= "table" then
    return nil
  end
  if #v == 0 then
    return nil
  end
  return v
end

-- Hosts from /etc/hosts, for services whose host is not an IP literal
-- (the balancer needs an address; no DNS resolver is configured).
local function load_etc_hosts()
  local map = { localhost = "127.0.0.1" }
  local f = io.open("/etc/hosts", "r")
  if not f then
    return map
  end
  for line in f:lines() do
    line = line:gsub("#.*", "")
    local ip, names = line:match("^%s*(%d+%.%d+%.%d+%.%d+)%s+(.+)$")
    if ip then
      for name in names:gmatch("%S+") do
        name = lower(name)
        if not map[name] then map[name] = ip end
      end
    end
  end
  f:close()
  return map
end

local function resolve(host, etc_hosts)
  if host:match("^%d+%.%d+%.%d+%.%d+$") then
    return host
  end
  return etc_hosts[lower(host)]
end

local DEFAULT_PORT = { http = 80, https = 443 }

local function compile_service(s, etc_hosts)
  local host_header = s.host
  if s.port ~= DEFAULT_PORT[s.protocol] then
    host_header = s.host .. ":" .. s.port
  end
  return {
    entity = s,
    scheme = s.protocol,
    host = s.host,
    port = s.port,
    ip = resolve(s.host, etc_hosts),
    host_header = host_header,
    path = (s.path ~= null and s.path) or "/",
    connect_timeout = s.connect_timeout,
    read_timeout = s.read_timeout,
    write_timeout = s.write_timeout,
    retries = s.retries,
  }
end

--- Build a router from a configuration state.
function _M.new(state)
  local etc_hosts = load_etc_hosts()
  local services = {}
  for _, s in ipairs(state.services) do
    services[s.id] = compile_service(s, etc_hosts)
  end

  local candidates = {}
  for _, r in ipairs(state.routes) do
    local hosts = list(r.hosts)
    local methods = list(r.methods)
    local paths = list(r.paths)
    local c = {
      route = r,
      service = type(r.service) == "table" and services[r.service.id] or nil,
      weight = (hosts and 1 or 0) + (methods and 1 or 0) + (paths and 1 or 0),
    }
    if hosts then
      c.exact_hosts, c.wild_hosts = {}, {}
      for _, h in ipairs(hosts) do
        h = lower(h)
        if find(h, "*", 1, true) then
          -- "*.example.com" or "example.*" as a Lua pattern
          local pat = "^" .. h:gsub("[%.%-]", "%%%0"):gsub("%*", ".+") .. "$"
          c.wild_hosts[#c.wild_hosts + 1] = pat
        else
          c.exact_hosts[h] = true
        end
      end
    end
    if methods then
      c.methods = {}
      for _, m in ipairs(methods) do c.methods[m] = true end
    end
    if paths then
      for _, p in ipairs(paths) do
        local pc = setmetatable({ path = p, path_len = #p }, { __index = c })
        candidates[#candidates + 1] = pc
      end
    else
      c.path_len = 0
      candidates[#candidates + 1] = c
    end
  end

  sort(candidates, function(a, b)
    if a.weight ~= b.weight then return a.weight > b.weight end
    if a.path_len ~= b.path_len then return a.path_len > b.path_len end
    local ra, rb = a.route.regex_priority or 0, b.route.regex_priority or 0
    if ra ~= rb then return ra > rb end
    if a.route.created_at ~= b.route.created_at then
      return (a.route.created_at or 0) < (b.route.created_at or 0)
    end
    return a.route.id < b.route.id
  end)

  return setmetatable({
    candidates = candidates,
    services = services,
    cache = {},
    cached = 0,
  }, { __index = _M })
end

local function host_matches(c, host)
  if c.exact_hosts[host] then
    return true
  end
  for _, pat in ipairs(c.wild_hosts) do
    if host:match(pat) then return true end
  end
  return false
end

-- The first candidate that matches, in the router's order.
local function scan(candidates, method, host, path)
  for i = 1, #candidates do
    local c = candidates[i]
    if (not c.methods or c.methods[method])
       and (not c.exact_hosts or (host and host_matches(c, host)))
       and (not c.path or sub(path, 1, c.path_len) == c.path) then
      return c
    end
  end
  return nil
end

--- Match a request. `host` is the Host header without port, lowercased;
-- `path` is the normalised request path (no query, uri.normalize as Kong's
-- router does). Returns the match or nil.
function _M:match(method, host, path)
  -- unambiguous: nginx refuses a host with "/", and a path starts with one
  local key = method .. "|" .. (host or "") .. "|" .. path
  local cache = self.cache
  local known = cache[key]
  if known ~= nil then
    return known or nil
  end
  local found = scan(self.candidates, method, host, path)
  if self.cached >= MATCH_CACHE_SIZE then
    cache = {}
    self.cache, self.cached = cache, 0
  end
  cache[key] = found or false
  self.cached = self.cached + 1
  return found
end

-- kong/router/utils.lua sanitize_uri_postfix
local function sanitize_postfix(postfix)
  if postfix == "" or postfix == "." or postfix == ".." then
    return ""
  end
  if sub(postfix, 1, 2) == "./" then
    return sub(postfix, 3)
  end
  if sub(postfix, 1, 3) == "../" then
    return sub(postfix, 4)
  end
  return postfix
end

--- The upstream path for a match, from the normalised request path, as
-- Kong's default router (traditional_compatible) builds it:
-- kong/router/utils.lua get_upstream_uri_v0.
function _M.upstream_path(c, path)
  local base = c.service.path
  local strip = c.route.strip_path
  local postfix = sanitize_postfix(sub(path, (c.path_len or 0) + 1))
  if not c.path then
    postfix = sanitize_postfix(sub(path, 2))
  end
  if byte(base, -1) == SLASH then
    if not strip then
      return base .. sub(path, 2)
    end
    if postfix == "" then
      if base == "/" then
        return "/"
      end
      if byte(path, -1) == SLASH then
        return base
      end
      return sub(base, 1, -2)
    end
    if byte(postfix, 1) == SLASH then
      return sub(base, 1, -2) .. postfix
    end
    return base .. postfix
  end
  if not strip then
    if path == "/" then
      return base
    end
    return base .. path
  end
  if postfix == "" then
    if #path > 1 and byte(path, -1) == SLASH then
      return base .. "/"
    end
    return base
  end
  if byte(postfix, 1) == SLASH then
    return base .. postfix
  end
  return base .. "/" .. postfix
end

return _M
