-- The plugin-config validator for schema specs: Kong's own
-- (spec.helpers.validate_plugin_config_schema) when the specs run on real
-- Kong under Pongo, our gateway's implementation of the same contract
-- otherwise.
local has_kong_helpers, helpers = pcall(require, "spec.helpers")

local _M = {}

if has_kong_helpers then
  _M.validate = helpers.validate_plugin_config_schema
else
  _M.validate = require("kong_rs_gateway.schema").validate_plugin_config_schema
end


--- Every message in a (nested) Kong error table, joined: lets a spec check
-- that a message is reported without depending on where Kong files it.
function _M.messages(err)
  if type(err) ~= "table" then
    return tostring(err)
  end
  local parts = {}
  for key, value in pairs(err) do
    parts[#parts + 1] = tostring(key) .. ": " .. _M.messages(value)
  end
  table.sort(parts)
  return table.concat(parts, "; ")
end


return _M
