-- kong.response (kong/pdk/response.lua): semantics, phase checks and the
-- delayed exit of the access phase (ctx.delay_response / delayed_response).
local phases = require "kong_rs_gateway.pdk.phases"
local json = require "kong_rs_gateway.json"
local resp = require "ngx.resp"

local ngx = ngx
local check = phases.check
local PHASES = phases.phases
local RAH = phases.rewrite_access_header
local HBL = phases.header_body_log
local type = type
local pairs = pairs
local ipairs = ipairs
local error = error
local lower = string.lower
local fmt = string.format
local co_yield = coroutine.yield
local add_header = resp.add_header
local json_encode = json.encode

local _M = {}

local log -- set by init (kong.log)

local function validate_header(name, value)
  if type(name) ~= "string" then
    error(fmt("invalid header name %q: got %s, expected string", tostring(name), type(name)), 3)
  end
  local tv = type(value)
  if tv == "table" then
    for _, v in ipairs(value) do
      local te = type(v)
      if te ~= "string" and te ~= "number" and te ~= "boolean" then
        error(fmt("invalid header value in array %q: got %s, expected string", name, te), 3)
      end
    end
  elseif tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
    error(fmt("invalid header value for %q: got %s, expected array of string, string, number or boolean",
              name, tv), 3)
  end
end
_M.validate_header = validate_header

-- As Kong's checks.normalize_multi_header (kong/pdk/private/checks.lua):
-- an empty value is sent as " ", not dropped.
local function normalize(value)
  if type(value) == "table" then
    local out = {}
    for i, v in ipairs(value) do
      v = tostring(v)
      out[i] = v == "" and " " or v
    end
    return out
  end
  value = tostring(value)
  return value == "" and " " or value
end

local function not_sent()
  if ngx.headers_sent then
    error("headers have already been sent", 3)
  end
end

function _M.get_status()
  check(HBL)
  local ctx = ngx.ctx
  return ngx.status
end

function _M.get_headers(max_headers)
  check(HBL)
  return ngx.resp.get_headers(max_headers or 100)
end

function _M.get_header(name)
  check(HBL)
  if type(name) ~= "string" then
    error("header name must be a string", 2)
  end
  local v = ngx.resp.get_headers()[name]
  if type(v) == "table" then
    return v[1]
  end
  return v
end

function _M.get_source()
  check(HBL)
  local ctx = ngx.ctx
  if ctx.KONG_UNEXPECTED then return "error" end
  if ctx.KONG_EXITED then return "exit" end
  if ctx.KONG_PROXIED then return "service" end
  return "error"
end

function _M.set_status(status)
  check(RAH)
  not_sent()
  if type(status) ~= "number" then
    error("code must be a number", 2)
  elseif status < 100 or status > 599 then
    error("code must be a number between 100 and 599", 2)
  end
  ngx.status = status
end

local function is_te(name)
  local l = lower(name)
  return l == "transfer-encoding" or l == "transfer_encoding"
end

function _M.set_header(name, value)
  check(RAH)
  not_sent()
  validate_header(name, value)
  if is_te(name) then
    log.warn("manually setting Transfer-Encoding. Ignored.")
    return
  end
  ngx.header[name] = normalize(value)
end

function _M.add_header(name, value)
  check(RAH)
  not_sent()
  validate_header(name, value)
  add_header(name, normalize(value))
end

function _M.clear_header(name)
  check(RAH)
  not_sent()
  if type(name) ~= "string" then
    error("header name must be a string", 2)
  end
  ngx.header[name] = nil
end

function _M.set_headers(headers)
  check(RAH)
  not_sent()
  if type(headers) ~= "table" then
    error("headers must be a table", 2)
  end
  for k, v in pairs(headers) do
    validate_header(k, v)
  end
  for k, v in pairs(headers) do
    if is_te(k) then
      log.warn("manually setting Transfer-Encoding. Ignored.")
    else
      ngx.header[k] = normalize(v)
    end
  end
