-- Real servers for the I/O specs, started and stopped by the specs
-- themselves, on 127.0.0.1 and free ports: an HTTP server with slow,
-- hanging and resetting paths (test_servers.py), and redis-server.
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

--- The HTTP test server: { port = n, url = "http://127.0.0.1:n", stop = fn }.
function _M.http()
  local dir = tmpdir()
  local portfile = dir .. "/port"
  local pid = spawn("exec python3 " .. h.root .. "/spec/support/test_servers.py http " .. portfile,
                    dir .. "/log")
  local port
  h.wait_until(function()
    local f = io.open(portfile)
    if f then
      port = tonumber(f:read("*a"))
      f:close()
    end
    return port ~= nil
  end, 10)
  return { port = port, url = "http://127.0.0.1:" .. port, stop = stopper(pid, dir) }
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

--- `n` concurrent GETs of `url`: elapsed seconds, 200s, and "status:count,...".
function _M.burst(url, n)
  local out = sh("python3 " .. h.root .. "/spec/support/test_servers.py burst '" .. url .. "' " .. n)
  local elapsed, ok, statuses = out:match("elapsed=([%d.]+) ok=(%d+) statuses=(%S*)")
  assert(elapsed, out)
  return tonumber(elapsed), tonumber(ok), statuses
end

--- `n` GETs of `url`, `c` at a time, each abandoned by the client right
-- after sending; returns how many were sent.
function _M.abort(url, n, c)
  local out = sh("python3 " .. h.root .. "/spec/support/test_servers.py abort '" .. url .. "' " .. n .. " " .. c)
  return tonumber(out:match("sent=(%d+)")) or error(out)
end

return _M
