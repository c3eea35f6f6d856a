-- Benchmark workload "json-validate" in Lua: the ten rules of
-- rs-bench-json (src/plugins/bench.rs), with cjson, 400 on the first violation.
local cjson = require("cjson.safe")

local kong = kong
local decode = cjson.decode
local type = type
local floor = math.floor
local byte = string.byte

-- Character count (UTF-8 lead bytes), as Rust's chars().count().
local function utf8_len(s)
  local n = 0
  for i = 1, #s do
    local b = byte(s, i)
    if b < 128 or b >= 192 then
      n = n + 1
    end
  end
  return n
end

local PLANS = { free = true, pro = true, enterprise = true }

local function str_len(v)
  if type(v) ~= "string" then
    return nil
  end
  return utf8_len(v)
end

local function int_in(v, low, high)
  return type(v) == "number" and v == floor(v) and v >= low and v <= high
end

local function array_len(v)
  if type(v) ~= "table" then
    return nil
  end
  local n = #v
  if next(v) ~= nil and n == 0 then
    return nil -- an object, not an array
  end
  return n
end

local function first_violation(doc)
  local user = type(doc.user) == "table" and doc.user or {}
  if str_len(doc.id) ~= 36 then return "id must be a 36-character string" end
  local n = str_len(user.name)
  if not n or n < 1 or n > 64 then return "user.name must be 1-64 characters" end
  n = str_len(user.email)
  if not n or n < 3 or n > 254 then return "user.email must be 3-254 characters" end
  if not int_in(user.age, 13, 130) then return "user.age must be an integer 13-130" end
  if not PLANS[doc.plan] then return "plan must be free, pro or enterprise" end
  if not int_in(doc.quantity, 1, 100) then return "quantity must be an integer 1-100" end
  n = array_len(doc.tags)
  if not n or n > 10 then return "tags must be an array of at most 10" end
  n = array_len(doc.items)
  if not n or n < 1 or n > 50 then return "items must be an array of 1-50" end
  if doc.notes ~= nil then
    n = str_len(doc.notes)
    if not n or n > 1024 then return "notes must be at most 1024 characters" end
  end
  if type(doc.active) ~= "boolean" then return "active must be a boolean" end
  return nil
end

local function violation(message)
  return kong.response.exit(400, '{"message":"' .. message .. '"}',
                            { ["content-type"] = "application/json" })
end

local LuaBenchJson = { PRIORITY = 1000, VERSION = "0.1.0" }

function LuaBenchJson:access(conf) -- luacheck: ignore
  local body = kong.request.get_raw_body()
  if not body then
    return violation("body must be a JSON object")
  end
  local doc = decode(body)
  if doc == nil then
    return violation("body must be valid JSON")
  end
  -- A non-empty array decodes to a sequence. (cjson cannot tell `[]` from
  -- `{}`, nor 36.0 from 36: those edge cases differ from the Rust twin.)
  if type(doc) ~= "table" or doc[1] ~= nil then
    return violation("body must be a JSON object")
  end
  local message = first_violation(doc)
  if message then
    return violation(message)
  end
end

return LuaBenchJson
