-- The gateway's nginx entry points, shaped like Kong's (kong/init.lua):
-- init, init_worker, rewrite, access (with buffered proxying for the
-- `response` phase), balancer, header_filter, body_filter, log, plus the
-- Admin API and the error handler.
local store = require "kong_rs_gateway.store"
local plugins = require "kong_rs_gateway.plugins"
local runner = require "kong_rs_gateway.runner"
local router = require "kong_rs_gateway.router"
local pdk = require "kong_rs_gateway.pdk"
local phases = require "kong_rs_gateway.pdk.phases"
local response = require "kong_rs_gateway.pdk.response"
local balancer = require "ngx.balancer"
local uri_tools = require "kong_rs_gateway.uri"
local normalize = uri_tools.normalize
local escape = uri_tools.escape

local ngx = ngx
local var = ngx.var
local req = ngx.req
local log = ngx.log
local ERR = ngx.ERR
local type = type
local pairs = pairs
local xpcall = xpcall
local traceback = debug.traceback
local co_create = coroutine.create
local co_resume = coroutine.resume
local find = string.find
local sub = string.sub
local lower = string.lower
local send = response.send
local json_array_mt = require("kong_rs_gateway.json").array_mt
local update_time = ngx.update_time
local ngx_now = ngx.now

-- kong.tools.time get_updated_now_ms: the timestamps Kong's log serializer
-- turns into latencies
local function now_ms()
  update_time()
  return ngx_now() * 1000
end

local PHASES = phases.phases
local REWRITE, ACCESS, RESPONSE = PHASES.rewrite, PHASES.access, PHASES.response
local HEADER_FILTER, BODY_FILTER, LOG = PHASES.header_filter, PHASES.body_filter, PHASES.log
local BALANCER, ERROR = PHASES.balancer, PHASES.error

local UNEXPECTED = { message = "An unexpected error occurred" }

local _M = {}

local opts_global

local function read_or_create_node_id(prefix)
  local path = prefix .. "/kong.id"
  local f = io.open(path, "r")
  if f then
    local id = f:read("*l")
    f:close()
    if id and #id == 36 then return id end
  end
  local id = require("kong_rs_gateway.schema").uuid()
  f = assert(io.open(path, "w"))
  f:write(id, "\n")
  f:close()
  return id
end

--- init_by_lua (master): load plugins and the configuration, build `kong`.
function _M.init(opts)
  opts_global = opts
  require("kong_rs_gateway.debug").enabled = opts.debug == true
  local names = plugins.parse_list(opts.plugins)
  local hostname = (io.popen("hostname"):read("*l")) or "localhost"
  -- As in Kong (kong/init.lua), the `kong` global exists before plugins are
  -- loaded: handlers may cache kong.* functions in locals at load time.
  _G.kong = pdk.new({
    node_id = read_or_create_node_id(opts.prefix),
    hostname = hostname,
    configuration = { prefix = opts.prefix, plugins = names },
  })
  -- as kong/init.lua: assert(db.plugins:load_plugin_schemas(...)), Kong's message
  local ok, err = plugins.load(names)
  if not ok then
    error(err, 0)
  end
  ok, err = store.init(opts)
  if not ok then
    error("kong-rs-gateway: " .. err, 0)
  end
end

function _M.init_worker()
  store.set_prefix(opts_global.prefix)
  local ok, err = runner.refresh()
  if not ok then
    log(ERR, "kong-rs-gateway: cannot load configuration: ", err)
  end
  local debug = require "kong_rs_gateway.debug"
  if debug.enabled then
    debug.init_worker()
  end
  -- plugins' init_worker, like Kong (errors are logged, not fatal)
  for _, p in ipairs(plugins.ordered()) do
    if type(p.handler.init_worker) == "function" then
      local pok, perr = pcall(p.handler.init_worker, p.handler)
      if not pok then
        log(ERR, "[kong] [", p.name, "] init_worker failed: ", perr)
      end
    end
  end
end

-- A per-worker table of request contexts, so the error page location
-- (an internal redirect, which drops ngx.ctx) can find the request's.
local stash, stash_seq = {}, 0

