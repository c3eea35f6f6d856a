-- Service, Route and Consumer entity schemas (the fields of Kong's
-- kong/db/schema/entities/{services,routes,consumers}.lua this gateway
-- honours), plus the `url` shorthand and the entity checks.
local typedefs = require "kong.db.schema.typedefs"
local null = require("kong_rs_gateway.json").null

local type = type
local tonumber = tonumber

local _M = {}

local nullable_foreign = { type = "foreign", reference = "services", default = null }

_M.services = {
  name = "services",
  fields = {
    { id = typedefs.uuid },
    { created_at = typedefs.auto_timestamp_s },
    { updated_at = typedefs.auto_timestamp_s },
    { name = typedefs.name },
    { retries = { type = "integer", default = 5, between = { 0, 32767 } } },
    -- only what nginx proxies here without a stream module
    { protocol = { type = "string", required = true, default = "http", one_of = { "http", "https" } } },
    { host = { type = "string", required = true, custom_validator = typedefs._validate.host } },
    { port = { type = "integer", required = true, default = 80, between = { 0, 65535 } } },
    { path = typedefs.path },
    { connect_timeout = { type = "integer", default = 60000, between = { 1, 2 ^ 31 - 2 } } },
    { write_timeout = { type = "integer", default = 60000, between = { 1, 2 ^ 31 - 2 } } },
    { read_timeout = { type = "integer", default = 60000, between = { 1, 2 ^ 31 - 2 } } },
    { tags = typedefs.tags },
    { client_certificate = { type = "foreign", reference = "certificates", eq = null } },
    { tls_verify = { type = "boolean" } },
    { tls_verify_depth = { type = "integer", between = { 0, 64 } } },
    { ca_certificates = { type = "array", elements = { type = "string" } } },
    { enabled = { type = "boolean", required = true, default = true } },
  },
}

_M.routes = {
  name = "routes",
  fields = {
    { id = typedefs.uuid },
    { created_at = typedefs.auto_timestamp_s },
    { updated_at = typedefs.auto_timestamp_s },
    { name = typedefs.name },
    { protocols = { type = "set", required = true, default = { "http", "https" },
                    elements = { type = "string", one_of = { "http", "https" } } } },
    { methods = { type = "set", elements = typedefs.http_method } },
    { hosts = { type = "array", elements = { type = "string", custom_validator = typedefs._validate.wildcard_host } } },
    { paths = { type = "array", elements = { type = "string", custom_validator = function(p)
      if p:sub(1, 1) == "~" then
        return nil, "regex paths ('~' prefix) are not supported by kong-rs-gateway"
      end
      if p:sub(1, 1) ~= "/" then
        return nil, "should start with: / (fixed path) or ~/ (regex path)"
      end
      return typedefs._validate.path(p)
    end } } },
    -- header matching is not implemented: refuse rather than ignore it
    { headers = { type = "map", keys = { type = "string" }, values = { type = "array", elements = { type = "string" } },
                  len_max = 0 } },
    { https_redirect_status_code = { type = "integer", required = true, default = 426,
                                     one_of = { 426, 301, 302, 307, 308 } } },
    { regex_priority = { type = "integer", default = 0 } },
    { strip_path = { type = "boolean", required = true, default = true } },
    { path_handling = { type = "string", default = "v0", one_of = { "v0", "v1" } } },
    { preserve_host = { type = "boolean", required = true, default = false } },
    { request_buffering = { type = "boolean", required = true, default = true } },
    { response_buffering = { type = "boolean", required = true, default = true } },
    { snis = { type = "set", elements = { type = "string" } } },
    { sources = { type = "set", elements = { type = "record", fields = { { ip = { type = "string" } }, { port = typedefs.port } } } } },
    { destinations = { type = "set", elements = { type = "record", fields = { { ip = { type = "string" } }, { port = typedefs.port } } } } },
    { tags = typedefs.tags },
    { service = nullable_foreign },
  },
}

-- kong/db/schema/entities/consumers.lua: username and custom_id unique,
-- at least one of them set (entity check below).
_M.consumers = {
  name = "consumers",
  fields = {
    { id = typedefs.uuid },
    { created_at = typedefs.auto_timestamp_s },
    { updated_at = typedefs.auto_timestamp_s },
    { username = { type = "string" } },
    { custom_id = { type = "string" } },
    { tags = typedefs.tags },
  },
}

local DEFAULT_PORTS = { http = 80, https = 443 }

--- Expand a service's `url` shorthand into protocol/host/port/path (Kong's
-- shorthand_fields). Returns the input (modified) or nil, errors.
function _M.expand_service_url(input)
  local url = input.url
  if url == nil then
    return input
  end
  input.url = nil
  if url == null then
    return input
  end
  local ok, err = typedefs._validate.url(url)
  if not ok then
    return nil, { url = err }
  end
  local scheme, authority, path = url:match("^(%a[%w+.-]*)://([^/?#]+)([^?#]*)")
  local host, port = authority:match("^(.-):(%d+)$")
  if not host then
    host = authority
  end
  input.protocol = scheme:lower()
  input.host = host
  input.port = tonumber(port) or DEFAULT_PORTS[input.protocol] or 80
  input.path = (path ~= "" and path) or null
  return input
end

--- Route checks Kong runs as entity checks.
function _M.check_route(route)
  local function empty(v)
    return v == nil or v == null or (type(v) == "table" and next(v) == nil)
  end
  if empty(route.methods) and empty(route.hosts) and empty(route.paths) then
    return nil, { ["@entity"] = { "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'" } }
  end
  return true
end

local function nonempty(v)
  return not (v == nil or v == null or v == "" or (type(v) == "table" and next(v) == nil))
end

--- Consumer check Kong runs as an entity check (at_least_one_of custom_id,
-- username); on a PATCH Kong's message starts with "when updating, ".
function _M.check_consumer(consumer, updating)
  if nonempty(consumer.custom_id) or nonempty(consumer.username) then
    return true
  end
  return nil, { ["@entity"] = { (updating and "when updating, " or "") ..
    "at least one of these fields must be non-empty: 'custom_id', 'username'" } }
end

return _M