end

function _M.get_raw_body()
  check(PHASES.body_filter)
  local ctx = ngx.ctx
  local chunk, eof = ngx.arg[1], ngx.arg[2]
  local buf = ctx.KONG_BODY_BUFFER
  if eof and not buf then
    return chunk
  end
  if type(chunk) == "string" and chunk ~= "" then
    buf = buf or {}
    buf[#buf + 1] = chunk
    ctx.KONG_BODY_BUFFER = buf
  end
  if eof then
    local body = buf and table.concat(buf) or ""
    ngx.arg[1] = body
    ctx.KONG_BODY_BUFFER = nil
    return body
  end
  ngx.arg[1] = nil
  return nil
end

function _M.set_raw_body(body)
  check(PHASES.body_filter)
  if type(body) ~= "string" then
    error("body must be a string", 2)
  end
  ngx.arg[1] = body == "" and "\n" or body
  ngx.arg[2] = true
  ngx.ctx.KONG_BODY_BUFFER = nil
end

-- Produce the response now (kong/pdk/response.lua send()).
local function send(status, body, headers)
  if ngx.headers_sent then
    error("headers have already been sent", 2)
  end
  ngx.status = status
  local has_ct, has_cl
  if headers then
    for name, value in pairs(headers) do
      local l = lower(name)
      if is_te(l) then
        log.warn("manually setting Transfer-Encoding. Ignored.")
      else
        ngx.header[name] = normalize(value)
      end
      if l == "content-type" or l == "content_type" then has_ct = true end
      if l == "content-length" or l == "content_length" then has_cl = true end
    end
  end
  local ctx = ngx.ctx
  local in_header_filter = ctx.KONG_PHASE == PHASES.header_filter
  if type(body) == "table" then
    local encoded, err = json_encode(body)
    if not encoded then
      error("body encoding failed while flushing response: " .. err, 2)
    end
    body = encoded
    if not has_ct then
      ngx.header["Content-Type"] = "application/json; charset=utf-8"
    end
  end
  if body ~= nil then
    if not has_cl then
      ngx.header["Content-Length"] = #body
    end
    if in_header_filter then
      ctx.response_body = body
    else
      ngx.print(body)
    end
  elseif not has_cl then
    ngx.header["Content-Length"] = 0
    if in_header_filter then
      ctx.response_body = ""
    end
  end
  if in_header_filter then
    return ngx.exit(ngx.OK)
  end
  return ngx.exit(status)
end
_M.send = send

function _M.flush_delayed(ctx)
  local r = ctx.delayed_response
  return send(r.status_code, r.content, r.headers)
end

function _M.exit(status, body, headers)
  check(RAH)
  if ngx.headers_sent then
    error("headers have already been sent", 2)
  end
  if type(status) ~= "number" then
    error("code must be a number", 2)
  elseif status < 100 or status > 599 then
    error("code must be a number between 100 and 599", 2)
  end
  if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
    error("body must be a nil, string or table", 2)
  end
  if headers ~= nil then
    if type(headers) ~= "table" then
      error("headers must be a nil or table", 2)
    end
    for k, v in pairs(headers) do
      validate_header(k, v)
    end
  end
  local ctx = ngx.ctx
  ctx.KONG_EXITED = true
  if ctx.delay_response and not ctx.delayed_response then
    -- access phase: remember it and leave the plugin's coroutine; the runloop
    -- flushes it once the phase loop ends (kong/init.lua)
    ctx.delayed_response = { status_code = status, content = body, headers = headers }
    co_yield()
    return
  end
  return send(status, body, headers)
end

function _M.error(status, message, headers)
  if type(status) ~= "number" or status < 400 or status > 599 then
    error("code must be a number between 400 and 599", 2)
  end
  return _M.exit(status, { message = message or "An unexpected error occurred" }, headers)
end

function _M.set_log(l)
  log = l
end

return _M
