-- JSON for the gateway. Decoding uses lua-cjson; encoding is our own because
-- Debian's lua-cjson 2.1.0 has no array_mt/empty_array_mt, and Kong's
-- Admin API must print `[]` for an empty array and `{}` for an empty record.
-- Tables carrying `array_mt` (or non-empty sequences) encode as arrays.
local cjson = require "cjson.safe"

local type = type
local pairs = pairs
local next = next
local concat = table.concat
local getmetatable = getmetatable
local setmetatable = setmetatable
local tostring = tostring
local huge = math.huge

local decoder = cjson.new()
decoder.decode_invalid_numbers(false) -- reject NaN/Infinity/hex like a strict parser
decoder.decode_max_depth(64)

local scalar = cjson.new()
scalar.encode_invalid_numbers(false)

local _M = {
  null = cjson.null,
  array_mt = { __name = "kong_rs_gateway.json.array" },
}

local array_mt = _M.array_mt
local null = cjson.null

function _M.array(t)
  return setmetatable(t or {}, array_mt)
end

function _M.is_array(t)
  if getmetatable(t) == array_mt then
    return true
  end
  local n = #t
  if n == 0 then
    return false
  end
  local c = 0
  for k in pairs(t) do
    if type(k) ~= "number" then
      return false
    end
    c = c + 1
  end
  return c == n
end

local is_array = _M.is_array

local function encode(v, buf, n, depth)
  local tv = type(v)
  if tv == "string" then
    n = n + 1; buf[n] = scalar.encode(v)
  elseif tv == "number" then
    if v ~= v or v == huge or v == -huge then
      return nil, "cannot encode a non-finite number"
    end
    n = n + 1; buf[n] = scalar.encode(v)
  elseif tv == "boolean" then
    n = n + 1; buf[n] = v and "true" or "false"
  elseif v == nil or v == null then
    n = n + 1; buf[n] = "null"
  elseif tv == "table" then
    if depth > 64 then
      return nil, "nesting too deep"
    end
    local err
    if is_array(v) then
      n = n + 1; buf[n] = "["
      for i = 1, #v do
        if i > 1 then n = n + 1; buf[n] = "," end
        n, err = encode(v[i], buf, n, depth + 1)
        if not n then return nil, err end
      end
      n = n + 1; buf[n] = "]"
    else
      n = n + 1; buf[n] = "{"
      local first = true
      for k, item in pairs(v) do
        if type(item) ~= "function" then
          if not first then n = n + 1; buf[n] = "," end
          first = false
          n = n + 1; buf[n] = scalar.encode(tostring(k))
          n = n + 1; buf[n] = ":"
          n, err = encode(item, buf, n, depth + 1)
          if not n then return nil, err end
        end
      end
      n = n + 1; buf[n] = "}"
    end
  else
    return nil, "cannot encode a " .. tv
  end
  return n
end

--- Encode a Lua value as JSON; returns the string or nil, err.
function _M.encode(v)
  local buf = {}
  local n, err = encode(v, buf, 0, 0)
  if not n then
    return nil, err
  end
  return concat(buf, "", 1, n)
end

--- Decode JSON; returns the value or nil, err. Never raises.
function _M.decode(s)
  if type(s) ~= "string" then
    return nil, "expected a string"
  end
  return decoder.decode(s)
end

-- Is this string valid UTF-8 (no overlongs, no surrogates)?
function _M.valid_utf8(s)
  local i, len = 1, #s
  local byte = string.byte
  while i <= len do
    local c = byte(s, i)
    if c < 0x80 then
      i = i + 1
    else
      local n, min
      if c >= 0xC2 and c <= 0xDF then n, min = 1, 0x80
      elseif c >= 0xE0 and c <= 0xEF then n, min = 2, 0x800
      elseif c >= 0xF0 and c <= 0xF4 then n, min = 3, 0x10000
      else return false end
      local cp = c % (2 ^ (6 - n))
      for j = 1, n do
        local cc = byte(s, i + j)
        if not cc or cc < 0x80 or cc > 0xBF then
          return false
        end
        cp = cp * 64 + (cc - 0x80)
      end
      if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
        return false
      end
      i = i + n + 1
    end
  end
  return true
end

return _M
