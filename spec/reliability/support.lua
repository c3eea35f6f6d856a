-- Shared bits of the reliability specs: environment for the gateway launcher,
-- the echo upstream's hit counter, raw sockets for hostile requests.
local h = require "spec.support.helpers"
local ffi = require "ffi"

pcall(ffi.cdef, [[
  int setenv(const char *name, const char *value, int overwrite);
  int unsetenv(const char *name);
]])

local S = {}

local function root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/reliability/[^/]+$") or "."
  local p = io.popen("cd '" .. dir .. "' && pwd")
  local abs = p:read("*l")
  p:close()
  return abs
end
S.ROOT = root()

function S.setenv(name, value)
  if value == nil then
    ffi.C.unsetenv(name)
  else
    ffi.C.setenv(name, value, 1)
  end
end

--- Starts the gateway with the benchmark plugins (rs-bench-json) on the
-- path. S.stats needs opts.debug (the /kong-rs/... debug endpoints).
function S.start(opts)
  S.setenv("KONG_RS_LUA_PATH", S.ROOT .. "/benches/plugins/?.lua")
  local ok, err = pcall(h.start, opts)
  S.setenv("KONG_RS_LUA_PATH", nil)
  assert(ok, err)
end

--- Requests the echo upstream has answered so far (all workers), from the
-- upstream's own counter (no debug endpoint needed). `admin` is unused (it
-- was the Admin API client when this went through /kong-rs/upstream).
function S.upstream_hits(admin) -- luacheck: ignore admin
  local status, _, body = S.raw(S.port("UPSTREAM_PORT"),
    "GET /__kong_rs_echo/hits HTTP/1.0\r\nHost: localhost\r\n\r\n")
  assert(status == 200, body)
  return require("cjson").decode(body).hits
end

function S.stats(admin, name, gc)
  local res = admin:get("/kong-rs/plugins/" .. name .. "/stats" .. (gc and "?gc=true" or ""))
  assert(res.status == 200, res.body)
  return res.json
end

--- Sends `raw` bytes to the proxy as is; returns status, head, body.
function S.raw(port, raw)
  local socket = require "socket"
  local sock = socket.tcp()
  sock:settimeout(10)
  assert(sock:connect("127.0.0.1", port))
  local sent, err = 0, nil
  local i = 1
  while i <= #raw do
    local last
    last, err = sock:send(raw, i, math.min(#raw, i + 65535))
    if not last then break end
    i = last + 1
    sent = last
  end
  local data, rerr, partial = sock:receive("*a")
  sock:close()
  data = data or partial or ""
  local head, body = data:match("^(.-)\r\n\r\n(.*)$")
  local status = tonumber((head or data):match("^HTTP/%d%.%d (%d%d%d)"))
  return status, head or data, body or "", sent, err or rerr
end

--- A port of the running gateway (PROXY_PORT, ADMIN_PORT, UPSTREAM_PORT).
function S.port(name)
  for line in io.lines(h.prefix_path() .. "/ports.env") do
    local k, v = line:match("^([%w_]+)=(%d+)")
    if k == name then return tonumber(v) end
  end
end

function S.read_lines(path)
  local f = io.open(path)
  if not f then return {} end
  local out = {}
  for line in f:lines() do out[#out + 1] = line end
  f:close()
  return out
end

--- Runs a shell command; true when it exited 0 (LuaJIT's os.execute gives
-- the status number, Lua 5.2's gives true).
function S.sh(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

--- mkdir -p `path` with the owner and mode of h.files_dir(), so that the
-- nginx workers (nobody when the gateway runs as root) can create files in it.
function S.worker_mkdir(path)
  local ref = h.files_dir()
  return S.sh(("mkdir -p '%s' && chown --reference='%s' '%s' && chmod --reference='%s' '%s'")
    :format(path, ref, path, ref, path))
end

--- Lowers RLIMIT_FSIZE of process `pid` to `bytes`. Run with the process's
-- own uid/gid: prlimit(2) on another user's process needs CAP_SYS_RESOURCE,
-- which a container's root may lack (the workers run as nobody).
function S.limit_file_size(pid, bytes)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return false end
  local status = f:read("*a")
  f:close()
  local uid = status:match("\nUid:%s*(%d+)")
  local gid = status:match("\nGid:%s*(%d+)")
  local cmd = ("prlimit --pid %d --fsize=%d"):format(pid, bytes)
  if uid ~= "0" then
    cmd = ("setpriv --reuid=%s --regid=%s --clear-groups %s"):format(uid, gid, cmd)
  end
  return S.sh(cmd .. " >/dev/null 2>&1")
end

function S.log_has_death(log)
  return log:find("exited on signal", 1, true) or log:find("[alert]", 1, true)
end

-- Starts reliability/retrying_client.py in the background (a keepalive
-- client that resends a request once when a reused connection was closed
-- before any answer, as HTTP clients do); returns a function that waits for
-- it and returns its counts (a table) and its raw output.
function S.retrying_client_background(url, seconds, connections, expect_header, expect_value)
  local out = os.tmpname()
  local cmd = ("python3 '%s/reliability/retrying_client.py' --url '%s' --seconds %d --connections %d")
    :format(S.ROOT, url, seconds, connections)
  if expect_header then
    cmd = cmd .. (" --expect-header '%s' --expect-value '%s'"):format(expect_header, expect_value)
  end
  os.execute(cmd .. " > " .. out .. " 2>&1 & echo $! > " .. out .. ".pid")
  return function()
    local pid = io.open(out .. ".pid"):read("*l")
    h.wait_until(function()
      local r = os.execute("kill -0 " .. pid .. " 2>/dev/null")
      return not (r == 0 or r == true)
    end, seconds + 40, 0.2)
    local f = io.open(out)
    local text = f:read("*a")
    f:close()
    os.remove(out)
    os.remove(out .. ".pid")
    local ok, counts = pcall(require("cjson.safe").decode, text)
    return ok and type(counts) == "table" and counts or {}, text
  end
end

S.master_pid = h.master_pid

return S
