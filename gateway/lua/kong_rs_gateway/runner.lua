-- Per-worker compiled configuration: the router, the plugin configurations
-- (conf tables kept identical until their plugin changes), the per-route
-- plugin plans and the consumers (for kong.client.load_consumer), rebuilt
-- when the shared version counter moves.
local store = require "kong_rs_gateway.store"
local router = require "kong_rs_gateway.router"
local plugins = require "kong_rs_gateway.plugins"
local json = require "kong_rs_gateway.json"

local ipairs = ipairs
local pairs = pairs
local type = type
local getmetatable = getmetatable
local setmetatable = setmetatable
local null = json.null

local PHASE_NAMES = { "rewrite", "access", "response", "header_filter", "body_filter", "log" }

local _M = {}

local W = {
  version = nil,
  plugins_rev = nil,
  router = nil,
  by_name = {},   -- plugin name -> scope key -> conf
  confs = {},     -- plugin id -> conf
  plans = {},     -- route id -> plan
  global = nil,   -- plan of global plugins
  consumer_scoped = false, -- does any plugin name a consumer?
  consumers_by_id = {},
  consumers_by_username = {},
  ws_id = nil,
}

-- kong/runloop/plugins_iterator.lua build_compound_key
local function scope_key(route_id, service_id, consumer_id)
  return (route_id or "") .. ":" .. (service_id or "") .. ":" .. (consumer_id or "")
end
local GLOBAL_KEY = scope_key()

-- Kong's lookup_cfg: the most specific configuration of a plugin for this
-- route, service and (authenticated) consumer, in this order:
-- route+service+consumer, route+consumer, service+consumer, route+service,
-- consumer, route, service, global.
local function lookup(scopes, rid, sid, cid)
  local conf
  if cid then
    if rid and sid then
      conf = scopes[scope_key(rid, sid, cid)]
      if conf then return conf end
    end
    if rid then
      conf = scopes[scope_key(rid, nil, cid)]
      if conf then return conf end
    end
    if sid then
      conf = scopes[scope_key(nil, sid, cid)]
      if conf then return conf end
    end
  end
  if rid and sid then
    conf = scopes[scope_key(rid, sid, nil)]
    if conf then return conf end
  end
  if cid then
    conf = scopes[scope_key(nil, nil, cid)]
    if conf then return conf end
  end
  if rid then
    conf = scopes[scope_key(rid, nil, nil)]
    if conf then return conf end
  end
  if sid then
    conf = scopes[scope_key(nil, sid, nil)]
    if conf then return conf end
  end
  return scopes[GLOBAL_KEY]
end
_M.lookup = lookup

local function fk(v)
  if type(v) == "table" then return v.id end
  return nil
end

local function applies_to_http(entity)
  local protocols = entity.protocols
  if type(protocols) ~= "table" then
    return true
  end
  for _, p in ipairs(protocols) do
    if p == "http" or p == "https" then return true end
  end
  return false
end

