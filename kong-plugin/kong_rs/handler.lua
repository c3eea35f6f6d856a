-- kong_rs.handler: builds a Kong plugin handler whose phases run in Rust.
--
--   return require("kong_rs.handler").new("kong_rs_plugins", "rs-hello")
--
-- One instance is built per `conf` table (Kong hands the same table to every
-- request until the configuration changes) and cached with weak keys, so a
-- changed config is used by the very next request and the old instance is
-- freed once Kong drops its table. Only the phases the Rust type implements
-- are registered: a `response` handler switches Kong to buffered proxying.
-- Rust cannot yield, so exits are returned by Rust and performed here, after
-- the writes Rust deferred (kong_rs.actions); the I/O of async phases is
-- performed by kong_rs.io.

local new_applier = require("kong_rs.actions").new
local load_native = require("kong_rs.loader").load

local setmetatable = setmetatable
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local tostring = tostring
local type = type
local error = error

local ERROR_BODY = { message = "An unexpected error occurred" }

-- Phases in which kong.response.exit is allowed (kong/pdk/response.lua),
-- i.e. where a failed plugin can still be answered with a 500: filled from
-- the native module's `phase_rules` (Phase::can_respond in Rust, the one
-- definition), the same for every kong-rs module of one glue interface.
local CAN_RESPOND = {}


local _M = {}

-- Native modules whose timer runner is registered.
local runners = setmetatable({}, { __mode = "k" })


-- Logs a failed phase with plugin name and phase, then answers 500 where
-- the response can still change. Never lets the request pass silently.
local function fail(name, phase, err)
  kong.log.err("plugin ", name, " failed in ", phase, " phase: ", tostring(err))
  if CAN_RESPOND[phase] then
    return kong.response.exit(500, ERROR_BODY)
  end
end


-- Applies a phase's deferred writes with the native module's applier
-- (kong_rs.actions); a write Kong refuses fails the phase.
local function apply(name, phase, apply_actions, actions)
  if actions == nil then
    return true
  end
  local ok, err = pcall(apply_actions, actions)
  if not ok then
    fail(name, phase, err)
  end
  return ok
end


-- What a phase function returned, past the fast common case (nothing to
-- apply, continue): deferred writes, then an exit or a failure.
local function finish(name, phase, apply_actions, actions, status, body, headers)
  if status == false then
    return fail(name, phase, body)
  end
  if not apply(name, phase, apply_actions, actions) then
    return
  end
  if status ~= nil then
    return kong.response.exit(status, body, headers)
  end
end


-- A sync phase's one result value, past the common case (nil): its
-- pending writes (a string), or a table { writes, status, body, headers }
-- to exit / { nil, false, message } when the plugin failed.
local function finish_value(name, phase, apply_actions, result)
  local kind = type(result)
  if kind == "string" then
    apply(name, phase, apply_actions, result)
    return
  end
  if kind ~= "table" then
    -- What a raw phase answers when it could not even make its failure
    -- (out of memory): the request fails, it does not pass.
    return fail(name, phase, "the native module returned no result")
  end
  return finish(name, phase, apply_actions, result[1], result[2], result[3], result[4])
end


-- The phase closures below are what Kong calls on every request, mostly in
-- LuaJIT's interpreter (nginx enters each phase from C, access runs in a
-- coroutine), where every call, table lookup and branch costs a few ns: so
-- each is specialised for what its plugin declared, and the common case
-- (cached instance, nothing to apply) takes as few steps as possible.
-- benches/inworker measures them ("interpreted: ... handler:access").

local function body_filter_handler(name, run, instances, instance_for, apply_actions)
  return function(_, conf)
    local instance = instances[conf]
    if not instance then
      local err
      instance, err = instance_for(conf)
      if not instance then
        return fail(name, "body_filter", err)
      end
    end
    local arg = ngx.arg
    local ok, actions, chunk, message = pcall(run, instance.id, arg[1], arg[2])
    if not ok then
      return fail(name, "body_filter", actions)
    end
    if chunk == false then
      return fail(name, "body_filter", message)
    end
    if actions ~= nil and not apply(name, "body_filter", apply_actions, actions) then
      return
    end
    if chunk ~= nil then
      arg[1] = chunk
    end
  end
end


