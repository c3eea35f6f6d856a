-- Bench-only (benches/instructions, benches/e2e/kong-run): the floor of a
-- native phase. Each of the three handlers of the "empty" workload has the
-- shape of kong-rs's glue for a plain C phase (kong_rs/handler.lua,
-- raw_phase_handler: the instance id looked up by conf in a weak table, one
-- call, a nil result checked) and calls a C function that does nothing
-- (noop_phase.c beside this file, built by the bench into `conf.library`).
-- What this plugin adds over no plugin is what LuaJIT charges for entering
-- native code from a handler, whatever the native code does; rs-bench-empty
-- adds that plus kong-rs's own dispatch.
local loadlib = package.loadlib
local setmetatable = setmetatable
local assert = assert
local error = error

-- The no-op phase function (one library per gateway: the bench's).
local run

local ids = setmetatable({}, { __mode = "k" })
local next_id = 0

-- conf -> id on first use, as the glue builds an instance.
local function instance_id(conf)
  if not run then
    local open = assert(loadlib(conf.library, "kong_rs_bench_noop_open"))
    run = open()
  end
  next_id = next_id + 1
  ids[conf] = next_id
  return next_id
end

local function handler(_, conf)
  local id = ids[conf]
  if not id then
    id = instance_id(conf)
  end
  local result = run(id)
  if result ~= nil then
    error("the no-op phase returned a value")
  end
end

return {
  PRIORITY = 1000,
  VERSION = "0.1.0",
  access = handler,
  header_filter = handler,
  log = handler,
}
