-- The check Kong runs on a plugin's schema.lua when it loads the plugin
-- (kong/db/schema/plugin_loader.lua load_subschema: MetaSchema.MetaSubSchema
-- :validate, kong/db/schema/metaschema.lua). Our own code, written from
-- Kong's behaviour: the same attributes and types per field, the same
-- rules (a description of 10 to 500 bytes, `between` only on numbers, ...),
-- and errors shaped as Kong's, so that tostring(schema_violation(errors))
-- reads as Kong's message. JSON fields and json_schema are not supported.
local schema = require "kong_rs_gateway.schema"
local json = require "kong_rs_gateway.json"

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local fmt = string.format
local find = string.find
local sub = string.sub
local concat = table.concat

local null = json.null

local ERR = {
  ARRAY = "expected an array", SET = "expected a set", MAP = "expected a map",
  RECORD = "expected a record", STRING = "expected a string", NUMBER = "expected a number",
  BOOLEAN = "expected a boolean", INTEGER = "expected an integer", FUNCTION = "expected a function",
  REQUIRED = "required field missing", UNKNOWN = "unknown field",
  REQUIRED_FOR_ENTITY_CHECK = "field required for entity check",
  ONE_OF = "expected one of: %s", LEN_EQ = "length must be %d",
  LEN_MIN = "length must be at least %d", LEN_MAX = "length must be at most %d",
  ONLY_ONE_OF = "exactly one of these fields must be non-empty: %s",
  AT_LEAST_ONE_OF = "at least one of these fields must be non-empty: %s",
  -- kong/db/schema/metaschema.lua meta_errors
  ATTRIBUTE = "field of type '%s' cannot have attribute '%s'",
  REQUIRED_ATTR = "field of type '%s' must declare '%s'",
  TABLE = "'%s' must be a table",
  TYPE = "missing type declaration",
  FIELD_EMPTY = "field entry table is empty",
  FIELDS_ARRAY = "each entry in fields must be a sub-table",
  INVALID_NAME = "invalid field name: %s",
}

local VALID_TYPES = { "array", "set", "string", "number", "boolean", "integer",
                      "foreign", "map", "record", "function", "json" }

local ENTITY_CHECKERS = { "at_least_one_of", "conditional_at_least_one_of", "only_one_of",
                          "distinct", "conditional", "custom_entity_check", "mutually_required",
                          "mutually_exclusive", "mutually_exclusive_sets" }

---------------------------------------------------------------------------
-- the metaschema, as data
---------------------------------------------------------------------------

local STRINGS = { type = "array", elements = { type = "string" } }
local ANY_LIST = { type = "array", elements = { type = "any" } }
local MATCH_LIST = { type = "array", elements = { type = "record", fields = {
  { pattern = { type = "string", required = true } },
  { err = { type = "string" } },
} } }

-- attributes that are validators (kong/db/schema/init.lua validators)
local VALIDATORS = {
  { between = { type = "array", elements = { type = "number" }, len_eq = 2 } },
  { eq = { type = "any" } },
  { ne = { type = "any" } },
  { gt = { type = "number" } },
  { len_eq = { type = "integer" } },
  { len_min = { type = "integer" } },
  { len_max = { type = "integer" } },
  { match = { type = "string" } },
  { not_match = { type = "string" } },
  { match_all = MATCH_LIST },
  { match_none = MATCH_LIST },
  { match_any = { type = "record", fields = {
    { patterns = { type = "array", elements = { type = "string" }, required = true } },
    { err = { type = "string" } },
  } } },
  { starts_with = { type = "string" } },
  { one_of = ANY_LIST },
  { not_one_of = ANY_LIST },
  { contains = { type = "any" } },
  { is_regex = { type = "boolean" } },
  { timestamp = { type = "boolean" } },
  { uuid = { type = "boolean" } },
  { custom_validator = { type = "function" } },
  { mutually_exclusive_subsets = { type = "array", elements = STRINGS } },
}

