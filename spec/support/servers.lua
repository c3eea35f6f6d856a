-- Real servers for the I/O specs, started and stopped by the specs
-- themselves, on 127.0.0.1 and free ports: an HTTP server with slow,
-- hanging and resetting paths (test_servers.py), redis-server, and
-- PostgreSQL.
local h = require "spec.support.helpers"

local _M = {}

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  p:close()
  return out
end

local function tmpdir()
  return (sh("mktemp -d \"${TMPDIR:-/tmp}/kong-rs-servers.XXXXXX\""):gsub("%s+$", ""))
end

local function free_port()
  local socket = require "socket"
  local server = assert(socket.bind("127.0.0.1", 0))
  local _, port = server:getsockname()
  server:close()
  return tonumber(port)
end

-- Starts `cmd` in the background; returns its pid.
local function spawn(cmd, log)
  -- cmd and log hold no single quotes (paths from mktemp, fixed words)
  local pid = sh("setsid sh -c '" .. cmd .. " >" .. log .. " 2>&1 & echo $!'")
  return assert(tonumber(pid:match("%d+")), "could not start: " .. cmd)
end

local function stopper(pid, dir)
  return function()
    os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.1; kill -9 " .. pid .. " 2>/dev/null")
    os.execute("rm -rf '" .. dir .. "'")
  end
end

-- The port a test_servers.py server wrote to `portfile` once listening.
local function wait_for_port(portfile)
  local port
  h.wait_until(function()
    local f = io.open(portfile)
    if f then
      port = tonumber(f:read("*a"))
      f:close()
    end
    return port ~= nil
  end, 10)
  return port
end

--- The HTTP test server: { port = n, url = "http://127.0.0.1:n", stop = fn }.
function _M.http()
  local dir = tmpdir()
  local portfile = dir .. "/port"
  local pid = spawn("exec python3 " .. h.root .. "/spec/support/test_servers.py http " .. portfile,
                    dir .. "/log")
  local port = wait_for_port(portfile)
  return { port = port, url = "http://127.0.0.1:" .. port, stop = stopper(pid, dir) }
end

--- The same server over TLS, with a self-signed certificate for
-- 127.0.0.1 made here: { port, url = "https://127.0.0.1:n", cert, stop }.
function _M.https()
  local dir = tmpdir()
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  sh("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 " ..
     "-addext subjectAltName=IP:127.0.0.1 -keyout " .. key .. " -out " .. cert)
  local portfile = dir .. "/port"
  local pid = spawn("exec python3 " .. h.root .. "/spec/support/test_servers.py https " .. portfile ..
                    " " .. cert .. " " .. key, dir .. "/log")
  local port = wait_for_port(portfile)
  return { port = port, url = "https://127.0.0.1:" .. port, cert = cert, stop = stopper(pid, dir) }
end

--- A redis-server: { port = n, stop = fn, start = fn (again, same port) }.
function _M.redis()
  local dir = tmpdir()
  local port = free_port()
  local server = { port = port }
  function server.start()
    server.pid = spawn("exec redis-server --port " .. port .. " --bind 127.0.0.1 --save \"\" " ..
                       "--appendonly no --dir " .. dir, dir .. "/log")
    h.wait_until(function()
      return sh("redis-cli -p " .. port .. " ping"):match("PONG") ~= nil
    end, 10)
  end
  function server.kill()
    os.execute("kill -9 " .. server.pid .. " 2>/dev/null")
    h.wait_until(function()
      return sh("redis-cli -p " .. port .. " ping"):match("PONG") == nil
    end, 10)
  end
  function server.stop()
    stopper(server.pid, dir)()
  end
  function server.cli(args)
    return (sh("redis-cli -p " .. port .. " " .. args):gsub("%s+$", ""))
  end
  server.start()
  return server
end

-- Debian's PostgreSQL server binaries (the `postgresql` package), newest first.
local function pg_bin()
  local found = sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1"):gsub("%s+$", "")
  if found == "" or not io.open(found .. "/initdb") then
    error("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: " ..
          "scripts/setup installs them (the postgresql package)", 2)
  end
  return found
end

