-- kong_rs.actions: applies the writes a Rust phase deferred.
--
-- Calling Lua from Rust costs more than most writes, so the Rust PDK packs
-- writes into one string, returned when the phase ends, and this module
-- performs them in order with the real kong.* functions.
-- Format, per write: op (u8), name length (u32 LE), name, value length
-- (u32 LE), value.
--
-- The op codes are defined once, in Rust (`OPS` in src/pdk/actions.rs):
-- the native module hands them over as `ops` ({ code, "kong path", args }),
-- and `new` generates the applier from them as straight-line Lua, which
-- LuaJIT compiles like hand-written code.

local byte = string.byte
local sub = string.sub
local concat = table.concat
local format = string.format
local tonumber = tonumber
local tostring = tostring
local error = error
local load = load
local type = type
local ipairs = ipairs
local setmetatable = setmetatable

local ARGS = {
  name_value = "name, value",
  name = "name",
  value = "value",
  status = "tonumber(value)",
}

local _M = {}

-- Appliers already generated, by `ops` table (one per native module).
local appliers = setmetatable({}, { __mode = "k" })


-- string.byte/sub rather than FFI pointers: in LuaJIT's interpreter (not
-- every request path gets compiled) cdata pointers allocate, strings do not.
local function u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return a + b * 0x100 + c * 0x10000 + d * 0x1000000
end


local function generate(ops)
  local code = {
    "local u32, byte, sub, tonumber, tostring, error = ...",
    "local function apply_one(s, i)",
    "  local op = byte(s, i)",
    "  local name_len = u32(s, i + 1)",
    "  local name = sub(s, i + 5, i + 4 + name_len)",
    "  i = i + 5 + name_len",
    "  local value_len = u32(s, i)",
    "  local value = sub(s, i + 4, i + 3 + value_len)",
  }
  for n, op in ipairs(ops) do
    local code_number, path, args = op[1], op[2], ARGS[op[3]]
    if type(code_number) ~= "number" or type(path) ~= "string" or not path:match("^[%w_.]+$")
       or not args
    then
      error("kong_rs.actions: the native module's op " .. n .. " is malformed", 3)
    end
    code[#code + 1] = format("  %s op == %d then kong.%s(%s)",
                             n == 1 and "if" or "elseif", code_number, path, args)
  end
  code[#code + 1] = "  else error(\"kong_rs.actions: unknown op \" .. tostring(op)) end"
  code[#code + 1] = "  return i + 4 + value_len"
  code[#code + 1] = "end"
  -- The first four actions by straight-line code: a loop, entered once per
  -- request with a handful of iterations, would keep LuaJIT from compiling
  -- the caller into one trace.
  code[#code + 1] = [[
return function(buffer)
  local size = #buffer
  local i = 1
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  if i <= size then i = apply_one(buffer, i) end
  while i <= size do
    i = apply_one(buffer, i)
  end
end]]
  local chunk = assert(load(concat(code, "\n"), "=kong_rs.actions"))
  return chunk(u32, byte, sub, tonumber, tostring, error)
end


--- Returns `apply(buffer)`, which performs every action in `buffer` in
-- order and raises what kong.* raises, for the op table `ops` of a native
-- module.
function _M.new(ops)
  local apply = appliers[ops]
  if not apply then
    apply = generate(ops)
    appliers[ops] = apply
  end
  return apply
end


return _M
