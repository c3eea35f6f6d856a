-- kong.request (kong/pdk/request.lua) over ngx.*.
local phases = require "kong_rs_gateway.pdk.phases"
local normalize = require("kong_rs_gateway.uri").normalize

local ngx = ngx
local var = ngx.var
local req = ngx.req
local check = phases.check
local REQUEST = phases.request
local BEFORE_CONTENT = phases.before_content
local type = type
local tonumber = tonumber
local find = string.find
local sub = string.sub
local error = error

local MIN_HEADERS, MAX_HEADERS = 1, 1000

local _M = {}

local function check_max(max, what)
  if max == nil then return end
  if type(max) ~= "number" then
    error(what .. " must be a number", 3)
  elseif max < MIN_HEADERS then
    error(what .. " must be >= " .. MIN_HEADERS, 3)
  elseif max > MAX_HEADERS then
    error(what .. " must be <= " .. MAX_HEADERS, 3)
  end
end

function _M.get_scheme() check(REQUEST) return var.scheme end
function _M.get_host() check(REQUEST) return var.host end
function _M.get_port() check(REQUEST) return tonumber(var.server_port) end
function _M.get_forwarded_scheme() check(REQUEST) return var.scheme end
function _M.get_forwarded_host() check(REQUEST) return var.host end
function _M.get_forwarded_port() check(REQUEST) return tonumber(var.server_port) end
function _M.get_http_version() check(REQUEST) return req.http_version() end
function _M.get_method()
  check(REQUEST)
  return req.get_method()
end

-- kong/pdk/request.lua: get_raw_path is the path as sent, get_path its
-- normalised form (kong/tools/uri.lua normalize, slashes merged)
function _M.get_raw_path()
  check(REQUEST)
  local uri = var.request_uri or ""
  local q = find(uri, "?", 2, true)
  return q and sub(uri, 1, q - 1) or uri
end

function _M.get_path()
  return normalize(_M.get_raw_path(), true)
end

function _M.get_path_with_query()
  check(REQUEST)
  return var.request_uri or ""
end

function _M.get_raw_query()
  check(REQUEST)
  return var.args or ""
end

function _M.get_query_arg(name)
  check(REQUEST)
  if type(name) ~= "string" then
    error("query argument name must be a string", 2)
  end
  local v = req.get_uri_args()[name]
  if type(v) == "table" then
    return v[1]
  end
  return v
end

function _M.get_query(max_args)
  check(REQUEST)
  check_max(max_args, "max_args")
  return req.get_uri_args(max_args or 100)
end

-- As Kong's (kong/pdk/request.lua -> kong/tools/http.lua get_header, with
-- kong/tools/string.lua replace_dashes): the nginx variable, lowercased by
-- nginx itself; a value holding ", " may be repeated headers joined by nginx,
-- so Kong looks the name up in ngx.req.get_headers() and returns its first
-- value.
local replace_char = require("resty.core.utils").str_replace_char

function _M.get_header(name)
  check(REQUEST)
  if type(name) ~= "string" then
    error("header name must be a string", 2)
  end
  local value = var["http_" .. replace_char(name, "-", "_")]
  if not value or not find(value, ", ", 1, true) then
    return value
  end
  value = req.get_headers()[name]
  return type(value) == "table" and value[1] or value
end

function _M.get_headers(max_headers)
  check(REQUEST)
  check_max(max_headers, "max_headers")
  return req.get_headers(max_headers or 100)
end

-- kong/pdk/request.lua get_raw_body: a body nginx buffered to a file is
-- read only when the caller allows it (max_allowed_file_size, 0 = any size).
local FILE_CHUNK = 1048576

function _M.get_raw_body(max_allowed_file_size)
  check(BEFORE_CONTENT)
  req.read_body()
  local body = req.get_body_data()
  if body then
    return body
  end
  local body_file = req.get_body_file()
  if not body_file then
    return ""
  end
  if not max_allowed_file_size or max_allowed_file_size < 0 then
    return nil, "request body did not fit into client body buffer, consider raising 'client_body_buffer_size'"
  end
  local file, err = io.open(body_file, "r")
  if not file then
    return nil, "failed to open cached request body '" .. body_file .. "': " .. err
  end
  local size = file:seek("end") or 0
  if max_allowed_file_size > 0 and size > max_allowed_file_size then
    file:close()
    return nil, ("request body file too big: %d > %d"):format(size, max_allowed_file_size)
  end
  file:seek("set")
  local chunks = {}
  while true do
    local data, rerr = file:read(FILE_CHUNK)
    if not data then
      if rerr then
        file:close()
        return nil, "failed to read cached request body '" .. body_file .. "': " .. rerr
      end
      break
    end
    chunks[#chunks + 1] = data
    -- Kong yields here (kong.tools.yield) so that a big file does not starve
    -- the worker; ngx.sleep(0) is that yield where the phase allows it
    pcall(ngx.sleep, 0)
  end
  file:close()
  return table.concat(chunks)
end

function _M.get_start_time()
  check(REQUEST)
  return ngx.ctx.KONG_PROCESSING_START or (req.start_time() * 1000)
end

return _M
