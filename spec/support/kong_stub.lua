-- A stubbed `kong` (and `ngx.arg`) global for unit specs, as Kong's own unit
-- specs stub the PDK: plain functions that record what a plugin did and
-- serve a canned request. No nginx needed.
--
--   local stub = require("spec.support.kong_stub")
--   local kong_state = stub.install({ headers = { host = "example.com" } })
--   handler:access(conf)
--   assert.equal("hi", kong_state.response_headers["x-hello-from-rust"])

local cjson = require("cjson")

local _M = {}

local LEVELS = { "err", "warn", "notice", "info", "debug" }


local function concat(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[i] = tostring((select(i, ...)))
  end
  return table.concat(parts)
end


-- The request and the record of the current test: the `kong` table below
-- is built once and reads them, so the native module, which looks kong.*
-- functions up once per worker (per Lua state) as in Kong, always calls
-- functions that see the current test.
local current = {}

local kong = {
  log = {},
  request = {},
  response = {},
  service = { request = {}, response = {} },
  client = {},
  ctx = {},
  nginx = {},
  router = {},
}

for _, level in ipairs(LEVELS) do
  kong.log[level] = function(...)
    local logs = current.state.logs
    logs[#logs + 1] = { level = level, message = concat(...) }
  end
end

kong.request.get_header = function(name) return (current.request.headers or {})[name:lower()] end
kong.request.get_headers = function() return current.request.headers or {} end
kong.request.get_method = function() return current.request.method or "GET" end
kong.request.get_path = function() return current.request.path or "/" end
kong.request.get_raw_query = function() return current.request.query or "" end
kong.request.get_path_with_query = function()
  local query = current.request.query or ""
  return (current.request.path or "/") .. (query ~= "" and "?" .. query or "")
end
kong.request.get_raw_body = function()
  current.state.body_read = true
  return current.request.body
end
kong.request.get_start_time = function() return 1700000000000 end
kong.request.get_scheme = function() return "http" end
kong.request.get_host = function() return "localhost" end
kong.request.get_port = function() return 8000 end
kong.request.get_http_version = function() return 1.1 end

kong.response.get_status = function() return current.state.status end
kong.response.set_status = function(status)
  -- Kong raises on an out-of-range status (kong/pdk/response.lua).
  if type(status) ~= "number" or status < 100 or status > 599 then
    error("code must be a number between 100 and 599", 2)
  end
  current.state.status = status
end
kong.response.set_header = function(name, value)
  current.state.response_headers[name:lower()] = value
end
kong.response.get_header = function(name) return current.state.response_headers[name:lower()] end
kong.response.exit = function(status, body, exit_headers)
  if type(body) == "table" then
    body = cjson.encode(body)
  end
  local exits = current.state.exits
  exits[#exits + 1] = { status = status, body = body, headers = exit_headers }
  current.state.status = status
end

kong.service.request.set_header = function(name, value)
  current.state.upstream_headers[name:lower()] = value
end

kong.client.get_ip = function() return "127.0.0.1" end
kong.client.get_forwarded_ip = function() return "127.0.0.1" end
kong.router.get_route = function() return { id = "route-id", name = "r" } end
kong.router.get_service = function() return { id = "service-id", name = "s" } end
kong.nginx.get_subsystem = function() return "http" end


--- Installs the `kong` global for a new request and returns the table
-- recording its effects. `request` may set method, path, query, headers
-- (lower-case names), body, and chunk/eof for body_filter (`ngx.arg`).
function _M.install(request)
  request = request or {}
  local state = {
    logs = {},                 -- { { level = "err", message = "..." }, ... }
    response_headers = {},
    upstream_headers = {},
    status = 200,
    exits = {},                -- every kong.response.exit call
    ctx_plugin = {},
    ctx_shared = {},
  }
  current.state, current.request = state, request
  kong.ctx.plugin, kong.ctx.shared = state.ctx_plugin, state.ctx_shared

  _G.kong = kong
  _G.ngx = _G.ngx or {}
  _G.ngx.arg = { request.chunk, request.eof }
  return state
end


--- The log lines at `level`, as strings.
function _M.logs_at(state, level)
  local out = {}
  for _, line in ipairs(state.logs) do
    if line.level == level then
      out[#out + 1] = line.message
    end
  end
  return out
end


return _M