-- every attribute a field may carry; filled below (recursive)
local FIELD = {
  { type = { type = "string", required = true, one_of = VALID_TYPES } },
  { required = { type = "boolean" } },
  { reference = { type = "string" } },
  { description = { type = "string", len_min = 10, len_max = 500 } },
  { examples = ANY_LIST },
  { auto = { type = "boolean" } },
  { unique = { type = "boolean" } },
  { unique_across_ws = { type = "boolean" } },
  { on_delete = { type = "string", one_of = { "restrict", "cascade", "null" } } },
  { default = { type = "self" } },
  { abstract = { type = "boolean" } },
  { generate_admin_api = { type = "boolean" } },
  { immutable = { type = "boolean" } },
  { err = { type = "string" } },
  { encrypted = { type = "boolean" } },
  { referenceable = { type = "boolean" } },
  { transient = { type = "boolean" } },
  { deprecation = { type = "record", fields = {
    { message = { type = "string", required = true } },
    { removal_in_version = { type = "string", required = true } },
    { old_default = { type = "any" } },
    { replaced_with = { type = "array", elements = { type = "record", fields = {
      { path = { type = "array", len_min = 1, required = true, elements = { type = "string" } } },
      { reverse_mapping_function = { type = "function" } },
    } } } },
  } } },
}
for _, v in ipairs(VALIDATORS) do
  FIELD[#FIELD + 1] = v
end

-- unique_across_ws needs unique (metaschema field_entity_checks)
local function field_check(def, errors)
  if def.unique_across_ws == true and def.unique ~= true then
    errors.unique = def.unique == nil and ERR.REQUIRED or "value must be true"
  end
end

local FIELD_RECORD = { type = "record", fields = FIELD, check = field_check }

local FIELDS_ARRAY = { type = "array", elements = { type = "map", keys = { type = "string" },
                                                   values = FIELD_RECORD, len_eq = 1 } }

local CONDITIONAL_MATCH = { type = "record", fields = {
  { required = { type = "boolean" } },
  { elements = FIELD_RECORD },
  { keys = FIELD_RECORD },
  { values = FIELD_RECORD },
} }
for _, v in ipairs(VALIDATORS) do
  CONDITIONAL_MATCH.fields[#CONDITIONAL_MATCH.fields + 1] = v
end

local ENTITY_CHECK = { type = "record", one_of_fields = ENTITY_CHECKERS, fields = {
  { at_least_one_of = STRINGS },
  { conditional_at_least_one_of = { type = "record", fields = {
    { if_field = { type = "string" } },
    { if_match = CONDITIONAL_MATCH },
    { then_at_least_one_of = STRINGS },
    { then_err = { type = "string" } },
    { else_match = CONDITIONAL_MATCH },
    { else_then_at_least_one_of = STRINGS },
    { else_then_err = { type = "string" } },
  } } },
  { only_one_of = STRINGS },
  { distinct = STRINGS },
  { conditional = { type = "record", fields = {
    { if_field = { type = "string" } },
    { if_match = CONDITIONAL_MATCH },
    { then_field = { type = "string" } },
    { then_match = CONDITIONAL_MATCH },
    { then_err = { type = "string" } },
  } } },
  { custom_entity_check = { type = "record", fields = {
    { field_sources = STRINGS },
    { fn = { type = "function" } },
    { run_with_missing_fields = { type = "boolean" } },
    { run_with_invalid_fields = { type = "boolean" } },
  } } },
  { mutually_required = STRINGS },
  { mutually_exclusive = STRINGS },
  { mutually_exclusive_sets = { type = "record", fields = {
    { set1 = STRINGS },
    { set2 = STRINGS },
  } } },
} }
local ENTITY_CHECKS = { type = "array", elements = ENTITY_CHECK }

-- shorthand fields: no record, foreign or function type; a `func`
local SHORTHAND = {}
for i, v in ipairs(FIELD) do
  SHORTHAND[i] = v
end
SHORTHAND[1] = { type = { type = "string", required = true, one_of = {
  "array", "set", "string", "number", "boolean", "integer", "map", "json" } } }
local SHORTHAND_FIELDS = { type = "array", elements = { type = "map", keys = { type = "string" },
  values = { type = "record", fields = SHORTHAND, check = field_check }, len_eq = 1 } }

FIELD[#FIELD + 1] = { elements = FIELD_RECORD }
FIELD[#FIELD + 1] = { keys = FIELD_RECORD }
FIELD[#FIELD + 1] = { values = FIELD_RECORD }
FIELD[#FIELD + 1] = { fields = FIELDS_ARRAY }
FIELD[#FIELD + 1] = { entity_checks = ENTITY_CHECKS }
FIELD[#FIELD + 1] = { shorthand_fields = SHORTHAND_FIELDS }
SHORTHAND[#SHORTHAND + 1] = { elements = FIELD_RECORD }
SHORTHAND[#SHORTHAND + 1] = { keys = FIELD_RECORD }
SHORTHAND[#SHORTHAND + 1] = { values = FIELD_RECORD }
SHORTHAND[#SHORTHAND + 1] = { fields = FIELDS_ARRAY }
SHORTHAND[#SHORTHAND + 1] = { entity_checks = ENTITY_CHECKS }
SHORTHAND[#SHORTHAND + 1] = { func = { type = "function", required = true } }

local TRANSFORMATIONS = { type = "array", elements = { type = "record",
  at_least_one_of = { "on_write", "on_read" }, fields = {
    { input = STRINGS },
    { needs = STRINGS },
    { on_write = { type = "function" } },
    { on_read = { type = "function" } },
  } } }

-- MetaSchema.MetaSubSchema: what a plugin's schema.lua may hold at its top
local SUBSCHEMA = { type = "record", fields = {
  { name = { type = "string", required = true } },
  { fields = FIELDS_ARRAY },
  { entity_checks = ENTITY_CHECKS },
  { shorthand_fields = SHORTHAND_FIELDS },
  { transformations = TRANSFORMATIONS },
  { check = { type = "function" } },
} }

---------------------------------------------------------------------------
-- a validator for the metaschema's own types
---------------------------------------------------------------------------

local validate

local function is_sequence(t)
  return type(t) == "table" and schema.is_sequence(t)
end

local function length(v, def)
  local n = #v
  if def.type == "map" then
    for _ in pairs(v) do n = n + 1 end
  end
  return n
end

local function one_of(v, options)
  for _, o in ipairs(options) do
    if v == o then return true end
  end
  return false
end

local function run_validators(def, v)
  if def.one_of and not one_of(v, def.one_of) then
    return nil, fmt(ERR.ONE_OF, concat(def.one_of, ", "))
  end
  local min = def.len_min or (def.type == "string" and 1 or nil)
  if def.len_eq and length(v, def) ~= def.len_eq then return nil, fmt(ERR.LEN_EQ, def.len_eq) end
  if min and length(v, def) < min then return nil, fmt(ERR.LEN_MIN, min) end
  if def.len_max and length(v, def) > def.len_max then return nil, fmt(ERR.LEN_MAX, def.len_max) end
  return true
end

local function validate_record(def, input)
  local index = schema.fields_of(def)
  local errors = {}
  for k, v in pairs(input) do
    local fdef = type(k) == "string" and index.defs[k]
    if not fdef then
      errors[k] = ERR.UNKNOWN
    elseif fdef.type == "self" then
      -- `default`: a value of the field being declared
      local ok, valid, err = pcall(schema.validate_field, input, v)
      if not ok then
        errors[k] = "error in schema prevents from validating this field"
      elseif not valid then
        errors[k] = err
      end
    else
      local _, err = validate(fdef, v)
      errors[k] = err
    end
  end
  for _, name in ipairs(index.names) do
    if index.defs[name].required and (input[name] == nil or input[name] == null) then
      errors[name] = ERR.REQUIRED
    end
  end
  if def.one_of_fields then
    local set = 0
    for _, name in ipairs(def.one_of_fields) do
      if input[name] ~= nil and input[name] ~= null then set = set + 1 end
    end
    if set ~= 1 then
      errors["@entity"] = { fmt(ERR.ONLY_ONE_OF, concat(def.one_of_fields, ", ")) }
    end
  end
  if def.at_least_one_of then
    local set = false
    for _, name in ipairs(def.at_least_one_of) do
      if input[name] ~= nil and input[name] ~= null then set = true end
    end
    if not set then
      errors["@entity"] = { fmt(ERR.AT_LEAST_ONE_OF, concat(def.at_least_one_of, ", ")) }
    end
  end
  if def.check then
    def.check(input, errors)
  end
  if next(errors) then
    return nil, errors
  end
  return true
end

--- One value against a metaschema definition: true or nil, err (a string,
-- or a table of errors by field name / array index, as Kong's).
function validate(def, v)
  if v == null then
    return true
  end
  local t = def.type
  if t == "array" or t == "set" then
    if not is_sequence(v) then
      return nil, t == "array" and ERR.ARRAY or ERR.SET
    end
    local errs
    for i = 1, #v do
      local ok, err
      if v[i] == null then
        ok, err = nil, ERR.REQUIRED
      else
        ok, err = validate(def.elements, v[i])
      end
      if not ok then
        errs = errs or {}
        errs[i] = err
      end
    end
    if errs then
      return nil, errs
    end
  elseif t == "map" then
    if type(v) ~= "table" then
      return nil, ERR.MAP
    end
    for k, x in pairs(v) do
      local ok, err = validate(def.keys, k)
      if not ok then return nil, err end
      if x == null then return nil, ERR.REQUIRED end
      ok, err = validate(def.values, x)
      if not ok then return nil, err end
    end
  elseif t == "record" then
    if type(v) ~= "table" then
      return nil, ERR.RECORD
    end
    local ok, errs = validate_record(def, v)
    if not ok then return nil, errs end
  elseif t == "string" or t == "boolean" or t == "function" then
    if type(v) ~= t then
      return nil, ERR[t:upper()]
    end
  elseif t == "number" or t == "integer" then
    if type(v) ~= "number" then
      return nil, ERR[t:upper()]
    end
    if t == "integer" and v ~= math.floor(v) then
      return nil, ERR.INTEGER
    end
  end
  return run_validators(def, v)
end

---------------------------------------------------------------------------
-- the metaschema's own check (check_fields / check_field): attributes per
-- type, required attributes; errors by field name, nested ones flattened
---------------------------------------------------------------------------

local REQUIRED_ATTRIBUTES = {
  array = { "elements" }, set = { "elements" }, map = { "keys", "values" },
  record = { "fields" }, json = { "json_schema" },
}

local function types(...)
  local t = {}
  for _, name in ipairs({ ... }) do t[name] = true end
  return t
end

local ATTRIBUTE_TYPES = {
  between = types("integer", "number"),
  len_eq = types("array", "set", "string", "map"),
  match = types("string"),
  one_of = types("string", "number", "integer"),
  contains = types("array", "set"),
  is_regex = types("string"),
  timestamp = types("number", "integer"),
  uuid = types("string"),
  unique = types("string", "number", "integer", "foreign"),
  unique_across_ws = types("string", "number", "integer", "foreign"),
  abstract = types("string", "number", "integer", "record", "array", "set", "map"),
  json_schema = types("json"),
  transient = types("string", "number", "integer", "array", "set", "boolean"),
}

local NESTED = { "elements", "keys", "values" }

local check_fields

-- Does `name` ("a" or "a.b.c") name a field of `def`? (has_schema_field)
local function has_field(def, name)
  if type(def) ~= "table" or type(def.fields) ~= "table" then
    return false
  end
  local dot = find(name, ".", 1, true)
  local head = dot and sub(name, 1, dot - 1) or name
  for _, item in ipairs(def.fields) do
    local k = type(item) == "table" and next(item)
    if k == head then
      if not dot or item[k].type == "foreign" then
        return true
      end
      return has_field(item[k], sub(name, dot + 1))
    end
  end
  return false
end

local function check_field(k, field, errors)
  if not field.type then
    errors[k] = ERR.TYPE
    return
  end
  local required = REQUIRED_ATTRIBUTES[field.type]
  if required and not (field.abstract and field.type == "record") then
    for _, attr in ipairs(required) do
      if not field[attr] then
        errors[k] = fmt(ERR.REQUIRED_ATTR, field.type, attr)
      end
    end
  end
  for attr in pairs(field) do
    local allowed = ATTRIBUTE_TYPES[attr]
    if allowed and not allowed[field.type] then
      errors[k] = fmt(ERR.ATTRIBUTE, field.type, attr)
    end
  end
  for _, attr in ipairs(NESTED) do
    if field[attr] then
      if type(field[attr]) == "table" then
        check_field(k, field[attr], errors)
      else
        errors[k] = fmt(ERR.TABLE, attr)
      end
    end
  end
  if type(field.fields) == "table" then
    check_fields(field, errors)
  end
end

function check_fields(def, errors)
  if type(def.transformations) == "table" then
    for i, tr in ipairs(def.transformations) do
      for _, list in ipairs({ "input", "needs" }) do
        if type(tr) == "table" and type(tr[list]) == "table" then
          for j, name in ipairs(tr[list]) do
            if type(name) == "string" and not has_field(def, name) then
              errors.transformations = errors.transformations or {}
              errors.transformations[list] = errors.transformations[list] or {}
              errors.transformations[list][i] = errors.transformations[list][i] or {}
              errors.transformations[list][i][j] = fmt(ERR.INVALID_NAME, name)
            end
          end
        end
      end
    end
  end
  for _, item in ipairs(def.fields) do
    if type(item) ~= "table" then
      errors.fields = ERR.FIELDS_ARRAY
      break
    end
    local k = next(item)
    if not k then
      errors.fields = ERR.FIELD_EMPTY
      break
    end
    local field = item[k]
    if type(field) == "table" then
      check_field(k, field, errors)
    else
      errors[k] = fmt(ERR.TABLE, k)
    end
  end
end

local _M = {}

--- Validate a plugin's schema table as Kong's MetaSubSchema does: true, or
-- nil and Kong's error table (schema.schema_violation turns it into the
-- message).
function _M.validate_subschema(def)
  if type(def) ~= "table" then
    return nil, { ["@entity"] = { ERR.RECORD } }
  end
  local _, errors = validate_record(SUBSCHEMA, def)
  errors = errors or {}
  -- run_self_check: the check runs when every non-nilable field is there
  local ready = true
  for _, name in ipairs({ "name", "fields" }) do
    if def[name] == nil then
      errors[name] = ERR.REQUIRED_FOR_ENTITY_CHECK
      ready = false
    end
  end
  if ready then
    if type(def.fields) ~= "table" then
      errors.fields = fmt(ERR.TABLE, "fields")
    else
      check_fields(def, errors)
    end
  end
  if next(errors) then
    return nil, errors
  end
  return true
end

return _M
