-- The subset of Kong's kong/db/schema/typedefs.lua that plugin schemas use.
-- Plain tables (Kong wraps them with Schema.define; fields are the same).
-- Loads outside nginx.
local null = require("kong_rs_gateway.json").null

local fmt = string.format

local typedefs = {}

local function validate_host(host)
  if type(host) ~= "string" or host == "" then
    return nil, "invalid value: " .. tostring(host)
  end
  local name, port = host:match("^([^:]+):(%d+)$")
  if port then
    return nil, "must not have a port"
  end
  name = host
  if name:match("^%d+%.%d+%.%d+%.%d+$") then
    for octet in name:gmatch("%d+") do
      if tonumber(octet) > 255 then
        return nil, "invalid ipv4 address: " .. host
      end
    end
    return true
  end
  if not name:match("^[%w%.%-_]+$") or name:match("%.%.") or #name > 253 then
    return nil, "invalid hostname: " .. host
  end
  return true
end

local function validate_wildcard_host(host)
  if type(host) ~= "string" then
    return nil, "invalid value"
  end
  local stripped, n = host:gsub("^%*%.", "")
  if n == 0 then
    stripped, n = host:gsub("%.%*$", "")
  end
  if host:find("*", 1, true) and n == 0 or stripped:find("*", 1, true) then
    return nil, "invalid wildcard: must be placed at leftmost or rightmost label"
  end
  return validate_host((stripped:gsub(":%d+$", "")))
end

local function validate_path(path)
  if type(path) ~= "string" then
    return nil, "invalid path"
  end
  if path:find("[%c ]") then
    return nil, "invalid path: '" .. path .. "' (characters outside of the reserved list of RFC 3986 found)"
  end
  return true
end

local function validate_url(url)
  if type(url) ~= "string" then
    return nil, "invalid url"
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.+)$")
  if not scheme then
    return nil, "missing host in url"
  end
  if not rest:match("^[^/?#]+") then
    return nil, "missing host in url"
  end
  return true
end

local function validate_name(name)
  if not name:match("^[%w%.%-_~]+$") then
    return nil, fmt("invalid value '%s': the only accepted ascii characters are alphanumerics or ., -, _, and ~", name)
  end
  return true
end

typedefs.http_method = { type = "string", match = "^%u+$" }
typedefs.protocol = { type = "string", one_of = { "grpc", "grpcs", "http", "https", "tcp", "tls", "udp", "ws", "wss" } }
typedefs.protocols = { type = "set", required = true, default = { "grpc", "grpcs", "http", "https" },
                       elements = typedefs.protocol }
typedefs.protocols_http = { type = "set", required = true, default = { "grpc", "grpcs", "http", "https" },
                            elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https", "ws", "wss" } } }
typedefs.host = { type = "string", custom_validator = validate_host }
typedefs.host_with_optional_port = { type = "string", custom_validator = validate_host }
typedefs.wildcard_host = { type = "string", custom_validator = validate_wildcard_host }
typedefs.ip = { type = "string", match = "^[%x%.:]+$" }
typedefs.port = { type = "integer", between = { 0, 65535 } }
typedefs.path = { type = "string", starts_with = "/", custom_validator = validate_path }
typedefs.url = { type = "string", custom_validator = validate_url }
typedefs.timeout = { type = "integer", between = { 0, 2 ^ 31 - 2 } }
typedefs.uuid = { type = "string", uuid = true }
typedefs.auto_timestamp_s = { type = "integer" }
typedefs.name = { type = "string", unique = true, custom_validator = validate_name }
typedefs.utf8_name = typedefs.name
typedefs.tag = { type = "string", required = true }
typedefs.tags = { type = "set", elements = typedefs.tag }
typedefs.header_name = { type = "string", match = "^[%w!#$%%&'*+%-%.^_`|~]+$" }
typedefs.no_consumer = { type = "foreign", reference = "consumers", eq = null }
typedefs.no_route = { type = "foreign", reference = "routes", eq = null }
typedefs.no_service = { type = "foreign", reference = "services", eq = null }
typedefs.no_consumer_group = { type = "foreign", reference = "consumer_groups", eq = null }

typedefs._validate = {
  host = validate_host, wildcard_host = validate_wildcard_host, path = validate_path,
  url = validate_url, name = validate_name,
}

return typedefs