-- Every other phase: one call into Rust, which returns nil in the common
-- case (one value, see finish_value).
local function phase_handler(name, phase, run, instances, instance_for, apply_actions, reads_body)
  if reads_body then
    -- Reading the body may yield, so it happens here in Lua, before
    -- entering Rust, which gets it as an argument (nil when it did not fit
    -- into the client body buffer: Kong's get_raw_body says nil, err).
    return function(_, conf)
      local instance = instances[conf]
      if not instance then
        local err
        instance, err = instance_for(conf)
        if not instance then
          return fail(name, phase, err)
        end
      end
      local request_body = kong.request.get_raw_body()
      local ok, result = pcall(run, instance.id, request_body)
      if not ok then
        return fail(name, phase, result)
      end
      if result ~= nil then
        return finish_value(name, phase, apply_actions, result)
      end
    end
  end
  return function(_, conf)
    local instance = instances[conf]
    if not instance then
      local err
      instance, err = instance_for(conf)
      if not instance then
        return fail(name, phase, err)
      end
    end
    local ok, result = pcall(run, instance.id)
    if not ok then
      return fail(name, phase, result)
    end
    if result ~= nil then
      return finish_value(name, phase, apply_actions, result)
    end
  end
end


-- A sync phase of a module whose sync phases are plain C functions
-- (`factory.raw_phases`): they never raise (a failure is returned as a
-- value), so no pcall; and one lookup, conf -> instance id.
local function raw_phase_handler(name, phase, run, ids, instance_for, apply_actions, reads_body)
  return function(_, conf)
    local id = ids[conf]
    if not id then
      local instance, err = instance_for(conf)
      if not instance then
        return fail(name, phase, err)
      end
      id = instance.id
    end
    local result
    if reads_body then
      -- Read here (it may yield), handed to Rust (nil: it did not fit
      -- into the client body buffer, Kong's get_raw_body says nil, err).
      result = run(id, kong.request.get_raw_body())
    else
      result = run(id)
    end
    if result ~= nil then
      return finish_value(name, phase, apply_actions, result)
    end
  end
end


-- An async phase (`async fn access` in Rust): the first call runs the
-- future up to its first I/O operation; kong_rs.io's driver performs the
-- operations with cosockets in this coroutine and resumes the future until
-- the phase ends. Sync phases never come here.
local function async_phase_handler(name, phase, run, instances, instance_for, apply_actions,
                                   reads_body, drive)
  return function(_, conf)
    local instance = instances[conf]
    if not instance then
      local err
      instance, err = instance_for(conf)
      if not instance then
        return fail(name, phase, err)
      end
    end
    local request_body
    if reads_body then
      request_body = kong.request.get_raw_body()
    end
    -- Pending: nil, true, task, op, socket, a, b, c, d.
    local ok, actions, status, body, headers, id, a, b, c, d = pcall(run, instance.id, request_body)
    if not ok then
      return fail(name, phase, actions)
    end
    if status == true then
      ok, actions, status, body, headers = drive(body, headers, id, a, b, c, d)
      if not ok then
        return fail(name, phase, actions)
      end
    end
    if actions ~= nil or status ~= nil then
      return finish(name, phase, apply_actions, actions, status, body, headers)
    end
  end
end


--- Returns the handler table of plugin `plugin_name` exported by the native
-- module `native_name` (a `.so` on `lua_package_cpath`).
function _M.new(native_name, plugin_name)
  local native = load_native(native_name)
  local factory = native.plugins[plugin_name]
  if not factory then
    error("native module " .. native_name .. " has no plugin " .. plugin_name, 2)
  end
  local apply_actions = new_applier(native.ops)
  local rules = native.phase_rules
  for phase, rule in pairs(rules) do
    CAN_RESPOND[phase] = rule.respond
  end

  local new_instance = factory.new
  local instances = setmetatable({}, { __mode = "k" })
  -- conf -> instance id, for the raw phases' one lookup (the instance
  -- itself stays in `instances`, which keeps it alive with its conf).
  local ids = setmetatable({}, { __mode = "k" })
  -- A conf the constructor refused, with its message: built once per conf
  -- table like a good one, not again on every request.
  local refused = setmetatable({}, { __mode = "k" })

  local function instance_for(conf)
    local instance = instances[conf]
    if instance then
      return instance
    end
    local err = refused[conf]
    if err then
      return nil, err
    end
    instance, err = new_instance(conf)
    if not instance then
      err = "invalid configuration: " .. tostring(err)
      refused[conf] = err
      return nil, err
    end
    instances[conf] = instance
    ids[conf] = instance.id
    return instance
  end

  local handler = {
    VERSION = factory.version,
    PRIORITY = factory.priority,
  }
  local io = require("kong_rs.io")
  local drive = io.new(native.io_ops, native.resume)
  if not runners[native] then
    -- Jobs the module starts from timers (kong_rs::queue senders).
    native.set_timer_runner(io.timer_runner(native.resume, drive))
    runners[native] = true
  end
  for _, phase in ipairs(factory.phases) do
    -- The factory's phase function, the same for every instance (see
    -- src/bridge.rs: per-instance functions would be pinned by JIT traces).
    local run = factory[phase]
    if factory.async_phases[phase] then
      local reads_body = factory.reads_request_body and rules[phase].body or false
      handler[phase] = async_phase_handler(plugin_name, phase, run, instances, instance_for,
                                           apply_actions, reads_body, drive)
    elseif phase == "body_filter" then
      handler[phase] = body_filter_handler(plugin_name, run, instances, instance_for, apply_actions)
    elseif factory.raw_phases then
      local reads_body = factory.reads_request_body and rules[phase].body or false
      handler[phase] = raw_phase_handler(plugin_name, phase, run, ids, instance_for,
                                         apply_actions, reads_body)
    else
      local reads_body = factory.reads_request_body and rules[phase].body or false
      handler[phase] = phase_handler(plugin_name, phase, run, instances, instance_for,
                                     apply_actions, reads_body)
    end
  end
  return handler
end


return _M
