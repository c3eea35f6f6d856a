-- Loads the enabled plugins (kong.plugins.<name>.handler/schema) once, at
-- init, like Kong's plugin loader, and orders them by PRIORITY.
local schema = require "kong_rs_gateway.schema"

local type = type
local pairs = pairs
local ipairs = ipairs
local sort = table.sort
local fmt = string.format

local _M = {}

local BUNDLED = { "rs-hello", "rs-file-log" }
_M.BUNDLED = BUNDLED

local PHASES = { "init_worker", "rewrite", "access", "response", "header_filter", "body_filter", "log" }
_M.PHASES = PHASES

local loaded = {}     -- name -> { name, handler, schema, priority }
local ordered = {}    -- by PRIORITY desc, then name
local names = {}

--- Parse a KONG_PLUGINS value ("bundled,foo") into a list of names.
function _M.parse_list(value)
  local list, seen = {}, {}
  value = value or "bundled"
  for item in value:gmatch("[^,%s]+") do
    local expand = item == "bundled" and BUNDLED or { item }
    for _, n in ipairs(expand) do
      if n ~= "off" and not seen[n] then
        seen[n] = true
        list[#list + 1] = n
      end
    end
  end
  return list
end

--- Load every listed plugin. Returns true or nil, err (first failure).
function _M.load(list)
  for _, name in ipairs(list) do
    if not name:match("^[%w%-_]+$") then
      return nil, fmt("invalid plugin name '%s'", name)
    end
    local ok, handler = pcall(require, "kong.plugins." .. name .. ".handler")
    if not ok then
      return nil, fmt("plugin '%s' is enabled but not installed;\n%s", name, handler)
    end
    if type(handler) ~= "table" then
      return nil, fmt("plugin '%s': handler must return a table", name)
    end
    local ok2, def = pcall(require, "kong.plugins." .. name .. ".schema")
    if not ok2 then
      return nil, fmt("error loading plugin schema for '%s': %s", name, def)
    end
    if type(def) ~= "table" or type(def.fields) ~= "table" then
      return nil, fmt("plugin '%s': schema must be a table with 'fields'", name)
    end
    local ok3, err = pcall(schema.plugin_entity_def, def)
    if not ok3 then
      return nil, fmt("plugin '%s': invalid schema: %s", name, err)
    end
    local priority = handler.PRIORITY
    if type(priority) ~= "number" then
      return nil, fmt("plugin '%s' has no PRIORITY", name)
    end
    loaded[name] = { name = name, handler = handler, schema = def, priority = priority }
    names[#names + 1] = name
  end
  ordered = {}
  for _, p in pairs(loaded) do
    ordered[#ordered + 1] = p
  end
  -- kong/runloop/plugins_iterator.lua sorts by PRIORITY descending
  sort(ordered, function(a, b)
    if a.priority ~= b.priority then
      return a.priority > b.priority
    end
    return a.name < b.name
  end)
  for i, p in ipairs(ordered) do
    p.index = i
  end
  return true
end

function _M.get(name)
  return loaded[name]
end

function _M.ordered()
  return ordered
end

function _M.enabled_names()
  return names
end

return _M
