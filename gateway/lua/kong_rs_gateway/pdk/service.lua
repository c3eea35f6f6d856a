-- kong.service.request and kong.service.response
-- (kong/pdk/service/request.lua, kong/pdk/service/response.lua).
local phases = require "kong_rs_gateway.pdk.phases"
local response = require "kong_rs_gateway.pdk.response"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local check = phases.check
local RA = phases.rewrite_access
local RAB = phases.rewrite_access_balancer
local HBL = phases.header_body_log
local type = type
local pairs = pairs
local tonumber = tonumber
local error = error
local lower = string.lower
local gsub = string.gsub
local sub = string.sub
local byte = string.byte
local validate_header = response.validate_header

local request = {}
local service_response = {}

local METHODS = {
  GET = ngx.HTTP_GET, HEAD = ngx.HTTP_HEAD, PUT = ngx.HTTP_PUT, POST = ngx.HTTP_POST,
  DELETE = ngx.HTTP_DELETE, OPTIONS = ngx.HTTP_OPTIONS, MKCOL = ngx.HTTP_MKCOL,
  COPY = ngx.HTTP_COPY, MOVE = ngx.HTTP_MOVE, PROPFIND = ngx.HTTP_PROPFIND,
  PROPPATCH = ngx.HTTP_PROPPATCH, LOCK = ngx.HTTP_LOCK, UNLOCK = ngx.HTTP_UNLOCK,
  PATCH = ngx.HTTP_PATCH, TRACE = ngx.HTTP_TRACE,
}

-- As Kong's checks.normalize_multi_header (kong/pdk/private/checks.lua):
-- an empty value is sent as " ", not dropped.
local function str(v)
  if type(v) == "table" then
    local out = {}
    for i, x in ipairs(v) do
      x = tostring(x)
      out[i] = x == "" and " " or x
    end
    return out
  end
  v = tostring(v)
  return v == "" and " " or v
end

function request.set_scheme(scheme)
  check(RAB)
  if scheme ~= "http" and scheme ~= "https" then
    error("invalid scheme: " .. tostring(scheme), 2)
  end
  var.upstream_scheme = scheme
end

function request.set_path(path)
  check(RAB)
  if type(path) ~= "string" then
    error("path must be a string", 2)
  end
  if byte(path, 1) ~= 47 then
    error("path must start with /", 2)
  end
  ngx.ctx.KONG_UPSTREAM_PATH = path
end

function request.set_raw_query(query)
  check(RAB)
  if type(query) ~= "string" then
    error("query must be a string", 2)
  end
  req.set_uri_args(query)
end

function request.set_query(args)
  check(RAB)
  if type(args) ~= "table" then
    error("args must be a table", 2)
  end
  for k in pairs(args) do
    if type(k) ~= "string" then
      error("arg keys must be strings", 2)
    end
  end
  req.set_uri_args(args)
end

function request.set_method(method)
  check(RAB)
  if type(method) ~= "string" then
    error("method must be a string", 2)
  end
  local m = METHODS[method]
  if not m then
    error("invalid method: " .. method, 2)
  end
  req.set_method(m)
end

function request.set_header(name, value)
  check(RAB)
  validate_header(name, value)
  if lower(name) == "host" then
    var.upstream_host = value
    return
  end
  req.set_header(name, str(value))
end

function request.add_header(name, value)
  check(RAB)
  validate_header(name, value)
  if lower(name) == "host" then
    var.upstream_host = value
    return
  end
  local old = req.get_headers()[name]
  local values = type(old) == "table" and old or (old and { old } or {})
  local add = str(value)
  if type(add) == "table" then
    for _, v in ipairs(add) do values[#values + 1] = v end
  else
    values[#values + 1] = add
  end
  req.set_header(name, values)
end

function request.clear_header(name)
  check(RAB)
  if type(name) ~= "string" then
    error("header name must be a string", 2)
  end
  req.clear_header(name)
end

function request.set_headers(headers)
  check(RAB)
  if type(headers) ~= "table" then
    error("headers must be a table", 2)
  end
  for k, v in pairs(headers) do
    validate_header(k, v)
  end
  for k, v in pairs(headers) do
    if lower(k) == "host" then
      var.upstream_host = v
    else
      req.set_header(k, str(v))
    end
  end
end

function request.set_raw_body(body)
  check(RA)
  if type(body) ~= "string" then
    error("body must be a string", 2)
  end
  req.read_body()
  req.set_body_data(body)
  req.set_header("Content-Length", tostring(#body))
end

-- service.response --------------------------------------------------------

local function buffered(ctx)
  return ctx.buffered_status ~= nil
end

function service_response.get_status()
  check(HBL)
  local ctx = ngx.ctx
  if buffered(ctx) then
    return ctx.buffered_status
  end
  local s = var.upstream_status
  if not s or s == "" then
    return nil
  end
  -- "502, 200" after retries: the last one is the service's answer
  return tonumber(sub(s, -3))
end

function service_response.get_headers(max_headers)
  check(HBL)
  local ctx = ngx.ctx
  if buffered(ctx) then
    return ctx.buffered_headers
  end
  -- headers of the response being sent, which include the service's
  return ngx.resp.get_headers(max_headers or 100)
end

function service_response.get_header(name)
  check(HBL)
  if type(name) ~= "string" then
    error("header name must be a string", 2)
  end
  local ctx = ngx.ctx
  if buffered(ctx) then
    local h = ctx.buffered_headers
    local v = h[name] or h[lower(name)]
    if v == nil then
      local want = gsub(lower(name), "_", "-")
      for k, x in pairs(h) do
        if lower(k) == want then v = x break end
      end
    end
    if type(v) == "table" then return v[1] end
    return v
  end
  return var["upstream_http_" .. gsub(lower(name), "-", "_")]
end

function service_response.get_raw_body()
  check(HBL)
  return ngx.ctx.buffered_body
end

return { request = request, response = service_response }
