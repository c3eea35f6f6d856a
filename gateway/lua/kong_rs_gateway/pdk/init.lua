-- Builds the `kong` global the plugins and the Rust bridge see. Every leaf
-- is a plain function stored once, so cached handles stay valid.
local log = require "kong_rs_gateway.pdk.log"
local request = require "kong_rs_gateway.pdk.request"
local response = require "kong_rs_gateway.pdk.response"
local service = require "kong_rs_gateway.pdk.service"
local misc = require "kong_rs_gateway.pdk.misc"
local cache = require "kong_rs_gateway.pdk.cache"

local _M = {}

_M.VERSION = "3.9.3" -- kong/meta.lua of the reference, Kong 3.9.3

function _M.new(opts)
  response.set_log(log)
  local node_id = opts.node_id
  local hostname = opts.hostname
  return {
    version = _M.VERSION,
    version_num = 3009003,
    configuration = opts.configuration or {},
    log = log,
    request = request,
    response = response,
    service = { request = service.request, response = service.response },
    client = misc.client,
    ctx = misc.ctx,
    nginx = misc.nginx,
    router = misc.router,
    -- kong/pdk/plugin.lua: the running plugin entity's id
    plugin = { get_id = function() return ngx.ctx.plugin_id end },
    cache = cache,
    node = {
      get_id = function() return node_id end,
      get_hostname = function() return hostname end,
    },
    ip = { is_trusted = function() return false end },
  }
end

return _M
