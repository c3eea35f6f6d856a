-- Loads the enabled plugins (kong.plugins.<name>.handler/schema) once, at
-- init, like Kong's plugin loader, with Kong's load-time checks
-- (check_loadable), and orders them by PRIORITY.
local schema = require "kong_rs_gateway.schema"
local metaschema = require "kong_rs_gateway.metaschema"

local type = type
local pairs = pairs
local ipairs = ipairs
local sort = table.sort
local fmt = string.format

local _M = {}

local BUNDLED = { "rs-hello", "rs-file-log", "rs-rate-limiting" }
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

local function implements(handler, method)
  return type(handler) == "table" and type(handler[method]) == "function"
end

-- kong/db/dao/plugins.lua valid_priority / valid_version
local function valid_priority(p)
  return type(p) == "number" and p == p and math.abs(p) ~= math.huge and math.floor(p) == p
end

local function valid_version(v)
  if type(v) ~= "string" then
    return false
  end
  local n = 0
  for part in (v .. "."):gmatch("([^.]*)%.") do
    n = n + 1
    if not part:match("^%d+$") then
      return false
    end
  end
  return n >= 1 and n <= 3
end

local function require_if_exists(module)
  local ok, res = pcall(require, module)
  if ok then
    return true, res
  end
  if type(res) == "string" and res:find("module '" .. module .. "' not found", 1, true) then
    return false, res
  end
  error(res, 0)
end

--- Kong's load-time checks of one plugin (kong/db/dao/plugins.lua
-- load_plugin_handler and load_plugin, kong/db/schema/plugin_loader.lua
-- load_subschema): handler, PRIORITY, VERSION, the response/header_filter
-- rule, the schema through Kong's metaschema. Returns handler, schema, or
-- nil and Kong's message for that plugin.
function _M.check_loadable(name)
  local ok, handler = require_if_exists("kong.plugins." .. name .. ".handler")
  if not ok then
    return nil, name .. " plugin is enabled but not installed;\n" .. handler
  end
  if type(handler) == "table" then
    if not valid_priority(handler.PRIORITY) then
      return nil, fmt("Plugin %q cannot be loaded because its PRIORITY field is not " ..
                      "a valid integer number, got: %q.\n", name, tostring(handler.PRIORITY))
    end
    if not valid_version(handler.VERSION) then
      return nil, fmt("Plugin %q cannot be loaded because its VERSION field does not " ..
                      "follow the \"x.y.z\" format, got: %q.\n", name, tostring(handler.VERSION))
    end
  end
  if implements(handler, "response") and
     (implements(handler, "header_filter") or implements(handler, "body_filter")) then
    return nil, fmt("Plugin %q can't be loaded because it implements both `response` " ..
                    "and `header_filter` or `body_filter` methods.\n", name)
  end
  local def
  ok, def = require_if_exists("kong.plugins." .. name .. ".schema")
  if not ok then
    return nil, "no configuration schema found for plugin: " .. name
  end
  local valid, errors = metaschema.validate_subschema(def)
  if not valid then
    return nil, schema.schema_violation(errors).message
  end
  return handler, def
end

--- Load every listed plugin; Kong refuses to start on any failure, with
-- all of them: "error loading plugin schemas: on plugin 'x': ...; ...".
-- Returns true or nil, err.
function _M.load(list)
  local errs
  for _, name in ipairs(list) do
    local handler, def = _M.check_loadable(name)
    if handler then
      local ok, err = pcall(schema.plugin_entity_def, def)
      if not ok then
        handler, def = nil, fmt("error initializing schema for plugin: %s", err)
      end
    end
    if handler then
      loaded[name] = { name = name, handler = handler, schema = def, priority = handler.PRIORITY }
      names[#names + 1] = name
    else
      errs = errs or {}
      errs[#errs + 1] = "on plugin '" .. name .. "': " .. tostring(def)
    end
  end
  if errs then
    return nil, "error loading plugin schemas: " .. table.concat(errs, "; ")
  end
  ordered = {}
  for _, p in pairs(loaded) do
    ordered[#ordered + 1] = p
  end
  -- kong/db/dao/plugins.lua sort_by_handler_priority: PRIORITY descending,
  -- and for the same PRIORITY the name descending
  sort(ordered, function(a, b)
    if a.priority ~= b.priority then
      return a.priority > b.priority
    end
    return a.name > b.name
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