local function stash_ctx(ctx)
  stash_seq = stash_seq + 1
  local ref = tostring(stash_seq)
  stash[ref] = ctx
  ctx.KONG_CTX_REF = ref
  var.kong_rs_ctx_ref = ref
end

local function fail(err)
  log(ERR, "[kong] ", err)
  local ctx = ngx.ctx
  ctx.KONG_UNEXPECTED = true
  if ngx.headers_sent then
    return ngx.exit(ngx.ERROR)
  end
  ctx.delay_response = nil
  local phase = ctx.KONG_PHASE
  if phase ~= REWRITE and phase ~= ACCESS and phase ~= RESPONSE then
    ctx.KONG_PHASE = ACCESS
  end
  return send(500, UNEXPECTED)
end

local function run(ctx, list, phase)
  ctx.KONG_PHASE = phase
  for i = 1, #list do
    local item = list[i]
    ctx.KONG_PLUGIN = item.name
    ctx.KONG_PLUGIN_KEY = item.handler
    ctx.plugin_id = item.conf.__plugin_id -- kong.plugin.get_id (kong/init.lua setup_plugin_context)
    item.fn(item.handler, item.conf)
  end
  ctx.KONG_PLUGIN = nil
  ctx.KONG_PLUGIN_KEY = nil
end

local function plan_of(ctx)
  return ctx.plugins or runner.global_plan()
end

local function rewrite()
  local ctx = ngx.ctx
  ctx.KONG_PROCESSING_START = req.start_time() * 1000
  ctx.KONG_PHASE = REWRITE
  stash_ctx(ctx)
  local ok, err = runner.refresh()
  if not ok then
    return fail("cannot refresh configuration: " .. tostring(err))
  end
  -- the default workspace's id (kong.workspaces set_workspace)
  ctx.workspace = runner.ws_id()
  -- only global plugins run in rewrite: no route is known yet (Kong does the same)
  run(ctx, runner.global_plan().rewrite, REWRITE)
end

function _M.rewrite()
  local ok, err = xpcall(rewrite, traceback)
  if not ok then
    return fail(err)
  end
end

local METHOD_IDS = {
  GET = ngx.HTTP_GET, HEAD = ngx.HTTP_HEAD, PUT = ngx.HTTP_PUT, POST = ngx.HTTP_POST,
  DELETE = ngx.HTTP_DELETE, OPTIONS = ngx.HTTP_OPTIONS, PATCH = ngx.HTTP_PATCH,
  TRACE = ngx.HTTP_TRACE,
}

local HOP_BY_HOP = {
  ["connection"] = true, ["keep-alive"] = true, ["proxy-connection"] = true,
  ["te"] = true, ["trailer"] = true, ["transfer-encoding"] = true, ["upgrade"] = true,
  ["content-length"] = true,
}

-- Buffered proxying for plugins with a `response` handler. Kong does this
-- with ngx.location.capture to an internal location (kong/init.lua
-- Kong.response); stock nginx + lua-nginx-module allows the same. The whole
-- upstream body is held in memory (subrequest_output_buffer_size).
local function buffered_proxy(ctx, plan)
  req.read_body()
  local method = req.get_method()
  local res = ngx.location.capture("/kong_buffered_http", {
    method = METHOD_IDS[method] or ngx.HTTP_GET,
    always_forward_body = true,
    share_all_vars = true,
    ctx = ctx,
  })
  if res.truncated and method ~= "HEAD" then
    ctx.KONG_PHASE = ERROR
    return send(502, { message = "An invalid response was received from the upstream server" })
  end
  ctx.KONG_PROXIED = true
  ctx.KONG_RESPONSE_START = now_ms()
  ctx.buffered_status = res.status
  ctx.buffered_headers = res.header
  ctx.buffered_body = res.body
  ngx.status = res.status
  for k, v in pairs(res.header) do
    if not HOP_BY_HOP[lower(k)] then
      ngx.header[k] = v
    end
  end
  run(ctx, plan.response, RESPONSE)
  local body = ctx.buffered_body or ""
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ctx.buffered_status)
end

