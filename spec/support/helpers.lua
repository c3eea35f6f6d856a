-- Integration-spec adapter. Under Pongo (Kong's spec.helpers loadable) it
-- drives a real Kong; otherwise it starts/stops kong-rs-gateway
-- (gateway/bin/kong-rs-gateway) in a fresh temporary prefix on free ports.
-- Specs only use this surface:
--   h.start(opts)  opts.plugins = { "rs-hello", ... }, opts.workers, opts.declarative,
--                  opts.debug (gateway: the /kong-rs/... debug endpoints),
--                  opts.lua_cpath (searched first for native modules)
--   h.stop()       h.restart()   (h.stop removes what h.start made)
--   h.reload()     what `kong reload` does (a HUP on the gateway); returns
--                  when the new workers serve
--   h.proxy_port() the proxy's port, for raw sockets
--   h.files_dir()  a directory the nginx workers can write to (file-log paths)
--   h.admin() / h.proxy()  -> client with :send{method,path,headers,body,query},
--                             :get/:post/:put/:patch/:delete(path, body?, headers?)
--   response: { status, headers (lowercase keys), body, json = decoded or nil }
--   h.upstream_url(path)  URL of the echo upstream
--   h.echo(res)           the echoed request: { method, path, headers, worker_pid }
--   h.worker_pids()       sorted pids of the current nginx workers
--   h.error_log()         contents of the error log
--   h.wait_until(fn, timeout)
--   h.is_kong             true when running against real Kong
--   h.skip_on_kong(name, reason) on Kong: a pending test saying why; returns true
--   h.settle()            wait until Kong's workers run the current configuration
--   h.res_status(code, res) -> body (errors with the body when the status differs)
-- Gateway only (nil on Kong): h.prefix_path(), h.master_pid().
local cjson = require "cjson.safe"

local h = {}

local function repo_root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/support/[^/]+$")
  if not dir or dir == "" then
    dir = "."
  end
  local p = io.popen("cd '" .. dir .. "' && pwd")
  local abs = p:read("*l")
  p:close()
  return abs
end

local ROOT = repo_root()

local ok_kong, kong_helpers = pcall(require, "spec.helpers")
h.is_kong = ok_kong and type(kong_helpers) == "table" and type(kong_helpers.start_kong) == "function"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- LuaJIT's popen():close() does not report the exit status: echo it.
local function run(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  return code == 0, out, code
end

local function now()
  local socket = require "socket"
  return socket.gettime()
end

function h.sleep(s)
  require("socket").sleep(s)
end

function h.wait_until(fn, timeout, step)
  timeout = timeout or 10
  local deadline = now() + timeout
  local last_err
  repeat
    local ok, res = pcall(fn)
    if ok and res then
      return res
    end
    last_err = res
    h.sleep(step or 0.05)
  until now() > deadline
  error("wait_until: condition not met within " .. timeout .. "s" ..
        (last_err and (": " .. tostring(last_err)) or ""), 2)
end

---------------------------------------------------------------------------
-- a minimal HTTP/1.1 client (LuaSocket), one connection per request so
-- that connections spread over the nginx workers
---------------------------------------------------------------------------

local function decode_chunked(body)
  local out, pos = {}, 1
  for _ = 1, 100000 do
    local line_end = body:find("\r\n", pos, true)
    if not line_end then break end
    local size = tonumber(body:sub(pos, line_end - 1):match("^%x+"), 16)
    if not size or size == 0 then break end
    out[#out + 1] = body:sub(line_end + 2, line_end + 1 + size)
    pos = line_end + 2 + size + 2
  end
  return table.concat(out)
end

local function encode_query(q)
  if type(q) == "string" then return q end
  local parts = {}
  for k, v in pairs(q) do
    parts[#parts + 1] = tostring(k) .. "=" .. tostring(v):gsub("[^%w%-%._~]", function(c)
      return string.format("%%%02X", c:byte())
    end)
  end
  table.sort(parts)
  return table.concat(parts, "&")
end

local function raw_request(port, req)
  local socket = require "socket"
  local sock = socket.tcp()
  sock:settimeout(10)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then
    return nil, "connect to 127.0.0.1:" .. port .. " failed: " .. tostring(err)
  end
  local headers = {}
  for k, v in pairs(req.headers or {}) do headers[k:lower()] = { k, v } end
  local body = req.body
  if type(body) == "table" then
    local ct = headers["content-type"] and headers["content-type"][2] or "application/json"
    headers["content-type"] = { "Content-Type", ct }
    if ct:find("json", 1, true) then
      body = assert(cjson.encode(body))
    else
      body = encode_query(body)
    end
  end
  local path = req.path or "/"
  if req.query then
    path = path .. (path:find("?", 1, true) and "&" or "?") .. encode_query(req.query)
  end
  local lines = { (req.method or "GET") .. " " .. path .. " HTTP/1.1" }
  if not headers["host"] then lines[#lines + 1] = "Host: 127.0.0.1:" .. port end
  lines[#lines + 1] = "Connection: close"
  for _, kv in pairs(headers) do
    lines[#lines + 1] = kv[1] .. ": " .. tostring(kv[2])
  end
  if body then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  local data = table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
  ok, err = sock:send(data)
  if not ok then
    sock:close()
    return nil, "send failed: " .. tostring(err)
  end
  local raw, rerr, partial = sock:receive("*a")
  sock:close()
  raw = raw or partial
  if not raw or raw == "" then
    return nil, "receive failed: " .. tostring(rerr)
  end
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then
    return nil, "malformed response: " .. raw:sub(1, 200)
  end
  local status = tonumber(head:match("^HTTP/%d%.%d (%d%d%d)"))
  local res_headers = {}
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      if res_headers[k] then
        res_headers[k] = res_headers[k] .. ", " .. v
      else
        res_headers[k] = v
      end
    end
  end
  if (res_headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    rest = decode_chunked(rest)
  end
  return { status = status, headers = res_headers, body = rest, json = cjson.decode(rest) }
end

local function client_for(send)
  local c = {}
  function c:send(req) return send(req) end
  for _, m in ipairs({ "get", "post", "put", "patch", "delete" }) do
    c[m] = function(_, path, body, headers)
      return send({ method = m:upper(), path = path, body = body, headers = headers })
    end
  end
  function c:close() end
  return c
end

---------------------------------------------------------------------------
-- kong-rs-gateway backend
---------------------------------------------------------------------------

local G = {}

local function read_ports(prefix)
  local f = io.open(prefix .. "/ports.env")
  if not f then return nil end
  local t = {}
  for line in f:lines() do
    local k, v = line:match("^(%w+_?%w*)=(.*)$")
    if k then t[k] = tonumber(v) or v end
  end
  f:close()
  return t
end

local function random_port()
  return 20000 + math.random(0, 39999)
end

function G.start(opts)
  opts = opts or {}
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  if not G.prefix then
    local okp, out = run("mktemp -d \"${TMPDIR:-/tmp}/kong-rs-spec.XXXXXX\"")
    assert(okp, out)
    G.prefix = out:gsub("%s+$", "")
  end
  G.opts = opts
  local env = {
    "KONG_PLUGINS=" .. shell_quote(table.concat(opts.plugins or { "bundled" }, ",")),
    "KONG_RS_DEBUG=" .. (opts.debug and "1" or "0"),
    "KONG_RS_PROXY_PORT=" .. random_port(),
    "KONG_RS_ADMIN_PORT=" .. random_port(),
    "KONG_RS_UPSTREAM_PORT=" .. random_port(),
  }
  if opts.lua_cpath then
    -- searched before the checkout's build/lib
    env[#env + 1] = "KONG_RS_LUA_CPATH=" .. shell_quote(opts.lua_cpath)
  end
  local cmd = "env " .. table.concat(env, " ") .. " " .. shell_quote(ROOT .. "/gateway/bin/kong-rs-gateway") ..
              " start --prefix " .. shell_quote(G.prefix) .. " --workers " .. (opts.workers or 2)
  if opts.declarative then
    cmd = cmd .. " --declarative " .. shell_quote(opts.declarative)
  end
  local ok, out = run(cmd)
  if not ok then
    error("kong-rs-gateway failed to start:\n" .. out, 2)
  end
  G.ports = assert(read_ports(G.prefix), "no ports.env")
  return true
end

-- What a failed start printed (for specs of start-up errors): ok, output.
function G.try_start(opts)
  local ok, err = pcall(G.start, opts)
  return ok, not ok and tostring(err) or nil
end

function G.stop(keep_prefix)
  if not G.prefix then return end
  run(shell_quote(ROOT .. "/gateway/bin/kong-rs-gateway") .. " stop --prefix " .. shell_quote(G.prefix))
  if not keep_prefix then
    run("rm -rf " .. shell_quote(G.prefix))
    G.prefix = nil
  end
end

function G.restart()
  G.stop(true)
  G.opts.declarative = nil
  return G.start(G.opts)
end

function G.admin()
  return client_for(function(req)
    return assert(raw_request(G.ports.ADMIN_PORT, req))
  end)
end

function G.proxy()
  return client_for(function(req)
    return assert(raw_request(G.ports.PROXY_PORT, req))
  end)
end

function G.upstream_url(path)
  return "http://127.0.0.1:" .. G.ports.UPSTREAM_PORT .. (path or "")
end

function G.echo(res)
  local j = res.json
  assert(type(j) == "table", "response is not the echo upstream's JSON: " .. tostring(res.body))
  return { method = j.method, path = j.path, headers = j.headers, worker_pid = j.worker_pid, body = j.body }
end

-- The pid of the gateway's nginx master.
function G.master_pid()
  local f = assert(io.open(G.prefix .. "/logs/nginx.pid"))
  local master = tonumber(f:read("*l"))
  f:close()
  return master
end

function G.worker_pids()
  local _, out = run("ps -o pid= --ppid " .. G.master_pid())
  local pids = {}
  for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
  table.sort(pids)
  return pids
end

function G.error_log()
  local f = io.open(G.prefix .. "/logs/error.log")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function G.prefix_path()
  return G.prefix
end

--- A reload as an operator does it: a HUP to the master (what `kong
-- reload` sends); returns once every worker is a new one.
function G.reload()
  local before = G.worker_pids()
  assert(run("kill -HUP " .. G.master_pid()))
  h.wait_until(function()
    local now = G.worker_pids()
    if #now ~= #before then return false end
    for _, pid in ipairs(now) do
      for _, old in ipairs(before) do
        if pid == old then return false end
      end
    end
    return true
  end, 15)
end

function G.proxy_port()
  return assert(G.ports, "the gateway is not started").PROXY_PORT
end

function G.files_dir()
  assert(G.prefix, "the gateway is not started")
  return G.prefix .. "/files"
end

---------------------------------------------------------------------------
-- real Kong backend (Kong's spec.helpers, Pongo; Postgres unless
-- KONG_DATABASE says otherwise): not exercised by our CI
---------------------------------------------------------------------------

local K = {}

-- Our "bundled" means the plugins this rock ships; Kong's means its own.
local OUR_BUNDLED = { "rs-hello", "rs-file-log", "rs-rate-limiting", "rs-jwt" }

local function plugin_names(list)
  local out, seen = {}, {}
  for _, name in ipairs(list or { "bundled" }) do
    for _, n in ipairs(name == "bundled" and OUR_BUNDLED or { name }) do
      if not seen[n] then
        seen[n] = true
        out[#out + 1] = n
      end
    end
  end
  return out
end

-- resty.http sends strings only, and Kong's spec client encodes a table
-- body only when a Content-Type says how: default to JSON, as ours does.
local function kong_request(req)
  local body = req.body
  if type(body) ~= "table" then
    return req
  end
  local headers, has_ct = {}, false
  for k, v in pairs(req.headers or {}) do
    headers[k] = v
    if k:lower() == "content-type" then has_ct = true end
  end
  local out = {}
  for k, v in pairs(req) do out[k] = v end
  out.headers = headers
  if not has_ct then
    headers["Content-Type"] = "application/json"
    out.body = assert(cjson.encode(body))
  end
  return out
end

local function kong_client(make)
  return client_for(function(req)
    local c = make()
    local res = assert(c:send(kong_request(req)))
    local body = res:read_body()
    c:close()
    local headers = {}
    for k, v in pairs(res.headers) do
      headers[k:lower()] = type(v) == "table" and table.concat(v, ", ") or v
    end
    return { status = res.status, headers = headers, body = body, json = cjson.decode(body) }
  end)
end

local function kong_env(opts)
  local strategy = opts.declarative and "off" or (os.getenv("KONG_DATABASE") or "postgres")
  return {
    database = strategy,
    plugins = "bundled," .. table.concat(plugin_names(opts.plugins), ","),
    nginx_conf = "spec/fixtures/custom_nginx.template",
    -- spec/kong_tests.conf sets nginx_main_worker_processes = 1, which
    -- wins over nginx_worker_processes: set the one nginx reads
    nginx_main_worker_processes = opts.workers or 2,
    declarative_config = opts.declarative,
    db_update_frequency = 0.1,
    -- searched first; ";;" keeps Kong's defaults (and LUA_CPATH) after it
    lua_package_cpath = opts.lua_cpath and (opts.lua_cpath .. ";;") or nil,
  }
end

function K.start(opts)
  opts = opts or {}
  K.opts = opts
  K.env = kong_env(opts)
  -- Kong's get_db_utils adds each plugin it is given to one conf shared by
  -- the whole busted process (spec/internal/db.lua): take back the names
  -- an earlier start of ours added, so each start loads only its own.
  local loaded = kong_helpers.test_conf.loaded_plugins
  for name in pairs(K.added or {}) do
    loaded[name] = nil
  end
  K.added = {}
  for _, name in ipairs(plugin_names(opts.plugins)) do
    if not loaded[name] then
      K.added[name] = true
    end
  end
  -- a fresh database (schema reset, tables truncated), our plugins loaded
  kong_helpers.get_db_utils(K.env.database, nil, plugin_names(opts.plugins))
  assert(kong_helpers.start_kong(K.env))
  return true
end

function K.stop()
  kong_helpers.stop_kong()
  if K.files then
    run("rm -rf " .. shell_quote(K.files))
    K.files = nil
  end
end

-- Same database, same prefix: the configuration survives (no get_db_utils).
function K.restart()
  kong_helpers.stop_kong(nil, true)
  assert(kong_helpers.start_kong(K.env, nil, true))
  return true
end

function K.proxy_port() return kong_helpers.get_proxy_port() end

--- `kong reload` with the environment Kong was started with (without it,
-- reload re-renders the configuration from defaults).
function K.reload()
  local nginx_conf = K.env.nginx_conf and (" --nginx-conf " .. K.env.nginx_conf) or ""
  assert(kong_helpers.kong_exec("reload --conf " .. kong_helpers.test_conf_path .. nginx_conf ..
                                " --prefix " .. kong_helpers.test_conf.prefix, K.env))
  -- (Kong's probe behind h.settle does not pass after a reload: wait for
  -- the Admin API of the new workers instead)
  h.wait_until(function() return K.admin():get("/").status == 200 end, 15)
end
function K.admin() return kong_client(kong_helpers.admin_client) end
function K.proxy() return kong_client(kong_helpers.proxy_client) end

function K.upstream_url(path)
  return "http://" .. kong_helpers.mock_upstream_host .. ":" .. kong_helpers.mock_upstream_port ..
         "/anything" .. (path or "")
end

function K.echo(res)
  local j = res.json
  assert(type(j) == "table", "response is not the mock upstream's JSON: " .. tostring(res.body))
  local url = j.url or ""
  return { method = j.vars and j.vars.request_method, path = url:match("^%a+://[^/]+([^?]*)"),
           headers = j.headers, worker_pid = nil, body = j.post_data and j.post_data.text }
end

-- GET / lists the workers (kong/api/routes/kong.lua), as spec.helpers reads them.
function K.worker_pids()
  local pids = kong_helpers.get_kong_workers()
  table.sort(pids)
  return pids
end

function K.error_log()
  local f = io.open(kong_helpers.test_conf.nginx_err_logs)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

-- Kong's workers run as the user of kong.conf (often not us): world-writable.
function K.files_dir()
  if not K.files then
    local ok, out = run("d=$(mktemp -d \"${TMPDIR:-/tmp}/kong-rs-files.XXXXXX\") && chmod 0777 \"$d\" && echo \"$d\"")
    assert(ok, out)
    K.files = out:gsub("%s+$", "")
  end
  return K.files
end

function K.try_start(opts)
  local ok, err = pcall(K.start, opts)
  return ok, not ok and tostring(err) or nil
end

local backend = h.is_kong and K or G
for k, v in pairs(backend) do
  if type(v) == "function" then h[k] = v end
end
h.root = ROOT

--- Waits until every worker proxies with the configuration the Admin API
-- holds now. Kong applies Admin API changes after a router and plugins
-- iterator rebuild (a few seconds, kong/runloop/handler.lua); the gateway
-- on the next request, so there this returns at once.
function h.settle()
  if h.is_kong then
    kong_helpers.wait_for_all_config_update({ disable_ipv6 = true })
  end
end

--- On real Kong, registers a pending test named `name` that gives `reason`
-- (why the spec file is gateway-only) and returns true: the caller returns.
function h.skip_on_kong(name, reason)
  if not h.is_kong then
    return false
  end
  -- busted's describe/pending live in the spec file's environment (under
  -- Kong's bin/busted they are not globals): take them from the caller.
  local env = getfenv(2)
  env.describe(name, function()
    env.pending(reason)
  end)
  return true
end

--- Status check returning the body (works on both backends).
function h.res_status(code, res)
  assert(type(res) == "table", "no response")
  if res.status ~= code then
    error(string.format("expected status %d, got %s: %s", code, tostring(res.status),
                        tostring(res.body)), 2)
  end
  return res.body
end

return h
