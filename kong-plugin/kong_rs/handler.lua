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
-- the writes Rust deferred (kong_rs.actions).

local apply_actions = require("kong_rs.actions").apply

local require = require
local setmetatable = setmetatable
local ipairs = ipairs
local pcall = pcall
local tostring = tostring
local error = error

local ERROR_BODY = { message = "An unexpected error occurred" }

-- Phases in which kong.response.exit is allowed (kong/pdk/response.lua),
-- i.e. where a failed plugin can still be answered with a 500.
local CAN_RESPOND = {
  rewrite = true,
  access = true,
  header_filter = true,
  response = true,
}

local READS_BODY = { rewrite = true, access = true }

local _M = {}


-- Logs a failed phase with plugin name and phase, then answers 500 where
-- the response can still change. Never lets the request pass silently.
local function fail(name, phase, err)
  kong.log.err("plugin ", name, " failed in ", phase, " phase: ", tostring(err))
  if CAN_RESPOND[phase] then
    return kong.response.exit(500, ERROR_BODY)
  end
end


-- Applies a phase's deferred writes; a write Kong refuses fails the phase.
local function apply(name, phase, actions)
  if actions == nil then
    return true
  end
  local ok, err = pcall(apply_actions, actions)
  if not ok then
    fail(name, phase, err)
  end
  return ok
end


local function phase_handler(name, phase, instance_for, reads_body)
  if phase == "body_filter" then
    return function(_, conf)
      local instance, err = instance_for(conf)
      if not instance then
        return fail(name, phase, err)
      end
      local arg = ngx.arg
      local ok, actions, chunk, message = pcall(instance.body_filter, arg[1], arg[2])
      if not ok then
        return fail(name, phase, actions)
      end
      if chunk == false then
        return fail(name, phase, message)
      end
      if not apply(name, phase, actions) then
        return
      end
      if chunk ~= nil then
        arg[1] = chunk
      end
    end
  end

  reads_body = reads_body and READS_BODY[phase]
  return function(_, conf)
    local instance, err = instance_for(conf)
    if not instance then
      return fail(name, phase, err)
    end
    if reads_body then
      -- May yield, so it happens here in Lua, before entering Rust.
      kong.request.get_raw_body()
    end
    local ok, actions, status, body, headers = pcall(instance[phase])
    if not ok then
      return fail(name, phase, actions)
    end
    if status == false then
      return fail(name, phase, body)
    end
    if not apply(name, phase, actions) then
      return
    end
    if status ~= nil then
      return kong.response.exit(status, body, headers)
    end
  end
end


--- Returns the handler table of plugin `plugin_name` exported by the native
-- module `native_name` (a `.so` on `lua_package_cpath`).
function _M.new(native_name, plugin_name)
  local native = require(native_name)
  local factory = native.plugins[plugin_name]
  if not factory then
    error("native module " .. native_name .. " has no plugin " .. plugin_name, 2)
  end

  local new_instance = factory.new
  local instances = setmetatable({}, { __mode = "k" })

  local function instance_for(conf)
    local instance = instances[conf]
    if instance then
      return instance
    end
    local err
    instance, err = new_instance(conf)
    if not instance then
      return nil, "invalid configuration: " .. tostring(err)
    end
    instances[conf] = instance
    return instance
  end

  local handler = {
    VERSION = factory.version,
    PRIORITY = factory.priority,
  }
  for _, phase in ipairs(factory.phases) do
    handler[phase] = phase_handler(plugin_name, phase, instance_for,
                                   factory.reads_request_body)
  end
  return handler
end


return _M