--- A PostgreSQL server of its own, in a fresh directory, on a free
-- 127.0.0.1 port; TCP logins need a password (SCRAM-SHA-256):
-- { port = n, user = "kong", password = p, database = "postgres",
--   stop = fn, kill = fn (fast shutdown, the port refuses after) }.
-- As root it runs as the `postgres` system user (it refuses to run as root).
function _M.postgres()
  local bin = pg_bin()
  local dir = tmpdir()
  local as_user = ""
  if sh("id -u"):match("^0%s") then
    as_user = "setpriv --reuid=postgres --regid=postgres --init-groups "
    sh("chown postgres: '" .. dir .. "'")
  end
  local server = { port = free_port(), user = "kong", password = "s3cret-pg",
                   database = "postgres" }
  local pw = assert(io.open(dir .. "/pwfile", "w"))
  pw:write(server.password, "\n")
  pw:close()
  if as_user ~= "" then sh("chown postgres: '" .. dir .. "/pwfile'") end
  local out = sh("cd '" .. dir .. "' && " .. as_user .. bin .. "/initdb -D " .. dir .. "/data -U kong " ..
                 "--pwfile=" .. dir .. "/pwfile -E UTF8 --auth-host=scram-sha-256 " ..
                 "--auth-local=trust --no-sync; echo \"exit=$?\"")
  if not out:match("exit=0%s*$") then
    sh("rm -rf '" .. dir .. "'")
    error("initdb failed: " .. out)
  end
  local log = dir .. "/log"
  local function ready()
    local f = io.open(log)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    return text:find("ready to accept connections", 1, true) ~= nil
  end
  local function stop_now()
    if server.pid then
      os.execute("kill -INT " .. server.pid .. " 2>/dev/null")
      local gone = pcall(h.wait_until, function()
        return not sh("kill -0 " .. server.pid .. " 2>/dev/null && echo alive"):match("alive")
      end, 10)
      if not gone then os.execute("kill -9 " .. server.pid .. " 2>/dev/null") end
      server.pid = nil
    end
  end
  function server.start()
    os.remove(log)
    server.pid = spawn("exec " .. as_user .. bin .. "/postgres -D " .. dir .. "/data -p " .. server.port ..
                       " -k " .. dir .. " -c listen_addresses=127.0.0.1 -c fsync=off", log)
    h.wait_until(ready, 30)
  end
  server.kill = stop_now
  function server.stop()
    stop_now()
    os.execute("rm -rf '" .. dir .. "'")
  end
  server.start()
  return server
end

--- `n` concurrent GETs of `url`: elapsed seconds, 200s, and "status:count,...".
function _M.burst(url, n)
  local out = sh("python3 " .. h.root .. "/spec/support/test_servers.py burst '" .. url .. "' " .. n)
  local elapsed, ok, statuses = out:match("elapsed=([%d.]+) ok=(%d+) statuses=(%S*)")
  assert(elapsed, out)
  return tonumber(elapsed), tonumber(ok), statuses
end

--- Starts `n` concurrent GETs of `url` in the background; returns a
-- function that waits (at most 30 s) for them and returns what `burst` does.
function _M.burst_in_background(url, n)
  local dir = tmpdir()
  local out = dir .. "/out"
  spawn("exec python3 " .. h.root .. "/spec/support/test_servers.py burst " .. url .. " " .. n, out)
  return function()
    local text
    h.wait_until(function()
      local f = io.open(out)
      if f then
        text = f:read("*a")
        f:close()
      end
      return text and text:find("elapsed=", 1, true) ~= nil
    end, 30)
    os.execute("rm -rf '" .. dir .. "'")
    local elapsed, ok, statuses = text:match("elapsed=([%d.]+) ok=(%d+) statuses=(%S*)")
    return tonumber(elapsed), tonumber(ok), statuses
  end
end

--- `n` GETs of `url`, `c` at a time, each abandoned by the client right
-- after sending; returns how many were sent.
function _M.abort(url, n, c)
  local out = sh("python3 " .. h.root .. "/spec/support/test_servers.py abort '" .. url .. "' " .. n .. " " .. c)
  return tonumber(out:match("sent=(%d+)")) or error(out)
end

return _M
