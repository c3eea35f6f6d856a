-- kong.log: plain functions (the Rust bridge caches them), namespaced by the
-- plugin currently running, formatted like Kong: "[kong] file:line [plugin] msg".
local errlog = require "ngx.errlog"

local ngx = ngx
local raw_log = errlog.raw_log
local get_phase = ngx.get_phase
local getinfo = debug.getinfo
local select = select
local tostring = tostring
local concat = table.concat


local function namespace()
  local phase = get_phase()
  if phase == "init" or phase == "init_worker" or phase == "timer" then
    return nil
  end
  return ngx.ctx.KONG_PLUGIN
end

local function level(lvl)
  return function(...)
    local n = select("#", ...)
    local buf = {}
    for i = 1, n do
      buf[i] = tostring((select(i, ...)))
    end
    local info = getinfo(2, "Sl")
    local where = ""
    if info and info.currentline and info.currentline > 0 then
      where = (info.short_src:match("[^/]+$") or info.short_src) .. ":" .. info.currentline .. " "
    end
    local ns = namespace()
    raw_log(lvl, "[kong] " .. where .. (ns and ("[" .. ns .. "] ") or "") .. concat(buf))
  end
end

local _M = {
  emerg = level(ngx.EMERG), alert = level(ngx.ALERT), crit = level(ngx.CRIT),
  err = level(ngx.ERR), warn = level(ngx.WARN), notice = level(ngx.NOTICE),
  info = level(ngx.INFO), debug = level(ngx.DEBUG),
}
_M.inspect = setmetatable({}, { __call = function() end })

-- kong.log.set_serialize_value and kong.log.serialize (kong/pdk/log.lua),
-- http subsystem.
local phases = require "kong_rs_gateway.pdk.phases"
local check = phases.check
local PHASES_LOG = phases.phases.log
local WITH_CTX = phases.with_ctx
local null = ngx.null
local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local error = error
local byte = string.byte
local find = string.find
local sub = string.sub

function _M.set_serialize_value(key, value, options)
  check(WITH_CTX)
  if type(key) ~= "string" then
    error("key must be a string", 2)
  end
  local mode = options and options.mode or "set"
  if mode ~= "set" and mode ~= "add" and mode ~= "replace" then
    error("mode must be 'set', 'add' or 'replace'", 2)
  end
  local ctx = ngx.ctx
  local values = ctx.serialize_values
  if not values then
    values = {}
    ctx.serialize_values = values
  end
  values[#values + 1] = { key = key, value = value, mode = mode }
end

local function is_valid_value(v, visited)
  local t = type(v)
  if v == nil or v == null or t == "number" or t == "string" or t == "boolean" then
    return true
  end
  if t ~= "table" then
    return false
  end
  visited = visited or {}
  if visited[v] then
    return false
  end
  visited[v] = true
  for k, x in pairs(v) do
    local tk = type(k)
    if (tk ~= "string" and tk ~= "number" and tk ~= "boolean") or not is_valid_value(x, visited) then
      return false
    end
  end
  return true
end

-- kong.log.set_serialize_value's entries applied to the serialized table:
-- "a.b.c" keys make sub-tables; modes set, add, replace.
local function edit_result(root, values)
  for _, item in ipairs(values) do
    if not is_valid_value(item.value) then
      error("value must be nil, a number, string, boolean or a non-self-referencial table " ..
            "containing numbers, string and booleans", 3)
    end
    local key, mode = item.key, item.mode
    local set_or_add = mode == "set" or mode == "add"
    local node, start = root, 1
    for i = 2, #key do
      if byte(key, i) == 46 then -- "."
        local subkey = sub(key, start, i - 1)
        start = i + 1
        if node[subkey] == nil then
          if set_or_add then
            node[subkey] = {}
          else
            node = nil
            break
          end
        elseif type(node[subkey]) ~= "table" then
          error("The key '" .. key .. "' could not be used as a serialize value. " ..
                "Subkey '" .. subkey .. "' is not a table. It's " .. tostring(node[subkey]))
        end
        node = node[subkey]
      end
    end
    if type(node) == "table" then
      local last = sub(key, start)
      local existing = node[last]
      if mode == "set" or (mode == "add" and existing == nil)
         or (mode == "replace" and existing ~= nil) then
        node[last] = item.value
      end
    end
  end
  return root
end

-- kong.tools.table cycle_aware_deep_copy, for the entities in the log
local function deep_copy(v, seen)
  if type(v) ~= "table" then
    return v
  end
  seen = seen or {}
  if seen[v] then
    return seen[v]
  end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do
    out[deep_copy(k, seen)] = deep_copy(x, seen)
  end
  return setmetatable(out, getmetatable(v))
end

-- As Kong's router hands ctx.route/ctx.service to the serializer: entities
-- read without their null fields, with their workspace id.
local function entity_for_log(e, ws_id)
  if type(e) ~= "table" then
    return nil
  end
  local out = {}
  for k, x in pairs(e) do
    if x ~= null then
      out[k] = deep_copy(x)
    end
  end
  out.ws_id = out.ws_id or ws_id
  return out
end

-- Kong's build_authenticated_entity (the `authenticate_consumer` misspelling
-- is Kong's: only the credential's own consumer_id is used)
local function authenticated_entity(ctx)
  local credential = ctx.authenticated_credential
  if credential ~= nil then
    local consumer_id = credential.consumer_id
    if not consumer_id then
      local consumer = ctx.authenticate_consumer
      if consumer ~= nil then
        consumer_id = consumer.id
      end
    end
    return { id = credential.id, consumer_id = consumer_id }
  end
