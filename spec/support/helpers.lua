-- Integration-spec adapter. Under Pongo (Kong's spec.helpers loadable) it
-- drives a real Kong; otherwise it starts/stops kong-rs-gateway
-- (gateway/bin/kong-rs-gateway) in a fresh temporary prefix on free ports.
-- Specs only use this surface:
--   h.start(opts)  opts.plugins = { "rs-hello", ... }, opts.workers, opts.declarative
--   h.stop()       h.restart()
--   h.admin() / h.proxy()  -> client with :send{method,path,headers,body,query},
--                             :get/:post/:put/:patch/:delete(path, body?, headers?)
--   response: { status, headers (lowercase keys), body, json = decoded or nil }
--   h.upstream_url(path)  URL of the echo upstream
--   h.echo(res)           the echoed request: { method, path, headers, worker_pid }
--   h.worker_pids()       sorted pids of the current nginx workers
--   h.error_log()         contents of the error log
--   h.wait_until(fn, timeout)
--   h.is_kong             true when running against real Kong
--   h.res_status(code, res) -> body (errors with the body when the status differs)
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
    local okp, out = run("mktemp -d /tmp/kong-rs-spec.XXXXXX")
    assert(okp, out)
    G.prefix = out:gsub("%s+$", "")
  end
  G.opts = opts
  local env = {
    "KONG_PLUGINS=" .. shell_quote(table.concat(opts.plugins or { "bundled" }, ",")),
    "KONG_RS_PROXY_PORT=" .. random_port(),
    "KONG_RS_ADMIN_PORT=" .. random_port(),
    "KONG_RS_UPSTREAM_PORT=" .. random_port(),
  }
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

function G.worker_pids()
  local f = assert(io.open(G.prefix .. "/logs/nginx.pid"))
  local master = f:read("*l")
  f:close()
  local _, out = run("ps -o pid= --ppid " .. tonumber(master))
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

---------------------------------------------------------------------------
-- real Kong backend (Pongo): not exercised by our CI
---------------------------------------------------------------------------

local K = {}

local function kong_client(make)
  return client_for(function(req)
    local c = make()
    local res = assert(c:send(req))
    local body = res:read_body()
    c:close()
    local headers = {}
    for k, v in pairs(res.headers) do
      headers[k:lower()] = type(v) == "table" and table.concat(v, ", ") or v
    end
    return { status = res.status, headers = headers, body = body, json = cjson.decode(body) }
  end)
end

function K.start(opts)
  opts = opts or {}
  local strategy = os.getenv("KONG_DATABASE") or "postgres"
  local names = opts.plugins or { "bundled" }
  kong_helpers.get_db_utils(strategy, nil, names)
  K.opts = opts
  assert(kong_helpers.start_kong({
    database = strategy,
    plugins = "bundled," .. table.concat(names, ","),
    nginx_conf = "spec/fixtures/custom_nginx.template",
    nginx_worker_processes = opts.workers or 2,
    declarative_config = opts.declarative,
    db_update_frequency = 0.1,
  }))
  return true
end

function K.stop() kong_helpers.stop_kong() end
function K.restart() kong_helpers.stop_kong(nil, true); return K.start(K.opts) end
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

function K.worker_pids()
  if kong_helpers.get_kong_workers then
    local pids = kong_helpers.get_kong_workers()
    table.sort(pids)
    return pids
  end
  return {}
end

function K.error_log()
  local f = io.open(kong_helpers.test_conf.nginx_err_logs)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local backend = h.is_kong and K or G
for k, v in pairs(backend) do
  if type(v) == "function" then h[k] = v end
end
h.root = ROOT

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