-- A config as Kong's DAO reads it (process_auto_fields "select" without
-- nulls, kong/db/schema/init.lua): fields that are null are absent.
local function without_nulls(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if x ~= null then
      out[k] = without_nulls(x)
    end
  end
  return setmetatable(out, getmetatable(v))
end

-- Kong's get_plugin_config (kong/runloop/plugins_iterator.lua): the plugin's
-- config plus these keys; __seq__ from a counter shared by the workers.
local function make_conf(entity, ws_id)
  local conf = without_nulls(entity.config)
  conf.route_id = fk(entity.route)
  conf.service_id = fk(entity.service)
  conf.consumer_id = fk(entity.consumer)
  if entity.instance_name ~= null then
    conf.plugin_instance_name = entity.instance_name
  end
  conf.__plugin_id = entity.id
  conf.__ws_id = ws_id
  -- kong.db.plugins:cache_key(name, route, service, consumer, nil, ws_id)
  conf.__key__ = "plugins:" .. entity.name .. ":" .. (conf.route_id or "") .. ":" ..
                 (conf.service_id or "") .. ":" .. (conf.consumer_id or "") .. "::" .. (ws_id or "")
  local seq = ngx.shared.kong_rs:incr("plugins_iterator:__seq__", 1, 0, 0)
  conf.__seq__ = seq or 0
  return conf
end

local function new_plan()
  local plan = {}
  for _, phase in ipairs(PHASE_NAMES) do
    plan[phase] = {}
  end
  return plan
end

local function add(plan, p, conf)
  local handler = p.handler
  for _, phase in ipairs(PHASE_NAMES) do
    if type(handler[phase]) == "function" then
      local list = plan[phase]
      list[#list + 1] = { name = p.name, handler = handler, conf = conf, fn = handler[phase] }
    end
  end
end

-- A deep copy without null fields, as Kong's DAO returns an entity
-- (select: process_auto_fields without nulls).
local function entity_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    if x ~= null then
      out[k] = entity_copy(x)
    end
  end
  return setmetatable(out, getmetatable(v))
end

-- As Kong in traditional mode: a write to any plugin rebuilds the plugins
-- iterator, which hands every plugin a new conf table (read afresh from the
-- database); writes to routes and services leave the conf tables alone.
local function build(state, version)
  local r = router.new(state)
  local by_name, confs = {}, {}
  local consumer_scoped = false
  local same_plugins = state.plugins_rev == W.plugins_rev
  for _, e in ipairs(state.plugins) do
    local p = plugins.get(e.name)
    if p and e.enabled == true and applies_to_http(e) then
      local conf = same_plugins and W.confs[e.id] or make_conf(e, state.ws_id)
      confs[e.id] = conf
      local scopes = by_name[e.name]
      if not scopes then
        scopes = {}
        by_name[e.name] = scopes
      end
      local cid = fk(e.consumer)
      if cid then
        consumer_scoped = true
      end
      scopes[scope_key(fk(e.route), fk(e.service), cid)] = conf
    end
  end
  local by_id, by_username = {}, {}
  for _, c in ipairs(state.consumers or {}) do
    by_id[c.id] = c
    if type(c.username) == "string" then
      by_username[c.username] = c
    end
  end
  local global = new_plan()
  for _, p in ipairs(plugins.ordered()) do
    local scopes = by_name[p.name]
    local conf = scopes and scopes[GLOBAL_KEY]
    if conf then
      add(global, p, conf)
    end
  end
  W.router, W.by_name, W.confs, W.plans, W.global, W.version = r, by_name, confs, {}, global, version
  W.plugins_rev = state.plugins_rev
  W.consumer_scoped = consumer_scoped
  W.consumers_by_id, W.consumers_by_username = by_id, by_username
  W.ws_id = state.ws_id
end

--- Rebuild this worker's view if the shared version moved. Cheap otherwise.
function _M.refresh()
  local v = store.version()
  if v == W.version then
    return true
  end
  local state, version = store.current()
  if not state then
    return nil, version
  end
  build(state, version)
  return true
end

function _M.router()
  return W.router
end

function _M.global_plan()
  return W.global
end

function _M.ws_id()
  return W.ws_id
end

--- The consumer with this id (or username): a copy as Kong's DAO returns
-- it (no null fields), or nil.
function _M.consumer(key, by_username)
  local c
  if by_username then
    c = W.consumers_by_username[key]
  else
    c = W.consumers_by_id[key:lower()]
  end
  return c and entity_copy(c) or nil
end

-- Honour a handler's no_route / no_service / no_consumer flags as Kong's
-- load_configuration_through_combos does.
local function ids_for(handler, rid, sid, cid)
  return (not handler.no_route) and rid or nil,
         (not handler.no_service) and sid or nil,
         (not handler.no_consumer) and cid or nil
end

--- The plugins that apply to a matched route/service, by Kong's precedence
-- (kong/runloop/plugins_iterator.lua lookup_cfg), by PRIORITY. Without an
-- authenticated consumer the plan is fixed per route. When some plugin is
-- configured for a consumer, the plan is `dynamic`: the access phase
-- chooses each plugin's configuration with `next_candidate` when the
-- plugin's turn comes, after the plugins of higher priority (the
-- authentication plugins) have run, as Kong's collecting iterator does.
function _M.plan_for(route, service)
  local rid = route.id
  local plan = W.plans[rid]
  if plan then
    return plan
  end
  plan = new_plan()
  local sid = service and service.id
  local by_name = W.by_name
  local candidates = {}
  for _, p in ipairs(plugins.ordered()) do
    local scopes = by_name[p.name]
    if scopes then
      candidates[#candidates + 1] = { p = p, scopes = scopes }
      local conf = lookup(scopes, ids_for(p.handler, rid, sid, nil))
      if conf then
        add(plan, p, conf)
      end
    end
  end
  plan.has_response = #plan.response > 0
  if W.consumer_scoped then
    plan.dynamic = true
    plan.candidates = candidates
    plan.route_id, plan.service_id = rid, sid
  end
  W.plans[rid] = plan
  return plan
end

--- For a dynamic plan: the next plugin that applies to this request, its
-- configuration looked up with the consumer authenticated so far. Returns
-- the next index, the plugin and its conf, or nil at the end. The caller
-- adds each to the request's own plan (`add`) and runs its access handler.
function _M.next_candidate(plan, i, ctx)
  local list = plan.candidates
  local consumer = ctx.authenticated_consumer
  local cid = type(consumer) == "table" and consumer.id or nil
  if cid == null then cid = nil end
  while true do
    i = i + 1
    local item = list[i]
    if not item then
      return nil
    end
    local p = item.p
    local conf = lookup(item.scopes, ids_for(p.handler, plan.route_id, plan.service_id, cid))
    if conf then
      return i, p, conf
    end
  end
end

_M.new_plan = new_plan
_M.add = add

return _M
