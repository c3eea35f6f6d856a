-- kong.client, kong.ctx, kong.nginx, kong.router, kong.node.
local phases = require "kong_rs_gateway.pdk.phases"

local ngx = ngx
local var = ngx.var
local check = phases.check
local REQUEST = phases.request
local ACCESS_AND_AFTER = phases.access_and_after
local AUTH_AND_LATER = phases.auth_and_later
local PHASES = phases.phases
local type = type
local error = error

-- loaded lazily: runner needs the store, which needs the shm (not in tests
-- that load the PDK alone)
local runner_mod
local function runner()
  runner_mod = runner_mod or require "kong_rs_gateway.runner"
  return runner_mod
end

-- kong.tools.uuid is_valid_uuid: any version, hex digits in either case
local function is_uuid(s)
  return #s == 36 and
    s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end
local tonumber = tonumber

local client = {}

function client.get_ip()
  check(REQUEST)
  return var.realip_remote_addr or var.remote_addr
end

function client.get_forwarded_ip()
  check(REQUEST)
  return var.remote_addr
end

function client.get_port()
  check(REQUEST)
  return tonumber(var.realip_remote_port or var.remote_port)
end

function client.get_forwarded_port()
  check(REQUEST)
  return tonumber(var.remote_port)
end

-- kong/pdk/client.lua: the authenticated consumer and credential live in
-- ngx.ctx.authenticated_consumer / authenticated_credential, where Kong's
-- runloop (plugins iterator) and log serializer read them.
function client.get_consumer()
  check(AUTH_AND_LATER)
  return ngx.ctx.authenticated_consumer
end

function client.get_credential()
  check(AUTH_AND_LATER)
  return ngx.ctx.authenticated_credential
end

local TABLE_OR_NIL = { ["table"] = true, ["nil"] = true }

function client.authenticate(consumer, credential)
  check(PHASES.access)
  if not TABLE_OR_NIL[type(consumer)] then
    error("consumer must be a table or nil", 2)
  elseif not TABLE_OR_NIL[type(credential)] then
    error("credential must be a table or nil", 2)
  elseif credential == nil and consumer == nil then
    error("either credential or consumer must be provided", 2)
  end
  local ctx = ngx.ctx
  ctx.authenticated_consumer = consumer
  ctx.authenticated_credential = credential
end

-- The consumer entity by id, or (search_by_username) by username when no
-- consumer has that id; nil when there is none. The gateway reads the
-- configuration of this request (refreshed at its start), Kong its
-- database: both answer with a fresh table without null fields.
function client.load_consumer(consumer_id, search_by_username)
  check(AUTH_AND_LATER)
  if not consumer_id or type(consumer_id) ~= "string" then
    error("consumer_id must be a string", 2)
  end
  local valid_uuid = is_uuid(consumer_id)
  if not valid_uuid and not search_by_username then
    error("cannot load a consumer with an id that is not a uuid", 2)
  end
  if valid_uuid then
    local c = runner().consumer(consumer_id)
    if c then
      return c
    end
  end
  if search_by_username then
    return runner().consumer(consumer_id, true)
  end
end

function client.get_protocol()
  check(ACCESS_AND_AFTER)
  return var.scheme
end

-- kong.ctx.shared: one table per request; kong.ctx.plugin: one per plugin
-- (keyed by its handler, like kong/global.lua set_named_ctx) per request.
local ctx = setmetatable({}, {
  __index = function(_, k)
    local c = ngx.ctx
    if k == "shared" then
      local t = c.KONG_SHARED
      if not t then
        t = {}
        c.KONG_SHARED = t
      end
      return t
    elseif k == "plugin" then
      local key = c.KONG_PLUGIN_KEY
      if not key then
        return nil
      end
      local all = c.KONG_PLUGIN_CTX
      if not all then
        all = {}
        c.KONG_PLUGIN_CTX = all
      end
      local t = all[key]
      if not t then
        t = {}
        all[key] = t
      end
      return t
    end
  end,
})

-- kong.nginx as in Kong 3.9 (kong/pdk/nginx.lua): get_subsystem and
-- get_statistics only (no get_var, get_ctx, set_ctx).
local nginx = {}

function nginx.get_subsystem()
  return ngx.config.subsystem
end

-- nginx's stub_status counters, read through FFI as Kong does (at call
-- time: nginx sets these pointers after init_by_lua has run)
local STATS = { "active", "reading", "writing", "waiting", "requests", "accepted", "handled" }
local C = require("ffi").C
do
  local ffi = require "ffi"
  local width = (ffi.arch == "x64" or ffi.arch == "arm64") and "uint64_t" or "uint32_t"
  for _, name in ipairs(STATS) do
    pcall(ffi.cdef, width .. " *ngx_stat_" .. name .. ";")
  end
end

local function counter(name)
  local ok, ptr = pcall(function() return C["ngx_stat_" .. name] end)
  if not ok or ptr == nil then
    return nil
  end
  return tonumber(ptr[0])
end

function nginx.get_statistics()
  return {
    connections_active = counter("active"),
    connections_reading = counter("reading"),
    connections_writing = counter("writing"),
    connections_waiting = counter("waiting"),
    connections_accepted = counter("accepted"),
    connections_handled = counter("handled"),
    total_requests = counter("requests"),
  }
end

local router = {}

function router.get_route()
  check(ACCESS_AND_AFTER)
  return ngx.ctx.route
end

function router.get_service()
  check(ACCESS_AND_AFTER)
  return ngx.ctx.service
end

return { client = client, ctx = ctx, nginx = nginx, router = router }
