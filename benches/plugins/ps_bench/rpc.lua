-- The Kong side of a MODEL of the plugin-server mechanism -- not Kong's
-- plugin server. The ps-bench-* plugins use it to run the benchmark
-- workloads in benches/plugin-server (kong-rs-plugin-server) over a unix
-- socket, with the message flow of Kong's ProtoBuf:1 plugin servers
-- (kong/runloop/plugin_servers/rpc/pb_rpc.lua and plugin.lua):
--
--   * a connection per call from the cosocket keepalive pool
--     (ngx.socket.tcp + connect "unix:PATH", setkeepalive afterwards);
--   * one call frame per event, carrying the instance id and event name;
--   * while the event runs, every PDK call is the server sending a method
--     frame and an argument frame, and Kong answering with a reply frame;
--   * an empty frame ends the event, then the return frame;
--   * instances started once per plugin configuration (start_instance),
--     re-started when the configuration changes or the server forgot them;
--   * the log event runs in a timer (cosockets are not available in the log
--     phase), against request data saved beforehand; header_filter cannot
--     reach a plugin server at all (no cosockets there), as in Kong.
--
-- Framing: u32 little-endian length, then the payload; payloads are JSON
-- (cjson) except the method name. The protocol is documented in
-- benches/plugin-server/src/main.rs.
local cjson = require "cjson.safe"

local ngx = ngx
local kong = kong
local tcp = ngx.socket.tcp
local timer_at = ngx.timer.at
local byte = string.byte
local char = string.char
local find = string.find
local floor = math.floor
local pcall = pcall
local type = type
local encode = cjson.encode
local decode = cjson.decode
local null = cjson.null

local TIMEOUT_MS = 10000
local KEEPALIVE_MS = 60000
local POOL_SIZE = 64
local MAX_FRAME = 16 * 1024 * 1024

local _M = {}

local seq = 0

local function u32le(n)
  return char(n % 256, floor(n / 256) % 256, floor(n / 65536) % 256, floor(n / 16777216) % 256)
end

local function read_frame(sock)
  local hdr, err = sock:receive(4)
  if not hdr then
    return nil, err
  end
  local b1, b2, b3, b4 = byte(hdr, 1, 4)
  local n = b1 + b2 * 256 + b3 * 65536 + b4 * 16777216
  if n == 0 then
    return ""
  end
  if n > MAX_FRAME then
    return nil, "frame too large"
  end
  return sock:receive(n)
end

