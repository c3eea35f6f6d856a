-- A validator for the part of Kong's schema DSL our plugins use
-- (kong/db/schema/init.lua): record/string/number/integer/boolean/array/set/
-- map/foreign, required, default, and the validators below, run in Kong's
-- order, with Kong's messages. Loads outside nginx (plain busted): no ngx.*.
local json = require "kong_rs_gateway.json"

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local pcall = pcall
local tostring = tostring
local floor = math.floor
local huge = math.huge
local fmt = string.format
local sub = string.sub
local concat = table.concat
local sort = table.sort
local setmetatable = setmetatable
local getmetatable = getmetatable

local null = json.null
local array_mt = json.array_mt

local _M = { null = null }

local ERR = {
  ARRAY = "expected an array", SET = "expected a set", MAP = "expected a map",
  RECORD = "expected a record", STRING = "expected a string",
  NUMBER = "expected a number", BOOLEAN = "expected a boolean",
  INTEGER = "expected an integer", FUNCTION = "expected a function",
  EQ = "value must be %s", NE = "value must not be %s",
  GT = "value must be greater than %s",
  BETWEEN = "value should be between %d and %d",
  LEN_EQ = "length must be %d", LEN_MIN = "length must be at least %d",
  LEN_MAX = "length must be at most %d",
  MATCH = "invalid value: %s", NOT_MATCH = "invalid value: %s",
  STARTS_WITH = "should start with: %s", CONTAINS = "expected to contain: %s",
  ONE_OF = "expected one of: %s", UUID = "expected a valid UUID",
  VALIDATION = "failed validating: %s",
  REQUIRED = "required field missing", UNKNOWN = "unknown field",
  SCHEMA_TYPE = "invalid type: %s",
}
_M.errors = ERR

local function is_sequence(t)
  if type(t) ~= "table" then
    return false
  end
  local m, c = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or floor(k) ~= k then
      return false
    end
    c = c + 1
    if k > m then m = k end
  end
  return c == m
end
_M.is_sequence = is_sequence

-- Kong fields are an array of single-key tables; index them once per table.
local field_index = setmetatable({}, { __mode = "k" })