local function path_of(uri)
  local q = find(uri, "?", 1, true)
  return q and sub(uri, 1, q - 1) or uri
end

local function run_access(ctx, name, handler, fn, conf)
  ctx.KONG_PLUGIN = name
  ctx.KONG_PLUGIN_KEY = handler
  ctx.plugin_id = conf.__plugin_id
  local co = co_create(fn)
  local ok, err = co_resume(co, handler, conf)
  if not ok then
    kong.log.err(err)
    ctx.delayed_response = { status_code = 500, content = UNEXPECTED }
    ctx.KONG_UNEXPECTED = true
  end
  ctx.KONG_PLUGIN = nil
  ctx.KONG_PLUGIN_KEY = nil
end

local function access()
  local ctx = ngx.ctx
  ctx.KONG_PHASE = ACCESS
  local r = runner.router()
  -- Kong routes on the normalised path (kong/router/utils.lua strip_uri_args)
  local path = normalize(path_of(var.request_uri), true)
  local match = r:match(req.get_method(), var.host, path)
  if not match then
    return send(404, { message = "no Route matched with those values" })
  end
  local svc = match.service
  ctx.route = match.route
  if not svc then
    return send(503, { message = "no Service found with those values" })
  end
  ctx.service = svc.entity
  ctx.balancer_service = svc
  -- kong/runloop/handler.lua balancer_prepare: the tries list exists (empty)
  -- from the route match on, even when a plugin answers instead
  ctx.balancer_tries = setmetatable({}, json_array_mt)
  ctx.KONG_UPSTREAM_PATH = router.upstream_path(match, path)
  var.upstream_scheme = svc.scheme
  var.upstream_host = match.route.preserve_host and (var.http_host or svc.host_header) or svc.host_header

  local plan = runner.plan_for(match.route, svc.entity)

  -- kong/init.lua execute_collecting_plugins_iterator: each access handler
  -- in a coroutine; kong.response.exit is delayed (ctx.delay_response) and
  -- flushed after the loop, so later plugins do not run.
  ctx.delay_response = true
  if plan.dynamic then
    -- some plugin is configured for a consumer: as Kong's collecting
    -- iterator, look each plugin's configuration up when its turn comes,
    -- with the consumer the plugins before it authenticated, and keep what
    -- was chosen for the later phases
    local collected = runner.new_plan()
    ctx.plugins = collected
    local i, p, conf = runner.next_candidate(plan, 0, ctx)
    while i do
      runner.add(collected, p, conf)
      local handler = p.handler
      if not ctx.delayed_response and type(handler.access) == "function" then
        run_access(ctx, p.name, handler, handler.access, conf)
      end
      i, p, conf = runner.next_candidate(plan, i, ctx)
    end
    collected.has_response = #collected.response > 0
    plan = collected
  else
    ctx.plugins = plan
    local list = plan.access
    for i = 1, #list do
      if ctx.delayed_response then
        break
      end
      local item = list[i]
      run_access(ctx, item.name, item.handler, item.fn, item.conf)
    end
  end
  ctx.delay_response = nil
  ctx.KONG_ACCESS_ENDED_AT = now_ms()
  if ctx.delayed_response then
    return response.flush_delayed(ctx)
  end

  if not svc.ip then
    return send(503, { message = "name resolution failed" })
  end
  local args = var.args
  -- kong/runloop/handler.lua: var.upstream_uri = escape(match_t.upstream_uri)
  local uri = escape(ctx.KONG_UPSTREAM_PATH)
  if args and args ~= "" then
    uri = uri .. "?" .. args
  end
  var.upstream_uri = uri

  if plan.has_response then
    return buffered_proxy(ctx, plan)
  end
  ctx.KONG_PROXIED = true
end

function _M.access()
  local ok, err = xpcall(access, traceback)
  if not ok then
    return fail(err)
  end
end