local function write_frame(sock, payload)
  return sock:send({ u32le(#payload), payload })
end

local function value(v)
  if v == nil then
    return null
  end
  return v
end

-- The PDK as the server sees it (Kong: exposed_api + kong.* looked up by
-- name). `st` is the event's state: saved request data in the log timer,
-- the delayed exit in access.
local PDK = {
  ["kong.request.get_header"] = function(st, args)
    local saved = st.saved
    if saved then
      local v = saved.request_headers[args[1]]
      if type(v) == "table" then
        v = v[1]
      end
      return v
    end
    return kong.request.get_header(args[1])
  end,
  ["kong.request.get_raw_body"] = function(_, _)
    return kong.request.get_raw_body()
  end,
  ["kong.service.request.set_header"] = function(_, args)
    kong.service.request.set_header(args[1], args[2])
  end,
  ["kong.response.set_header"] = function(_, args)
    kong.response.set_header(args[1], args[2])
  end,
  -- Kong's kong.response.exit in access only records the response
  -- (delay_response) and the runloop sends it after the plugin; the same here,
  -- performed once the event is over and the connection is back in the pool.
  ["kong.response.exit"] = function(st, args)
    st.exit = args
  end,
  ["kong.log.err"] = function(_, args)
    kong.log.err(args[1])
  end,
}

-- One call: the call frame, then (events) PDK calls until the empty frame,
-- then the return frame. Returns the decoded return message or nil, err.
local function call(socket_path, msg, st)
  local sock = tcp()
  sock:settimeout(TIMEOUT_MS)
  local ok, err = sock:connect("unix:" .. socket_path)
  if not ok then
    return nil, "connect " .. socket_path .. ": " .. tostring(err)
  end
  seq = seq + 1
  local my_seq = seq
  msg.seq = my_seq
  ok, err = write_frame(sock, encode(msg))
  if not ok then
    sock:close()
    return nil, "send: " .. tostring(err)
  end

  if st then
    while true do
      local method
      method, err = read_frame(sock)
      if not method then
        sock:close()
        return nil, "receive: " .. tostring(err)
      end
      if method == "" then
        break
      end
      local raw_args
      raw_args, err = read_frame(sock)
      if not raw_args then
        sock:close()
        return nil, "receive: " .. tostring(err)
      end
      local fn = PDK[method]
      if not fn then
        sock:close()
        return nil, "method " .. method .. " not found"
      end
      local args = decode(raw_args)
      if type(args) ~= "table" then
        sock:close()
        return nil, "bad arguments for " .. method
      end
      local pok, result = pcall(fn, st, args)
      if not pok then
        sock:close()
        return nil, method .. ": " .. tostring(result)
      end
      ok, err = write_frame(sock, encode(value(result)))
      if not ok then
        sock:close()
        return nil, "send: " .. tostring(err)
      end
    end
  end

  local raw
  raw, err = read_frame(sock)
  if not raw then
    sock:close()
    return nil, "receive: " .. tostring(err)
  end
  sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
  local ret = decode(raw)
  if type(ret) ~= "table" or ret.seq ~= my_seq then
    return nil, "bad return frame"
  end
  return ret
end

-- Instances per plugin entity, re-started when its configuration changes
-- (Kong: get_instance_id keyed by kong.plugin.get_id(), checked against
-- conf.__seq__).
local instances = {}

local function config_json(conf)
  local copy = {}
  for k, v in pairs(conf) do
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" then
      copy[k] = v
    end
  end
  return encode(copy) or "{}"
end

local function instance_id(name, conf)
  local key = conf.__plugin_id or name
  local inst = instances[key]
  if inst and inst.seq == conf.__seq__ then
    return inst.id, key
  end
  local ret, err = call(conf.socket, { cmd = "start_instance", name = name, config = config_json(conf) })
  if not ret then
    return nil, err
  end
  if ret.error then
    return nil, ret.error
  end
  instances[key] = { id = ret.instance_id, seq = conf.__seq__ }
  if inst then
    call(conf.socket, { cmd = "close_instance", instance_id = inst.id })
  end
  return ret.instance_id, key
end

local function event(name, conf, phase, st)
  for _ = 1, 2 do
    local id, key = instance_id(name, conf)
    if not id then
      return nil, key
    end
    local ret, err = call(conf.socket, { cmd = "handle_event", instance_id = id, event = phase }, st)
    if not ret then
      return nil, err
    end
    if not ret.error then
      return true
    end
    if not find(ret.error, "no plugin instance", 1, true) then
      return nil, ret.error
    end
    -- the server restarted and forgot the instance: start it again, once
    instances[key] = nil
  end
  return nil, "no plugin instance"
end

--- Runs `phase` (access) of plugin `name` in the plugin server, then performs
-- the exit it asked for, if any. Fails closed: 500 when the server cannot be
-- reached (Kong: kong.response.error(500)).
function _M.handle_event(name, conf, phase)
  local st = {}
  local ok, err = event(name, conf, phase, st)
  if not ok then
    kong.log.err("plugin server (model): ", err)
    return kong.response.exit(500, { message = "An unexpected error occurred" })
  end
  local exit = st.exit
  if exit then
    return kong.response.exit(exit[1], exit[2] ~= null and exit[2] or nil,
                              type(exit[3]) == "table" and exit[3] or nil)
  end
end

local function log_timer(premature, name, conf, saved)
  if premature then
    return
  end
  local ok, err = event(name, conf, "log", { saved = saved })
  if not ok then
    ngx.log(ngx.ERR, "[", name, "] plugin server (model), log event: ", err)
  end
end

--- The log event, as Kong runs it: request data saved now, the event sent
-- from a timer.
function _M.handle_log_event(name, conf)
  local saved = {
    request_headers = ngx.req.get_headers(),
    response_headers = ngx.resp.get_headers(),
    response_status = ngx.status,
    req_start_time = ngx.req.start_time(),
  }
  local ok, err = timer_at(0, log_timer, name, conf, saved)
  if not ok then
    kong.log.err("plugin server (model): cannot create the log timer: ", err)
  end
end

return _M
