-- The Admin API (content_by_lua): Kong's endpoints, shapes and errors
-- (kong/api/endpoints.lua, kong/api/routes/*.lua, kong/db/errors.lua).
local store = require "kong_rs_gateway.store"
local dao = require "kong_rs_gateway.dao"
local plugins = require "kong_rs_gateway.plugins"
local schema = require "kong_rs_gateway.schema"
local entities = require "kong_rs_gateway.entities"
local json = require "kong_rs_gateway.json"

local ngx = ngx
local var = ngx.var
local req = ngx.req
local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local lower = string.lower
local find = string.find
local sub = string.sub
local unescape = ngx.unescape_uri

local null = json.null

-- Kong's Admin API takes bodies up to 10 MB (client_max_body_size and
-- client_body_buffer_size 10m in kong/templates/nginx_kong.lua)
local MAX_BODY = 10 * 1024 * 1024

local _M = {}

local function respond(status, body)
  ngx.status = status
  if body == nil then
    return ngx.exit(status)
  end
  local encoded, err = json.encode(body)
  if not encoded then
    ngx.log(ngx.ERR, "[admin] cannot encode response: ", err)
    ngx.status = 500
    encoded = '{"message":"An unexpected error occurred"}'
  end
  ngx.header["Content-Type"] = "application/json; charset=utf-8"
  ngx.header["Content-Length"] = #encoded
  ngx.print(encoded)
  return ngx.exit(ngx.status)
end

local function respond_err(err)
  if err.log then
    ngx.log(ngx.ERR, "[admin] ", err.log)
  end
  return respond(err.status or 500, err.body or { message = "An unexpected error occurred" })
end

-- Form bodies: "config.message=hi&paths[]=/a" -> nested tables, then string
-- values converted per the entity's schema (Kong's arguments.infer).
local function set_path(t, key, value)
  local parts = {}
  for part in key:gmatch("[^%.]+") do
    parts[#parts + 1] = part
  end
  if #parts == 0 or #parts > 16 then
    return nil
  end
  for i = 1, #parts - 1 do
    local k = parts[i]:gsub("%[%d*%]$", "")
    if type(t[k]) ~= "table" then t[k] = {} end
    t = t[k]
  end
  local last, idx = parts[#parts]:match("^(.-)%[(%d*)%]$")
  if last then
    if type(t[last]) ~= "table" then t[last] = {} end
    local arr = t[last]
    local values = type(value) == "table" and value or { value }
    for _, v in ipairs(values) do
      if idx ~= "" and tonumber(idx) then
        arr[tonumber(idx)] = v
      else
        arr[#arr + 1] = v
      end
    end
  else
    t[parts[#parts]] = value
  end
  return true
end

local function infer(def, value)
  if def == nil or value == nil then
    return value
  end
  local t = def.type
  if type(value) == "string" then
    if t == "integer" or t == "number" then
      return tonumber(value) or value
    elseif t == "boolean" then
      if value == "true" then return true end
      if value == "false" then return false end
      return value
    elseif t == "array" or t == "set" then
      if value == "" then return json.array() end
      return json.array({ infer(def.elements, value) })
    end
    return value
  end
  if type(value) == "table" then
    if t == "array" or t == "set" then
      local out = json.array()
      for i, v in pairs(value) do
        if type(i) == "number" then out[i] = infer(def.elements, v) end
      end
      return out
    elseif t == "record" and def.fields then
      local defs = schema.fields_of(def).defs
      for k, v in pairs(value) do
        value[k] = infer(defs[k], v)
      end
    elseif t == "map" and def.values then
      for k, v in pairs(value) do value[k] = infer(def.values, v) end
    end
  end
  return value
end

local function entity_def(etype, body)
  if etype == "services" then return entities.services end
  if etype == "routes" then return entities.routes end
  if etype == "consumers" then return entities.consumers end
  local p = type(body.name) == "string" and plugins.get(body.name)
  return p and schema.plugin_entity_def(p.schema) or nil
end

local function read_body()
  req.read_body()
  local body = req.get_body_data()
  if not body then
    local file = req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then
        body = f:read(MAX_BODY + 1)
        f:close()
      end
    end
  end
  return body
end

-- Returns the decoded body table, or nil, err (already an HTTP error).
local function get_body(etype, existing_name)
  local ctype = lower(var.content_type or "")
  local raw = read_body()
  if raw and #raw > MAX_BODY then
    return nil, { status = 413, body = { message = "Payload too large" } }
  end
  if find(ctype, "application/json", 1, true) then
    local body = json.decode(raw or "")
    if type(body) ~= "table" or json.is_array(body) then
      return nil, { status = 400, body = { message = "Cannot parse JSON body" } }
    end
    return body
  end
  if raw == nil or raw == "" then
    return {}
  end
  if find(ctype, "application/x-www-form-urlencoded", 1, true) then
    local args, err = req.get_post_args(1000)
    if not args then
      return nil, { status = 400, body = { message = "Cannot parse form body: " .. tostring(err) } }
    end
    local body = {}
    for k, v in pairs(args) do
      if v == true then v = "" end
      if not set_path(body, k, v) then
        return nil, { status = 400, body = { message = "invalid form key: " .. k } }
      end
    end
    if existing_name and body.name == nil then
      body.name = existing_name
    end
    local def = entity_def(etype, body)
    if def then
      body = infer({ type = "record", fields = def.fields }, body)
    end
    return body
  end
  return nil, { status = 415, body = { message = "Unsupported Content-Type" } }
end

local function list_response(list)
  local args = req.get_uri_args(20)
  local size = tonumber(args.size) or 100
  if size < 1 or size > 1000 then
    return respond(400, { code = 9, name = "invalid size",
                          message = "size must be an integer between 1 and 1000" })
  end
  local offset = tonumber(args.offset) or 0
  local data = json.array()
  for i = offset + 1, math.min(#list, offset + size) do
    data[#data + 1] = list[i]
  end
  local next_offset = offset + size < #list and (offset + size) or nil
  local out = { data = data, next = null }
  if next_offset then
    out.offset = tostring(next_offset)
    out.next = var.uri .. "?offset=" .. next_offset .. "&size=" .. size
  end
  return respond(200, out)
end

local function read_state()
  local state, err = store.current()
  if not state then
    return respond_err({ status = 500, log = err })
  end
  return state
end

local function write(fn)
  local res, err = store.transaction(fn)
  if res == nil then
    return respond_err(err)
  end
  return res
end

local SINGULAR = { services = "service", routes = "route", consumers = "consumer" }

-- /{etype} and /{parent}/{key}/{etype}
local function collection(method, etype, parent_type, parent_key)
  if method == "GET" then
    local state = read_state()
    if parent_type then
      local parent = dao.find(state, parent_type, parent_key)
      if not parent then
        return respond(404, { message = "Not found" })
      end
      return list_response(dao.list(state, etype, SINGULAR[parent_type], parent.id))
    end
    if etype == "consumers" then
      -- kong/api/routes/consumers.lua: /consumers?custom_id=x
      local custom_id = req.get_uri_args(20).custom_id
      if custom_id ~= nil then
        if type(custom_id) ~= "string" or custom_id == "" then
          return respond(400, { message = "custom_id must be an unempty string" })
        end
        local c = dao.find_by(state, "consumers", "custom_id", custom_id)
        return respond(200, { data = json.array({ c }), next = null })
      end
    end
    return list_response(dao.list(state, etype))
  elseif method == "POST" then
    local body, err = get_body(etype)
    if not body then
      return respond_err(err)
    end
    local created = write(function(state)
      if parent_type then
        local parent = dao.find(state, parent_type, parent_key)
        if not parent then
          return nil, { status = 404, body = { message = "Not found" } }
        end
        body[SINGULAR[parent_type]] = { id = parent.id }
      end
      return dao.insert(state, etype, body)
    end)
    return respond(201, created)
  end
  return respond(405, { message = "Method not allowed" })
end

local function entity(method, etype, key, parent_type, parent_key)
  if method == "GET" then
    local state = read_state()
    local e = dao.find(state, etype, key)
    if not e then
      return respond(404, { message = "Not found" })
    end
    if parent_type then
      -- /{parent}/{key}/{etype}/{id}: the entity must belong to that parent
      local parent = dao.find(state, parent_type, parent_key)
      local ref = e[SINGULAR[parent_type]]
      if not parent or type(ref) ~= "table" or ref.id ~= parent.id then
        return respond(404, { message = "Not found" })
      end
    end
    return respond(200, e)
  elseif method == "DELETE" then
    write(function(state)
      local e = dao.find(state, etype, key)
      if not e then
        return true, false
      end
      return dao.delete(state, etype, e)
    end)
    return respond(204)
  elseif method == "PATCH" then
    local existing_name
    if etype == "plugins" then
      local e = dao.find(read_state(), etype, key)
      existing_name = e and e.name
    end
    local body, err = get_body(etype, existing_name)
    if not body then
      return respond_err(err)
    end
    local updated = write(function(state)
      local e = dao.find(state, etype, key)
      if not e then
        return nil, { status = 404, body = { message = "Not found" } }
      end
      return dao.update(state, etype, e, body)
    end)
    return respond(200, updated)
  elseif method == "PUT" then
    local body, err = get_body(etype)
    if not body then
      return respond_err(err)
    end
    local saved = write(function(state)
      local nested
      if parent_type then
        local parent = dao.find(state, parent_type, parent_key)
        if not parent then
          return nil, { status = 404, body = { message = "Not found" } }
        end
        nested = { [SINGULAR[parent_type]] = { id = parent.id } }
      end
      return dao.upsert(state, etype, key, body, nested)
    end)
    return respond(200, saved)
  end
  return respond(405, { message = "Method not allowed" })
end

local function root()
  local available = {}
  for _, name in ipairs(plugins.enabled_names()) do
    available[name] = { version = plugins.get(name).handler.VERSION or null, priority = plugins.get(name).priority }
  end
  return respond(200, {
    version = kong.version,
    tagline = "Welcome to kong",
    node_id = kong.node.get_id(),
    hostname = kong.node.get_hostname(),
    lua_version = jit and jit.version or _VERSION,
    gateway = "kong-rs-gateway",
    plugins = { available_on_server = available, enabled_in_cluster = json.array() },
    configuration = { database = "off", role = "traditional", prefix = kong.configuration.prefix,
                      plugins = json.array({ unpack(plugins.enabled_names()) }) },
  })
end

local function status()
  return respond(200, {
    database = { reachable = true },
    server = {
      connections_active = tonumber(var.connections_active) or 0,
      connections_reading = tonumber(var.connections_reading) or 0,
      connections_writing = tonumber(var.connections_writing) or 0,
      connections_waiting = tonumber(var.connections_waiting) or 0,
    },
    configuration_hash = tostring(store.version()),
  })
end

local function plugin_schema(name)
  local p = plugins.get(name)
  if not p then
    return respond(404, { message = "No plugin named '" .. name .. "'" })
  end
  return respond(200, schema.to_json(p.schema))
end

local function validate_plugin()
  local body, err = get_body("plugins")
  if not body then
    return respond_err(err)
  end
  local state = read_state()
  local scratch = dao.new_state()
  scratch.services, scratch.routes = state.services, state.routes
  local ok, verr = dao.insert(scratch, "plugins", body)
  if not ok then
    return respond_err(verr)
  end
  return respond(200, { message = "schema validation successful" })
end

-- /kong-rs/... (not in Kong; only with --debug, see debug.lua)
local function debug_endpoint(method, segs)
  local n, b, c = #segs, segs[2], segs[3]
  if b == "upstream" and n == 2 and method == "GET" then
    return respond(200, { hits = ngx.shared.kong_rs:get("echo:hits") or 0 })
  end
  if b == "plugins" and n == 4 and segs[4] == "stats" then
    if method ~= "GET" then return respond(405, { message = "Method not allowed" }) end
    local gc = req.get_uri_args().gc
    return respond(require("kong_rs_gateway.debug").plugin_stats(c, gc == "true" or gc == "1" or gc == true))
  end
  return respond(404, { message = "Not found" })
end

local function dispatch(method, segs)
  local n = #segs
  local a, b, c = segs[1], segs[2], segs[3]
  if n == 0 then
    if method ~= "GET" then return respond(405, { message = "Method not allowed" }) end
    return root()
  end
  if a == "status" and n == 1 then
    return status()
  end
  if a == "kong-rs" and require("kong_rs_gateway.debug").enabled then
    return debug_endpoint(method, segs)
  end
  if a == "schemas" and b == "plugins" and n == 3 then
    if c == "validate" and method == "POST" then
      return validate_plugin()
    end
    return plugin_schema(c)
  end
  if a == "plugins" then
    if n == 1 then return collection(method, "plugins") end
    if b == "enabled" and n == 2 then
      return respond(200, { enabled_plugins = json.array({ unpack(plugins.enabled_names()) }) })
    end
    if b == "schema" and n == 3 then return plugin_schema(c) end
    if n == 2 then return entity(method, "plugins", b) end
  end
  if a == "services" or a == "routes" then
    if n == 1 then return collection(method, a) end
    if n == 2 then return entity(method, a, b) end
    if n == 3 and c == "plugins" then return collection(method, "plugins", a, b) end
    if n == 3 and a == "services" and c == "routes" then return collection(method, "routes", a, b) end
    if n == 3 and a == "routes" and c == "service" and method == "GET" then
      local state = read_state()
      local r = dao.find(state, "routes", b)
      local s = r and type(r.service) == "table" and dao.find(state, "services", r.service.id)
      if not s then return respond(404, { message = "Not found" }) end
      return respond(200, s)
    end
    if n == 4 and c == "plugins" then
      return entity(method, "plugins", segs[4], a, b)
    end
    if n == 4 and a == "services" and c == "routes" then
      return entity(method, "routes", segs[4], a, b)
    end
  end
  if a == "consumers" then
    if n == 1 then return collection(method, a) end
    if n == 2 then return entity(method, a, b) end
    if n == 3 and c == "plugins" then return collection(method, "plugins", a, b) end
    if n == 4 and c == "plugins" then return entity(method, "plugins", segs[4], a, b) end
  end
  return respond(404, { message = "Not found" })
end

local function serve()
  local uri = var.uri
  local segs = {}
  for seg in uri:gmatch("[^/]+") do
    if #segs >= 8 then
      return respond(404, { message = "Not found" })
    end
    segs[#segs + 1] = unescape(seg)
  end
  return dispatch(req.get_method(), segs)
end

function _M.serve()
  local ok, err = xpcall(serve, debug.traceback)
  if not ok then
    ngx.log(ngx.ERR, "[admin] ", err)
    if not ngx.headers_sent then
      return respond(500, { message = "An unexpected error occurred" })
    end
    return ngx.exit(500)
  end
end

return _M
