-- Per-worker compiled configuration: the router, the plugin configurations
-- (conf tables kept identical until their plugin changes) and the per-route
-- plugin plans, rebuilt when the shared version counter moves.
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
}

local function scope_key(route_id, service_id)
  return (route_id or "") .. ":" .. (service_id or "")
end

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

-- As Kong in traditional mode: a write to any plugin rebuilds the plugins
-- iterator, which hands every plugin a new conf table (read afresh from the
-- database); writes to routes and services leave the conf tables alone.
local function build(state, version)
  local r = router.new(state)
  local by_name, confs = {}, {}
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
      scopes[scope_key(fk(e.route), fk(e.service))] = conf
    end
  end
  local global = new_plan()
  for _, p in ipairs(plugins.ordered()) do
    local scopes = by_name[p.name]
    local conf = scopes and scopes[":"]
    if conf then
      add(global, p, conf)
    end
  end
  W.router, W.by_name, W.confs, W.plans, W.global, W.version = r, by_name, confs, {}, global, version
  W.plugins_rev = state.plugins_rev
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

--- The plugins that apply to a matched route/service, by Kong's precedence
-- (route+service > route > service > global; no consumers), by PRIORITY.
function _M.plan_for(route, service)
  local rid = route.id
  local plan = W.plans[rid]
  if plan then
    return plan
  end
  plan = new_plan()
  local sid = service and service.id
  local by_name = W.by_name
  for _, p in ipairs(plugins.ordered()) do
    local scopes = by_name[p.name]
    if scopes then
      local conf = (sid and scopes[scope_key(rid, sid)])
                or scopes[scope_key(rid, nil)]
                or (sid and scopes[scope_key(nil, sid)])
                or scopes[":"]
      if conf then
        add(plan, p, conf)
      end
    end
  end
  plan.has_response = #plan.response > 0
  W.plans[rid] = plan
  return plan
end

return _M