local function fields_of(record)
  local idx = field_index[record]
  if idx then
    return idx
  end
  local fields = record.fields
  if type(fields) ~= "table" then
    error("error in schema definition: no 'fields' table", 3)
  end
  idx = { names = {}, defs = {} }
  for i, item in ipairs(fields) do
    local name, def = next(item)
    if type(name) ~= "string" or type(def) ~= "table" or next(item, name) ~= nil then
      error(fmt("error in schema definition: field #%d must be a table with a single key", i), 3)
    end
    idx.names[#idx.names + 1] = name
    idx.defs[name] = def
  end
  field_index[record] = idx
  return idx
end
_M.fields_of = fields_of

local function deepcopy(v)
  if type(v) ~= "table" then
    return v
  end
  local t = {}
  for k, x in pairs(v) do
    t[k] = deepcopy(x)
  end
  return setmetatable(t, getmetatable(v))
end
_M.deepcopy = deepcopy

local function format_value(v)
  return type(v) == "table" and "table" or tostring(v)
end

-- Validators in Kong's validators_order.
local validators = {
  { "eq", function(v, want)
      if v == want then return true end
      return nil, fmt(ERR.EQ, want == null and "null" or tostring(want))
    end },
  { "ne", function(v, want)
      if v ~= want then return true end
      return nil, fmt(ERR.NE, want == null and "null" or tostring(v))
    end },
  { "one_of", function(v, options)
      for _, o in ipairs(options) do
        if v == o then return true end
      end
      local names = {}
      for i, o in ipairs(options) do names[i] = tostring(o) end
      return nil, fmt(ERR.ONE_OF, concat(names, ", "))
    end },
  { "gt", function(v, limit)
      if v > limit then return true end
      return nil, fmt(ERR.GT, tostring(limit))
    end },
  { "uuid", function(v)
      if #v == 36 and v:lower():match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") then
        return true
      end
      return nil, ERR.UUID
    end },
  { "between", function(v, lim)
      if v < lim[1] or v > lim[2] then
        return nil, fmt(ERR.BETWEEN, lim[1], lim[2])
      end
      return true
    end },
  { "len_eq", "LEN_EQ", function(len, n) return len == n end },
  { "len_min", "LEN_MIN", function(len, n) return len >= n end },
  { "len_max", "LEN_MAX", function(len, n) return len <= n end },
  { "starts_with", function(v, prefix)
      if sub(v, 1, #prefix) ~= prefix then
        return nil, fmt(ERR.STARTS_WITH, prefix)
      end
      return true
    end },
  { "not_match", function(v, pat)
      if v:match(pat) then return nil, fmt(ERR.NOT_MATCH, v) end
      return true
    end },
  { "match_none", function(v, list)
      for _, item in ipairs(list) do
        if v:match(item.pattern) then return nil, item.err end
      end
      return true
    end },
  { "match", function(v, pat)
      if not v:match(pat) then return nil, fmt(ERR.MATCH, v) end
      return true
    end },
  { "match_all", function(v, list)
      for _, item in ipairs(list) do
        if not v:match(item.pattern) then return nil, item.err end
      end
      return true
    end },
  { "match_any", function(v, arg)
      for _, pat in ipairs(arg.patterns) do
        if v:match(pat) then return true end
      end
      return nil, arg.err
    end },
  { "contains", function(arr, want)
      for _, x in ipairs(arr) do
        if x == want then return true end
      end
      return nil, fmt(ERR.CONTAINS, tostring(want))
    end },
  { "custom_validator", function(v, fn)
      -- Kong does not guard this call; we do, so that a validator that raises
      -- (e.g. a native constructor fed absurd input) gives a 400, not a 500.
      local ok, res, err = pcall(fn, v)
      if not ok then
        return nil, tostring(res)
      end
      return res, err
    end },
}

-- length validators compare lengths; map lengths count keys
for i, v in ipairs(validators) do
  if type(v[2]) == "string" then
    local key, cmp = v[2], v[3]
    validators[i] = { v[1], function(value, n, def)
      local len
      if def.type == "map" then
        len = 0
        for _ in pairs(value) do len = len + 1 end
      else
        len = #value
      end
      if cmp(len, n) then return true end
      return nil, fmt(ERR[key], n)
    end }
  end
end

local validate_record

--- Validate one value against a field definition: true or nil, err
-- (err is a string, or a table of field errors for records).
local function validate_field(def, value)
  if value == null then
    if def.ne == null then return nil, fmt(ERR.NE, "null") end
    if def.eq ~= nil and def.eq ~= null then return nil, fmt(ERR.EQ, tostring(def.eq)) end
    if def.required then return nil, ERR.REQUIRED end
    return true
  end

  local t = def.type
  if t == "array" or t == "set" then
    if not is_sequence(value) then
      return nil, t == "array" and ERR.ARRAY or ERR.SET
    end
    local elements = def.elements
    if not elements then
      return nil, "error in schema definition: missing attribute elements"
    end
    for _, v in ipairs(value) do
      if v == null then return nil, ERR.REQUIRED end
      local ok, err = validate_field(elements, v)
      if not ok then return nil, err end
    end
  elseif t == "map" then
    if type(value) ~= "table" then return nil, ERR.MAP end
    for k, v in pairs(value) do
      local ok, err = validate_field(def.keys, k)
      if not ok then return nil, err end
      if v == null then return nil, ERR.REQUIRED end
      ok, err = validate_field(def.values, v)
      if not ok then return nil, err end
    end
  elseif t == "record" then
    if type(value) ~= "table" or getmetatable(value) == array_mt then
      return nil, ERR.RECORD
    end
    local ok, errs = validate_record(def, value)
    if not ok then return nil, errs end
  elseif t == "foreign" then
    if type(value) ~= "table" then return nil, ERR.RECORD end
    -- the primary key, or the endpoint key (consumers: username)
    local ekey = def.reference == "consumers" and "username" or "name"
    for k, v in pairs(value) do
      if k ~= "id" and k ~= ekey then
        return nil, { [k] = ERR.UNKNOWN }
      end
      if type(v) ~= "string" then
        return nil, { [k] = ERR.STRING }
      end
    end
    if value.id == nil and value[ekey] == nil then
      return nil, { id = "missing primary key" }
    end
  elseif t == "integer" then
    if not (type(value) == "number" and value == floor(value)
            and value ~= huge and value ~= -huge) then
      return nil, ERR.INTEGER
    end
  elseif t == "number" then
    -- NaN and infinities are not numbers a config can mean
    if type(value) ~= "number" or value ~= value or value == huge or value == -huge then
      return nil, ERR.NUMBER
    end
  elseif t == "string" then
    if type(value) ~= "string" then return nil, ERR.STRING end
  elseif t == "boolean" then
    if type(value) ~= "boolean" then return nil, ERR.BOOLEAN end
  elseif t == "function" then
    if type(value) ~= "function" then return nil, ERR.FUNCTION end
  elseif t ~= "any" then
    return nil, fmt(ERR.SCHEMA_TYPE, tostring(t))
  end

  -- strings must not be empty unless the schema says otherwise (Kong does this)
  local implicit_len_min = t == "string" and def.len_min == nil

  for i = 1, #validators do
    local name, fn = validators[i][1], validators[i][2]
    local arg = def[name]
    if name == "len_min" and implicit_len_min then
      arg = 1
    end
    if arg ~= nil and (arg ~= false or name == "eq" or name == "ne") then
      local ok, err = fn(value, arg, def)
      if not ok then
        return nil, err or fmt(ERR.VALIDATION, format_value(value))
      end
    end
  end
  return true
end
_M.validate_field = validate_field

--- Validate a record value (fields only; defaults must already be filled).
function validate_record(record, input)
  local idx = fields_of(record)
  local errors
  for k, v in pairs(input) do
    local def = type(k) == "string" and idx.defs[k]
    local err
    if not def then
      err = ERR.UNKNOWN
    else
      local _
      _, err = validate_field(def, v)
    end
    if err then
      errors = errors or {}
      errors[tostring(k)] = err
    end
  end
  for _, name in ipairs(idx.names) do
    local def = idx.defs[name]
    if def.required and input[name] == nil and not (errors and errors[name]) then
      errors = errors or {}
      errors[name] = ERR.REQUIRED
    end
  end
  if errors then
    return nil, errors
  end
  return true
end
_M.validate_record = validate_record

local fill_record

-- Default for a missing field (kong/db/schema/init.lua handle_missing_field).
local function missing_value(def)
  if def.default ~= nil then
    local copy = deepcopy(def.default)
    if (def.type == "array" or def.type == "set") and type(copy) == "table" then
      setmetatable(copy, array_mt)
    end
    return copy
  end
  if def.required ~= true then
    return null
  end
  if def.type == "record" then
    return fill_record(def, {})
  end
  return nil
end

local function fill_value(def, v)
  if v == nil then
    return missing_value(def)
  end
  if v == null or type(v) ~= "table" then
    return v
  end
  local t = def.type
  if t == "record" then
    if getmetatable(v) == array_mt or not is_sequence(v) or next(v) == nil then
      return fill_record(def, v)
    end
    return v
  elseif (t == "array" or t == "set") and is_sequence(v) then
    local out, seen, n = {}, {}, 0
    for _, x in ipairs(v) do
      if t == "array" or x == null or not seen[x] then
        n = n + 1
        out[n] = def.elements and fill_value(def.elements, x) or x
        if x ~= null then seen[x] = true end
      end
    end
    return setmetatable(out, array_mt)
  elseif t == "map" and def.values then
    local out = {}
    for k, x in pairs(v) do
      out[k] = fill_value(def.values, x)
    end
    return out
  end
  return v
end

--- Copy `input`, filling defaults (Kong's process_auto_fields "insert").
-- Unknown fields are kept so that validation can report them.
function fill_record(record, input)
  local idx = fields_of(record)
  local out = {}
  for k, v in pairs(input) do
    out[k] = v
  end
  for _, name in ipairs(idx.names) do
    out[name] = fill_value(idx.defs[name], input[name])
  end
  return out
end
_M.fill_record = fill_record

--- Merge a partial update into an entity like Kong's PATCH (Schema:
-- merge_values in kong/db/schema/init.lua): a record given as any table is
-- merged field by field into the stored one (`{}` changes nothing), anything
-- else is replaced.
local function merge(record, old, patch)
  local idx = record and fields_of(record)
  local out = deepcopy(old)
  if type(out) ~= "table" then
    out = {}
  end
  for k, v in pairs(patch) do
    local def = idx and idx.defs[k]
    if def and def.type == "record" and type(v) == "table" then
      out[k] = merge(def, out[k], v)
    else
      out[k] = v
    end
  end
  return out
end
_M.merge = merge

-- The fields Kong's plugins entity has before a plugin's schema specialises it
-- (kong/db/schema/entities/plugins.lua).
local function plugin_entity_def(schema_def)
  local protocols = { "grpc", "grpcs", "http", "https" }
  local base = {
    { id = { type = "string", uuid = true } },
    { name = { type = "string", required = true } },
    { instance_name = { type = "string" } },
    { created_at = { type = "integer" } },
    { updated_at = { type = "integer" } },
    { route = { type = "foreign", reference = "routes", default = null } },
    { service = { type = "foreign", reference = "services", default = null } },
    { consumer = { type = "foreign", reference = "consumers", default = null } },
    { config = { type = "record", required = true, fields = {} } },
    { protocols = { type = "set", required = true, default = protocols,
                    elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https", "ws", "wss" } } } },
    { enabled = { type = "boolean", required = true, default = true } },
    { tags = { type = "set", elements = { type = "string" } } },
    { ordering = { type = "record", fields = {
      { before = { type = "map", keys = { type = "string" }, values = { type = "array", elements = { type = "string" } } } },
      { after = { type = "map", keys = { type = "string" }, values = { type = "array", elements = { type = "string" } } } },
    } } },
  }
  local pos = {}
  for i, item in ipairs(base) do
    pos[next(item)] = i
  end
  for _, name in ipairs(fields_of(schema_def).names) do
    local def = fields_of(schema_def).defs[name]
    if name == "config" then
      if def.type ~= "record" then
        error("error in schema definition: 'config' must be a record", 2)
      end
      -- the plugins entity always requires config (Kong: abstract record)
      local copy = {}
      for k, v in pairs(def) do copy[k] = v end
      copy.required = true
      def = copy
    end
    if pos[name] then
      base[pos[name]] = { [name] = def }
    else
      base[#base + 1] = { [name] = def }
      pos[name] = #base
    end
  end
  return { name = schema_def.name, fields = base }
end

local entity_defs = setmetatable({}, { __mode = "k" })

--- The plugins-entity record for a plugin's schema table (memoised).
function _M.plugin_entity_def(schema_def)
  if type(schema_def) ~= "table" or type(schema_def.fields) ~= "table" then
    error("expected a plugin schema table with a 'fields' array", 2)
  end
  local def = entity_defs[schema_def]
  if not def then
    def = plugin_entity_def(schema_def)
    entity_defs[schema_def] = def
  end
  return def
end

--- Fill defaults and validate a plugin entity: entity or nil, errors.
function _M.process_plugin_entity(schema_def, entity)
  local def = _M.plugin_entity_def(schema_def)
  local filled = fill_record(def, entity)
  local ok, errs = validate_record(def, filled)
  if not ok then
    return nil, errs
  end
  return filled
end

local function random_uuid()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(16)
  if f then f:close() end
  if not b or #b ~= 16 then
    error("cannot read /dev/urandom")
  end
  local bytes = { b:byte(1, 16) }
  bytes[7] = bytes[7] % 16 + 0x40
  bytes[9] = bytes[9] % 64 + 0x80
  local hex = {}
  for i = 1, 16 do
    hex[i] = fmt("%02x", bytes[i])
  end
  local s = concat(hex)
  return fmt("%s-%s-%s-%s-%s", sub(s, 1, 8), sub(s, 9, 12), sub(s, 13, 16), sub(s, 17, 20), sub(s, 21, 32))
end
_M.uuid = random_uuid

--- Same contract as Kong's spec.helpers.validate_plugin_config_schema:
-- returns the processed plugin entity (config with defaults), or nil and the
-- field-errors table (e.g. `{ config = { message = "required field missing" } }`).
function _M.validate_plugin_config_schema(config, schema_def, extra_fields)
  local now = os.time()
  local entity = {
    id = random_uuid(),
    name = schema_def.name,
    config = config,
    created_at = now,
    updated_at = now,
  }
  if extra_fields then
    for k, v in pairs(extra_fields) do
      entity[k] = v
    end
  end
  return _M.process_plugin_entity(schema_def, entity)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

-- Kong renders a nested error table with penlight (pl.pretty.write in
-- kong/db/errors.lua); without penlight, a one-line rendering
local has_pl, pl_pretty = pcall(require, "pl.pretty")

local function pretty(v)
  if has_pl then
    return pl_pretty.write(v)
  end
  if type(v) ~= "table" then
    return type(v) == "string" and fmt("%q", v) or tostring(v)
  end
  local parts = {}
  for _, k in ipairs(sorted_keys(v)) do
    parts[#parts + 1] = tostring(k) .. " = " .. pretty(v[k])
  end
  return "{ " .. concat(parts, ", ") .. " }"
end

--- Kong's schema-violation error object (kong/db/errors.lua schema_violation).
function _M.schema_violation(errors)
  local buf = {}
  if errors["@entity"] then
    for _, e in ipairs(errors["@entity"]) do buf[#buf + 1] = e end
  end
  for _, name in ipairs(sorted_keys(errors)) do
    if name ~= "@entity" then
      local fe = errors[name]
      if type(fe) == "table" then
        for _, subname in ipairs(sorted_keys(fe)) do
          local v = fe[subname]
          buf[#buf + 1] = fmt("%s.%s: %s", name, subname, type(v) == "table" and pretty(v) or tostring(v))
        end
      else
        buf[#buf + 1] = fmt("%s: %s", name, tostring(fe))
      end
    end
  end
  local message
  if #buf == 1 then
    message = fmt("schema violation (%s)", buf[1])
  else
    message = fmt("%d schema violations (%s)", #buf, concat(buf, "; "))
  end
  return { code = 2, name = "schema violation", message = message, fields = errors }
end

--- A JSON-safe copy of a schema definition (functions dropped), for
-- GET /schemas/plugins/{name}.
function _M.to_json(def)
  if type(def) ~= "table" then
    return def
  end
  local out = {}
  for k, v in pairs(def) do
    local tv = type(v)
    if tv ~= "function" and tv ~= "userdata" or v == null then
      out[k] = _M.to_json(v)
    end
  end
  if (def.type == "array" or def.type == "set") and type(out.default) == "table" then
    setmetatable(out.default, array_mt)
  end
  if is_sequence(def) and next(def) ~= nil then
    setmetatable(out, array_mt)
  end
  return out
end

return _M
