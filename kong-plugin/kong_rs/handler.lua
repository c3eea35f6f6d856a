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
local load_native = require("kong_rs.loader").load
local kong_rs_ffi = require("kong_rs_ffi")
local ffi = require("ffi")

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
  preread = true, -- stream: closes the connection with the code
  rewrite = true,
  access = true,
  header_filter = true,
  response = true,
}

local READS_BODY = { rewrite = true, access = true }

local ffi_gc = ffi.gc
local ffi_cast = ffi.cast
local ffi_string = ffi.string
local FFI_OK = kong_rs_ffi.OK
local FFI_PHASES = kong_rs_ffi.PHASES
local INSTANCE_T = kong_rs_ffi.instance_type
local unpack = unpack

-- Output buffer of fast-path calls, reused (one worker runs one phase at a
-- time and nothing between the call and the copy-out yields).
local BUF_SIZE = 65536
local buf = ffi.new("uint8_t[?]", BUF_SIZE)
local lengths = ffi.new("int32_t[3]")
local FFI_SHORT = kong_rs_ffi.SHORT


-- Returns `call(run, fast, phase, reads_body)`, which fetches the declared
-- inputs and enters Rust through one FFI call. Generated per instance as
-- straight-line code: a short loop here would keep LuaJIT from compiling
-- the phase into one trace. Lua strings pass as `const char *` arguments,
-- alive for the call; nil passes as NULL.
local function fast_caller(names, with_body)
  local args, code = {}, { "local names = ...",
                           "return function(run, fast, phase, reads_body, buf, size, lengths)",
                           "  local get_header = kong.request.get_header" }
  for i = 1, #names do
    code[#code + 1] = ("  local v%d = get_header(names[%d])"):format(i, i)
    args[#args + 1] = ("v%d, v%d and #v%d or 0"):format(i, i, i)
  end
  local pad = function(list)
    local out = { unpack(list) }
    while #out < kong_rs_ffi.MAX_INPUTS do
      out[#out + 1] = "nil, 0"
    end
    return table.concat(out, ", ")
  end
  if with_body then
    local with = { unpack(args) }
    with[#with + 1] = "body, body and #body or 0"
    code[#code + 1] = "  if reads_body then"
    code[#code + 1] = "    local body = kong.request.get_raw_body()"
    code[#code + 1] = ("    return run(fast, phase, %d, %s, buf, size, lengths)"):format(#with, pad(with))
    code[#code + 1] = "  end"
  end
  code[#code + 1] = ("  return run(fast, phase, %d, %s, buf, size, lengths)"):format(#args, pad(args))
  code[#code + 1] = "end"
  return assert(load(table.concat(code, "\n"), "=kong_rs.fast_call"))(names)
end


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


-- What a phase function returned, past the fast common case (nothing to
-- apply, continue): deferred writes, then an exit or a failure.
local function finish(name, phase, actions, status, body, headers)
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


-- The phase closures below are what Kong calls on every request, mostly in
-- LuaJIT's interpreter (nginx enters each phase from C, access runs in a
-- coroutine), where every call, table lookup and branch costs a few ns: so
-- each is specialised for what its plugin declared, and the common case
-- (cached instance, nothing to apply) takes as few steps as possible.
-- benches/inworker measures them ("interpreted: ... handler:access").

local function body_filter_handler(name, run, instances, instance_for)
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
    if actions ~= nil and not apply(name, "body_filter", actions) then
      return
    end
    if chunk ~= nil then
      arg[1] = chunk
    end
  end
end


-- The mlua path: one call into Rust, which returns nothing in the common case.
local function mlua_handler(name, phase, run, instances, instance_for, reads_body)
  if reads_body then
    -- Reading the body may yield, so it happens here in Lua, before
    -- entering Rust, which gets it as an argument.
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
      local ok, actions, status, body, headers = pcall(run, instance.id, request_body)
      if not ok then
        return fail(name, phase, actions)
      end
      if actions ~= nil or status ~= nil then
        return finish(name, phase, actions, status, body, headers)
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
    local ok, actions, status, body, headers = pcall(run, instance.id)
    if not ok then
      return fail(name, phase, actions)
    end
    if actions ~= nil or status ~= nil then
      return finish(name, phase, actions, status, body, headers)
    end
  end
end


-- The FFI fast path where the instance declares one (opts.fast_path), the
-- mlua path for the others.
local function fast_handler(name, phase, run, instances, instance_for, reads_body)
  local fast_phase = FFI_PHASES[phase]
  local slow = mlua_handler(name, phase, run, instances, instance_for, reads_body)
  return function(self, conf)
    local instance, err = instance_for(conf)
    if not instance then
      return fail(name, phase, err)
    end
    local fast = instance.fast
    if not fast then
      return slow(self, conf)
    end
    -- Inputs fetched in Lua, one FFI call into Rust, its deferred writes
    -- applied here.
    local out = buf
    local rc = instance.fast_call(instance.ffi_call, fast, fast_phase, reads_body,
                                  buf, BUF_SIZE, lengths)
    if rc == FFI_SHORT then
      local size = lengths[2]
      out = ffi.new("uint8_t[?]", size)
      rc = instance.ffi_output(fast, out, size, lengths)
    end
    local actions_len = lengths[2]
    local pending = actions_len > 0 and ffi_string(out, actions_len) or nil
    if rc ~= FFI_OK then
      local message = ffi_string(out + actions_len, lengths[1])
      if pending then
        pcall(apply_actions, pending) -- only the failed phase's log lines
      end
      return fail(name, phase, message)
    end
    if not apply(name, phase, pending) then
      return
    end
    local status = lengths[0]
    if status ~= 0 then
      local body_len = lengths[1]
      return kong.response.exit(status,
                                body_len >= 0 and ffi_string(out + actions_len, body_len) or nil)
    end
  end
end


--- Returns the handler table of plugin `plugin_name` exported by the native
-- module `native_name` (a `.so` on `lua_package_cpath`). `opts` (optional):
-- `fast_path = true` to use the FFI fast path where the plugin declares one.
function _M.new(native_name, plugin_name, opts)
  -- opts.fast_path = true enters phases of instances that declare a fast
  -- path (Plugin::fast_path) through LuaJIT FFI. Off by default: measured in
  -- a worker (benches/inworker), an FFI call wins only where LuaJIT compiles
  -- the caller (14 ns vs 36 ns per dispatch) and loses where it interprets it
  -- (332 ns vs 89 ns); Kong enters each phase from C and runs access in a
  -- coroutine, so plugin handlers mostly run interpreted.
  local use_fast_path = opts and opts.fast_path == true
  local native = load_native(native_name)
  local factory = native.plugins[plugin_name]
  if not factory then
    error("native module " .. native_name .. " has no plugin " .. plugin_name, 2)
  end

  local new_instance = factory.new
  local instances = setmetatable({}, { __mode = "k" })
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
    instance, err = new_instance(conf, use_fast_path)
    if not instance then
      err = "invalid configuration: " .. tostring(err)
      refused[conf] = err
      return nil, err
    end
    if instance.fast then
      -- Lua owns the FFI handle: freed by the GC with the instance.
      local lib = kong_rs_ffi.load(native_name)
      instance.ffi_call = lib.kong_rs_ffi_call
      instance.ffi_output = lib.kong_rs_ffi_output
      instance.fast = ffi_gc(ffi_cast(INSTANCE_T, instance.fast), lib.kong_rs_ffi_instance_free)
      instance.fast_call = fast_caller(instance.fast_headers, instance.fast_body)
    end
    instances[conf] = instance
    return instance
  end

  local handler = {
    VERSION = factory.version,
    PRIORITY = factory.priority,
  }
  for _, phase in ipairs(factory.phases) do
    -- The factory's phase function, the same for every instance (see
    -- src/bridge.rs: per-instance functions would be pinned by JIT traces).
    local run = factory[phase]
    local reads_body = factory.reads_request_body and READS_BODY[phase] or false
    if phase == "body_filter" then
      handler[phase] = body_filter_handler(plugin_name, run, instances, instance_for)
    elseif use_fast_path and FFI_PHASES[phase] then
      handler[phase] = fast_handler(plugin_name, phase, run, instances, instance_for, reads_body)
    else
      handler[phase] = mlua_handler(plugin_name, phase, run, instances, instance_for, reads_body)
    end
  end
  return handler
end


return _M
