-- Seeds the configuration from a subset of Kong's declarative format:
-- `_format_version`, `services` (with nested `routes` and `plugins`; routes
-- may nest `plugins`), `consumers` (with nested `plugins`), top-level
-- `routes` and `plugins` (whose `service`/`route`/`consumer` may be a name,
-- a username or an id). JSON always; YAML
-- when the file ends in .yml/.yaml and lyaml (Debian lua-yaml) is installed.
local dao = require "kong_rs_gateway.dao"
local json = require "kong_rs_gateway.json"

local type = type
local ipairs = ipairs
local fmt = string.format

local _M = {}

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  if path:match("%.ya?ml$") then
    local ok, lyaml = pcall(require, "lyaml")
    if not ok then
      return nil, "YAML needs lyaml (apt: lua-yaml); use JSON"
    end
    local ok2, doc = pcall(lyaml.load, s)
    if not ok2 then
      return nil, "invalid YAML: " .. tostring(doc)
    end
    return doc
  end
  local doc, derr = json.decode(s)
  if doc == nil then
    return nil, "invalid JSON: " .. tostring(derr)
  end
  return doc
end

local function insert(state, etype, e, where)
  local ok, err = dao.insert(state, etype, e)
  if not ok then
    return nil, fmt("%s: %s", where, err.body.message or "error")
  end
  return ok
end

local function take(t, k)
  local v = t[k]
  t[k] = nil
  return type(v) == "table" and v or {}
end

-- A plugin's reference given as a string: an id, else the endpoint key.
local function refs_by_string(p)
  for _, f in ipairs({ "service", "route", "consumer" }) do
    if type(p[f]) == "string" then
      local ekey = f == "consumer" and "username" or "name"
      p[f] = dao.is_uuid(p[f]) and { id = p[f] } or { [ekey] = p[f] }
    end
  end
end

local function plugins_of(state, list, where, extra)
  for i, p in ipairs(list) do
    refs_by_string(p)
    for k, v in pairs(extra) do p[k] = v end
    local ok, err = insert(state, "plugins", p, fmt("%s.plugins[%d]", where, i))
    if not ok then return nil, err end
  end
  return true
end

--- Load a declarative file into a fresh state: state or nil, err.
function _M.load(path)
  local doc, err = read(path)
  if not doc then
    return nil, fmt("declarative config %s: %s", path, err)
  end
  if type(doc) ~= "table" then
    return nil, "declarative config must be an object"
  end
  if doc._format_version == nil then
    return nil, "declarative config: missing _format_version"
  end
  local state = dao.new_state()
  -- consumers before any plugin that may name one
  local consumer_plugins = {}
  for i, c in ipairs(doc.consumers or {}) do
    local cplugins = take(c, "plugins")
    local consumer, ce = insert(state, "consumers", c, fmt("consumers[%d]", i))
    if not consumer then return nil, ce end
    consumer_plugins[#consumer_plugins + 1] = { consumer, cplugins, i }
  end
  for i, s in ipairs(doc.services or {}) do
    local routes, splugins = take(s, "routes"), take(s, "plugins")
    local svc, e = insert(state, "services", s, fmt("services[%d]", i))
    if not svc then return nil, e end
    local ok, perr = plugins_of(state, splugins, fmt("services[%d]", i), { service = { id = svc.id } })
    if not ok then return nil, perr end
    for j, r in ipairs(routes) do
      local rplugins = take(r, "plugins")
      r.service = { id = svc.id }
      local route, re = insert(state, "routes", r, fmt("services[%d].routes[%d]", i, j))
      if not route then return nil, re end
      ok, perr = plugins_of(state, rplugins, fmt("services[%d].routes[%d]", i, j), { route = { id = route.id } })
      if not ok then return nil, perr end
    end
  end
  for i, r in ipairs(doc.routes or {}) do
    local rplugins = take(r, "plugins")
    if type(r.service) == "string" then
      r.service = { name = r.service }
    end
    local route, re = insert(state, "routes", r, fmt("routes[%d]", i))
    if not route then return nil, re end
    local ok, perr = plugins_of(state, rplugins, fmt("routes[%d]", i), { route = { id = route.id } })
    if not ok then return nil, perr end
  end
  for _, item in ipairs(consumer_plugins) do
    local ok, perr = plugins_of(state, item[2], fmt("consumers[%d]", item[3]), { consumer = { id = item[1].id } })
    if not ok then return nil, perr end
  end
  for i, p in ipairs(doc.plugins or {}) do
    refs_by_string(p)
    local ok, perr = insert(state, "plugins", p, fmt("plugins[%d]", i))
    if not ok then return nil, perr end
  end
  return state
end

return _M
