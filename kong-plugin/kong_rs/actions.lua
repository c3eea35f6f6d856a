-- kong_rs.actions: applies the writes a Rust phase deferred.
--
-- Calling Lua from Rust costs more than most writes, so the Rust PDK packs
-- writes (and, on the FFI fast path, log lines) into one string, returned when the phase ends, and this module
-- performs them in order with the real kong.* functions (JIT-compiled here).
-- Format, per write: op (u8), name length (u32 LE), name, value length
-- (u32 LE), value. Op codes match `Op` in src/pdk/lua.rs.

local byte = string.byte
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local error = error

local RESP_SET_HEADER = 1
local RESP_ADD_HEADER = 2
local RESP_CLEAR_HEADER = 3
local RESP_SET_STATUS = 4
local SREQ_SET_HEADER = 5
local SREQ_ADD_HEADER = 6
local SREQ_CLEAR_HEADER = 7
local SREQ_SET_PATH = 8
local SREQ_SET_RAW_QUERY = 9
local SREQ_SET_METHOD = 10
local SREQ_SET_RAW_BODY = 11
local LOG_ERR = 12
local LOG_DEBUG = 16

local LOG_LEVELS = { [12] = "err", [13] = "warn", [14] = "notice", [15] = "info", [16] = "debug" }


-- string.byte/sub rather than FFI pointers: in LuaJIT's interpreter (not
-- every request path gets compiled) cdata pointers allocate, strings do not.
local function u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return a + b * 0x100 + c * 0x10000 + d * 0x1000000
end


-- Performs the action at (1-based) position `i` of `s`; returns the next one.
local function apply_one(s, i)
  local op = byte(s, i)
  local name_len = u32(s, i + 1)
  local name = sub(s, i + 5, i + 4 + name_len)
  i = i + 5 + name_len
  local value_len = u32(s, i)
  local value = sub(s, i + 4, i + 3 + value_len)

  if op == SREQ_SET_HEADER then
    kong.service.request.set_header(name, value)
  elseif op == RESP_SET_HEADER then
    kong.response.set_header(name, value)
  elseif op == RESP_ADD_HEADER then
    kong.response.add_header(name, value)
  elseif op == RESP_CLEAR_HEADER then
    kong.response.clear_header(name)
  elseif op == RESP_SET_STATUS then
    kong.response.set_status(tonumber(value))
  elseif op == SREQ_ADD_HEADER then
    kong.service.request.add_header(name, value)
  elseif op == SREQ_CLEAR_HEADER then
    kong.service.request.clear_header(name)
  elseif op == SREQ_SET_PATH then
    kong.service.request.set_path(value)
  elseif op == SREQ_SET_RAW_QUERY then
    kong.service.request.set_raw_query(value)
  elseif op == SREQ_SET_METHOD then
    kong.service.request.set_method(value)
  elseif op == SREQ_SET_RAW_BODY then
    kong.service.request.set_raw_body(value)
  elseif op >= LOG_ERR and op <= LOG_DEBUG then
    kong.log[LOG_LEVELS[op]](value)
  else
    error("kong_rs.actions: unknown op " .. tostring(op))
  end
  return i + 4 + value_len
end


--- Performs every action in `buffer`, in order. Raises what kong.* raises.
-- The first four are applied by straight-line code: a loop here, entered
-- once per request with a handful of iterations, would keep LuaJIT from
-- compiling the caller into one trace.
local function apply(buffer)
  local size = #buffer
  local i = 1
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  while i <= size do
    i = apply_one(buffer, i)
  end
end


return { apply = apply }
