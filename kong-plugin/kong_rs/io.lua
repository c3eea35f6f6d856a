-- kong_rs.io: performs the I/O of async Rust phases with nginx's cosockets.
--
-- An async phase is a Rust future. When it awaits I/O it returns the
-- operation it needs (connect, send, receive, TLS handshake, sleep, ...);
-- `drive` performs it here, in the request's own coroutine (cosocket calls
-- yield to nginx, the worker serves other requests meanwhile), and resumes
-- the future with the result, until the phase ends. Rust never yields
-- across C: it returns, and Lua waits.
--
-- The operations are defined once, in Rust (`OpKind` in src/io/task.rs):
-- the native module hands over their codes and names as `io_ops`, and
-- `new` matches them with the performers below, refusing any mismatch.

local ngx = ngx
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local error = error
local tostring = tostring
local setmetatable = setmetatable
local type = type

local _M = {}


-- cjson's encoder, loaded on first use (load_consumer's answer).
local encode_json
encode_json = function(value)
  local cjson = require("cjson.safe")
  encode_json = cjson.encode
  return cjson.encode(value)
end

-- connect's options table per pool name, built once (weak: names come and go).
local pool_options = setmetatable({}, { __mode = "v" })

-- Each performer: (sockets, socket id, a, b, c, d) -> value | nil, err.
-- `sockets` holds this task's cosockets by the ids Rust gave them.
local PERFORMERS = {}

-- a: host, b: port, c: timeout (ms), d: pool name or nil.
-- Replies how many times the connection was reused from the pool.
function PERFORMERS.connect(sockets, id, host, port, timeout, pool)
  local sock, err = ngx.socket.tcp()
  if not sock then
    return nil, err
  end
  sock:settimeout(timeout)
  local ok
  if pool then
    local options = pool_options[pool]
    if not options then
      options = { pool = pool }
      pool_options[pool] = options
    end
    ok, err = sock:connect(host, port, options)
  else
    ok, err = sock:connect(host, port)
  end
  if not ok then
    return nil, err
  end
  sockets[id] = sock
  return sock:getreusedtimes()
end

-- The cosocket `id` of this task with `timeout` (ms) set for its next
-- call, or nil when it is gone (closed, released).
local function socket(sockets, id, timeout)
  local sock = sockets[id]
  if sock then
    sock:settimeout(timeout)
  end
  return sock
end

-- a: server name (SNI) or nil, b: verify the certificate, c: timeout (ms).
function PERFORMERS.tls(sockets, id, server_name, verify, timeout)
  local sock = socket(sockets, id, timeout)
  if not sock then
    return nil, "closed"
  end
  local session, err = sock:sslhandshake(nil, server_name, verify)
  if not session then
    return nil, err
  end
  return true
end

-- a: bytes, c: timeout (ms). Replies the number of bytes sent.
function PERFORMERS.send(sockets, id, data, _, timeout)
  local sock = socket(sockets, id, timeout)
  if not sock then
    return nil, "closed"
  end
  return sock:send(data)
end

-- a: most bytes wanted, c: timeout (ms). Replies the bytes received;
-- "closed" at the end of the stream.
function PERFORMERS.receive(sockets, id, max, _, timeout)
  local sock = socket(sockets, id, timeout)
  if not sock then
    return nil, "closed"
  end
  return sock:receiveany(max)
end

-- a: bytes, b: most bytes wanted, c: timeout (ms): a request and the
-- start of its answer in one round trip between Rust and Lua.
function PERFORMERS.send_receive(sockets, id, data, max, timeout)
  local sock = socket(sockets, id, timeout)
  if not sock then
    return nil, "closed"
  end
  local sent, err = sock:send(data)
  if not sent then
    return nil, err
  end
  return sock:receiveany(max)
end

-- a: idle timeout (ms), b: pool size.
function PERFORMERS.keepalive(sockets, id, idle, pool_size)
  local sock = sockets[id]
  sockets[id] = nil
  if not sock then
    return true
  end
  local ok, err = sock:setkeepalive(idle, pool_size)
  if not ok then
    sock:close()
    return nil, err
  end
  return true
end

function PERFORMERS.close(sockets, id)
  local sock = sockets[id]
  sockets[id] = nil
  if sock then
    sock:close()
  end
  return true
end

-- a: key, b: ttl, c: neg_ttl (seconds), d: the loader, a job of the same
-- native module run by `ctx.run_job` only on a miss. Replies the bytes, or
-- false for a (cached) miss.
function PERFORMERS.cache_get(_, _, key, ttl, neg_ttl, loader, ctx)
  local cache = kong and kong.cache
  if not cache then
    return nil, "kong.cache is not available"
  end
  local value, err = cache:get(key, { ttl = ttl, neg_ttl = neg_ttl }, ctx.run_job, loader)
  if err then
    return nil, err
  end
  if value == nil then
    return false
  end
  if type(value) ~= "string" then
    return nil, "the cached value is a " .. type(value) .. ", not bytes"
  end
  return value
