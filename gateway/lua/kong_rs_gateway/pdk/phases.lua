-- Phase bits and checks with Kong's messages (kong/pdk/private/phases.lua).
local bit = require "bit"

local band, bor = bit.band, bit.bor
local fmt = string.format
local concat = table.concat
local ngx = ngx
local get_phase = ngx.get_phase

local PHASES = {
  init_worker = 0x00000001,
  rewrite = 0x00000010,
  access = 0x00000020,
  balancer = 0x00000040,
  response = 0x00000080,
  header_filter = 0x00000200,
  body_filter = 0x00000400,
  log = 0x00002000,
  error = 0x01000000,
  admin_api = 0x10000000,
}

local ORDER = { "init_worker", "rewrite", "access", "balancer", "response",
                "header_filter", "body_filter", "log", "error", "admin_api" }

for _, name in ipairs(ORDER) do
  PHASES[PHASES[name]] = name
end

local function new(...)
  return bor(...)
end

local function names(mask)
  local out = {}
  -- Kong lists names by bit position
  local sorted = {}
  for _, name in ipairs(ORDER) do sorted[#sorted + 1] = { PHASES[name], name } end
  table.sort(sorted, function(a, b) return a[1] < b[1] end)
  for _, item in ipairs(sorted) do
    if band(mask, item[1]) ~= 0 then out[#out + 1] = item[2] end
  end
  return concat(out, ", ")
end

local function check(accepted)
  local current = ngx.ctx.KONG_PHASE
  if not current then
    if get_phase() == "content" then
      current = PHASES.admin_api
    else
      error(fmt("no phase in ngx.ctx.KONG_PHASE, (need one of %s)", names(accepted)), 3)
    end
  end
  if band(current, accepted) ~= 0 then
    return
  end
  error(fmt("function cannot be called in %s phase (only in: %s)",
            PHASES[current] or "'unknown phase'", names(accepted)), 3)
end

local request = new(PHASES.rewrite, PHASES.access, PHASES.response, PHASES.header_filter,
                    PHASES.body_filter, PHASES.log, PHASES.error, PHASES.admin_api)

return {
  phases = PHASES,
  new = new,
  check = check,
  request = request,
  -- kong/pdk/response.lua
  rewrite_access_header = new(PHASES.rewrite, PHASES.access, PHASES.response,
                              PHASES.header_filter, PHASES.error, PHASES.admin_api),
  header_body_log = new(PHASES.response, PHASES.header_filter, PHASES.body_filter,
                        PHASES.log, PHASES.error, PHASES.admin_api),
  -- kong/pdk/service/request.lua
  rewrite_access = new(PHASES.rewrite, PHASES.access),
  rewrite_access_balancer = new(PHASES.rewrite, PHASES.access, PHASES.balancer),
  -- kong/pdk/request.lua get_raw_body
  before_content = new(PHASES.rewrite, PHASES.access, PHASES.response, PHASES.error, PHASES.admin_api),
  -- kong/pdk/router.lua
  access_and_after = new(PHASES.access, PHASES.header_filter, PHASES.response,
                         PHASES.body_filter, PHASES.log, PHASES.error),
  -- kong/pdk/client.lua
  auth_and_later = new(PHASES.access, PHASES.header_filter, PHASES.response,
                       PHASES.body_filter, PHASES.log),
  -- kong/pdk/log.lua
  with_ctx = new(PHASES.rewrite, PHASES.access, PHASES.header_filter, PHASES.response,
                 PHASES.body_filter, PHASES.log),
}
