-- kong_rs.schema: a plugin's Kong schema, generated from its Rust config type.
--
--   return require("kong_rs.schema").new("kong_rs_plugins", "rs-hello")
--
-- The `config` record comes from the native module (derived from the Rust
-- type), and its `custom_validator` runs the same Rust constructor the
-- runtime uses, so a config Rust would refuse is refused by the Admin API
-- with Rust's message.

local require = require
local pairs = pairs
local type = type
local pcall = pcall
local error = error

local _M = {}


local function copy(value)
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    out[k] = copy(v)
  end
  return out
end


--- Returns the schema table of plugin `plugin_name` in native module `native_name`.
function _M.new(native_name, plugin_name)
  local native = require("kong_rs.loader").load(native_name)
  local factory = native.plugins[plugin_name]
  if not factory then
    error("native module " .. native_name .. " has no plugin " .. plugin_name, 2)
  end

  local validate = factory.validate
  local config = copy(factory.schema)
  config.custom_validator = function(conf)
    local ok, err = validate(conf)
    if not ok then
      return nil, err
    end
    return true
  end

  local fields = {}
  -- Kong's plugins declare the protocols they serve: every protocol for a
  -- plugin with a stream phase (preread), the HTTP ones otherwise. typedefs
  -- exists in Kong and in our gateway, not in bare unit tests.
  local has_typedefs, typedefs = pcall(require, "kong.db.schema.typedefs")
  if has_typedefs then
    fields[#fields + 1] = {
      protocols = factory.stream and typedefs.protocols or typedefs.protocols_http,
    }
  end
  fields[#fields + 1] = { config = config }

  return {
    name = plugin_name,
    fields = fields,
  }
end


return _M