end

local SOURCE_NAMES = { error = "kong", exit = "kong", service = "upstream" }
local QUESTION_MARK = byte("?")

local function to_decimal(str)
  return tonumber(str, 10) or str
end

function _M.serialize(options)
  check(PHASES_LOG)
  local ongx = options and options.ngx or ngx
  local okong = options and options.kong or kong
  local req = okong.request
  local ctx = ongx.ctx
  local var = ongx.var

  local request_uri = ctx.request_uri or var.request_uri or ""
  local upstream_uri = var.upstream_uri or ""
  if upstream_uri ~= "" and not find(upstream_uri, "?", nil, true) then
    if byte(request_uri, -1) == QUESTION_MARK then
      upstream_uri = upstream_uri .. "?"
    elseif var.is_args == "?" then
      upstream_uri = upstream_uri .. "?" .. (var.args or "")
    end
  end

  local request_headers, response_headers
  if not (options and options.__skip_fetch_headers__) then
    request_headers = req.get_headers()
    response_headers = ongx.resp.get_headers()
    if request_headers["authorization"] ~= nil then
      request_headers["authorization"] = "REDACTED"
    end
    if request_headers["proxy-authorization"] ~= nil then
      request_headers["proxy-authorization"] = "REDACTED"
    end
  end

  local url
  local host_port = ctx.host_port or tonumber(var.server_port, 10)
  if host_port then
    url = var.scheme .. "://" .. var.host .. ":" .. host_port .. request_uri
  else
    url = var.scheme .. "://" .. var.host .. request_uri
  end

  local ws_id = ctx.workspace
  local root = {
    request = {
      id = var.request_id or "",
      uri = request_uri,
      url = url,
      querystring = req.get_query(),
      method = req.get_method(),
      headers = request_headers,
      size = to_decimal(var.request_length),
      -- tls: the gateway has no TLS listener
    },
    upstream_uri = upstream_uri,
    upstream_status = var.upstream_status or ctx.buffered_status or "",
    response = {
      status = ongx.status,
      headers = response_headers,
      size = to_decimal(var.bytes_sent),
    },
    latencies = {
      kong = ctx.KONG_PROXY_LATENCY or ctx.KONG_RESPONSE_LATENCY or 0,
      proxy = ctx.KONG_WAITING_TIME or -1,
      request = tonumber(var.request_time) * 1000,
      receive = ctx.KONG_RECEIVE_TIME or 0,
    },
    tries = ctx.balancer_tries,
    authenticated_entity = authenticated_entity(ctx),
    route = entity_for_log(ctx.route, ws_id),
    service = entity_for_log(ctx.service, ws_id),
    consumer = deep_copy(ctx.authenticated_consumer),
    client_ip = var.remote_addr,
    started_at = req.get_start_time(),
    source = SOURCE_NAMES[okong.response.get_source(ctx)],
    workspace = ws_id,
    workspace_name = "default",
  }

  local values = ctx.serialize_values
  if values then
    root = edit_result(root, values)
  end
  return root
end

return setmetatable(_M, { __call = function(_, ...) return _M.notice(...) end })