function _M.balancer()
  local ctx = ngx.ctx
  ctx.KONG_PHASE = BALANCER
  local started = now_ms()
  local svc = ctx.balancer_service
  if not svc then
    log(ERR, "[kong] balancer: no service for this request")
    return ngx.exit(500)
  end
  local ok, err = balancer.set_current_peer(svc.ip, svc.port)
  if not ok then
    log(ERR, "[kong] balancer: cannot set peer: ", err)
    return ngx.exit(500)
  end
  balancer.set_timeouts(svc.connect_timeout / 1000, svc.write_timeout / 1000, svc.read_timeout / 1000)
  -- kong/init.lua balancer: one try per balancer run (no retries here)
  local t = now_ms()
  ctx.KONG_BALANCER_ENDED_AT = t
  ctx.KONG_PROXY_LATENCY = t - ctx.KONG_PROCESSING_START
  local tries = ctx.balancer_tries
  if not tries then
    tries = setmetatable({}, json_array_mt)
    ctx.balancer_tries = tries
  end
  tries[#tries + 1] = { ip = svc.ip, port = svc.port, balancer_start = started,
                        balancer_latency = t - started }
end

function _M.header_filter()
  local ctx = ngx.ctx
  if not ctx.KONG_PHASE then
    return
  end
  -- kong/init.lua header_filter: the waiting and latency figures
  local start = ctx.KONG_RESPONSE_START or now_ms()
  ctx.KONG_HEADER_FILTER_START = start
  if ctx.KONG_PROXIED then
    if not ctx.KONG_WAITING_TIME then
      ctx.KONG_WAITING_TIME = start - (ctx.KONG_BALANCER_ENDED_AT or ctx.KONG_ACCESS_ENDED_AT or start)
    end
    if not ctx.KONG_PROXY_LATENCY then
      ctx.KONG_PROXY_LATENCY = start - ctx.KONG_PROCESSING_START
    end
  elseif not ctx.KONG_RESPONSE_LATENCY and ctx.KONG_PROCESSING_START then
    ctx.KONG_RESPONSE_LATENCY = start - ctx.KONG_PROCESSING_START
  end
  run(ctx, plan_of(ctx).header_filter, HEADER_FILTER)
end

function _M.body_filter()
  local ctx = ngx.ctx
  if not ctx.KONG_PHASE then
    return
  end
  -- kong.response.exit() called in header_filter replaces the body
  if ctx.response_body then
    ngx.arg[1] = ctx.response_body
    ngx.arg[2] = true
    ctx.response_body = nil
    ctx.KONG_BODY_REPLACED = true
  elseif ctx.KONG_BODY_REPLACED then
    ngx.arg[1] = nil
    return
  end
  run(ctx, plan_of(ctx).body_filter, BODY_FILTER)
  if ngx.arg[2] and ctx.KONG_PROXIED and ctx.KONG_HEADER_FILTER_START then
    -- kong/init.lua body_filter: time spent receiving the response
    ctx.KONG_RECEIVE_TIME = now_ms() - ctx.KONG_HEADER_FILTER_START
  end
end

function _M.log()
  local ctx = ngx.ctx
  if ctx.KONG_CTX_REF then
    stash[ctx.KONG_CTX_REF] = nil
  end
  if not ctx.KONG_PHASE then
    return
  end
  run(ctx, plan_of(ctx).log, LOG)
end

-- error_page target for 5xx nginx produces itself (upstream down, ...),
-- answering like kong/error_handlers.lua.
local ERROR_MESSAGES = {
  [500] = "An unexpected error occurred",
  [502] = "An invalid response was received from the upstream server",
  [503] = "The upstream server is currently unavailable",
  [504] = "The upstream server is timing out",
}

function _M.handle_error()
  local ref = var.kong_rs_ctx_ref
  local ctx = ref and stash[ref]
  if ctx then
    ngx.ctx = ctx
  else
    ctx = ngx.ctx
  end
  local status = ngx.status
  ctx.KONG_PHASE = ERROR
  ctx.KONG_UNEXPECTED = true
  local message = ERROR_MESSAGES[status] or ("The upstream server responded with " .. status)
  return send(status, { message = message })
end

function _M.admin()
  return require("kong_rs_gateway.admin").serve()
end

return _M