end

-- a: id (or username), b: search by username too. Replies the consumer
-- as JSON, or false when there is none.
function PERFORMERS.load_consumer(_, _, id, by_username)
  local consumer, err = kong.client.load_consumer(id, by_username)
  if err then
    return nil, tostring(err)
  end
  if consumer == nil then
    return false
  end
  local json, jerr = encode_json(consumer)
  if not json then
    return nil, "cannot encode the consumer: " .. tostring(jerr)
  end
  return json
end

-- a: seconds.
function PERFORMERS.sleep(_, _, seconds)
  ngx.sleep(seconds)
  return true
end


-- What Rust calls to give a socket back while it polls (handed over with
-- the task's socket table): setkeepalive (closing the socket when that
-- fails) when `idle` is set, else close; the entry removed. Neither yields.
local function release(sockets, id, idle, pool_size)
  local sock = sockets[id]
  if not sock then
    return
  end
  sockets[id] = nil
  if idle and sock:setkeepalive(idle, pool_size) then
    return
  end
  sock:close()
end


-- Drivers already built, by `io_ops` table (one per native module).
local drivers = setmetatable({}, { __mode = "k" })


--- Returns `drive(task, op, id, a, b, c, d)` for a native module's
-- `io_ops` and `resume`: performs operations and resumes the task until
-- the phase ends; returns `true, <phase results>` or `false, message`.
function _M.new(io_ops, resume)
  local driver = drivers[io_ops]
  if driver then
    return driver
  end
  local by_code = {}
  local known = {}
  for _, entry in ipairs(io_ops) do
    local code, name = entry[1], entry[2]
    local performer = PERFORMERS[name]
    if not performer then
      error("kong_rs.io has no performer for operation '" .. tostring(name) ..
            "' of the native module: install the kong_rs glue of the same version", 2)
    end
    by_code[code] = performer
    known[name] = true
  end
  for name in pairs(PERFORMERS) do
    if not known[name] then
      error("the native module does not know operation '" .. name ..
            "' of kong_rs.io: install the kong_rs glue of the same version", 2)
    end
  end

  -- What performers may need of this module: running one of its jobs to
  -- its end, here, returning its results (a cache loader's: value, or
  -- nil, err; its failure is raised).
  local ctx = {}

  driver = function(task, op, id, a, b, c, d)
    local sockets = {}
    -- handed to Rust with the first reply: it releases sockets directly
    local handover = sockets
    local ok, actions, status, x1, x2, x3, x4, x5, x6, x7
    repeat
      local performer = by_code[op]
      local value, err
      if performer then
        -- A Lua error in a performer (an API missing in this context)
        -- becomes the operation's error, which Rust turns into an Err.
        local pok
        pok, value, err = pcall(performer, sockets, id, a, b, c, d, ctx)
        if not pok then
          value, err = nil, tostring(value)
        end
      else
        value, err = nil, "unknown operation " .. tostring(op)
      end
      ok, actions, status, x1, x2, x3, x4, x5, x6, x7 =
        pcall(resume, task, value, err, handover, handover and release)
      handover = nil
      if status == true then
        -- x1 is the task again; then the next operation.
        op, id, a, b, c, d = x2, x3, x4, x5, x6, x7
      end
    until not ok or status ~= true
    -- Sockets the future did not release (it failed or forgot them).
    for _, sock in pairs(sockets) do
      sock:close()
    end
    if not ok then
      return false, actions
    end
    return true, actions, status, x1, x2
  end
  function ctx.run_job(job)
    local ok, r1, r2, r3, x2, x3, x4, x5, x6, x7 = pcall(resume, job)
    if ok and r2 == true then
      ok, r1, r2, r3 = driver(r3, x2, x3, x4, x5, x6, x7)
    end
    if not ok then
      error(r1, 0)
    end
    if r1 == nil and r2 == false then
      error(r3, 0) -- the job failed (a panic, ...)
    end
    return r1, r2
  end

  drivers[io_ops] = driver
  return driver
end


--- Returns the function a native module runs its timer jobs with
-- (`ngx.timer.at(delay, runner, job)`, e.g. a queue's sender): starts the
-- job with `resume`, performs its operations with `drive`, logs a failure.
function _M.timer_runner(resume, drive)
  return function(_premature, job)
    -- A premature run (the worker is exiting) still sends, as Kong's queues do.
    local ok, actions, status, x1, x2, x3, x4, x5, x6, x7 = pcall(resume, job)
    if ok and status == true then
      ok, actions, status, x1 = drive(x1, x2, x3, x4, x5, x6, x7)
    end
    if not ok then
      ngx.log(ngx.ERR, "kong-rs timer job failed: ", tostring(actions))
    elseif status == false then
      ngx.log(ngx.ERR, "kong-rs timer job failed: ", tostring(x1))
    end
  end
end


return _M
