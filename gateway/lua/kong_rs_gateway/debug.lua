-- Debug endpoints of the Admin API (not in Kong): per-worker counters of the
-- native plugin factories, so tests can prove that old plugin instances are
-- freed and that worker memory stays flat.
--
--   GET /kong-rs/plugins/{name}/stats[?gc=true]
--     -> { name, built, live, tasks, workers = [ { id, pid, built, live, tasks, lua_kb, rss_kb } ] }
--
-- `built`/`live` come from the factory's `stats()` (constructor calls, live
-- instances: a drop counter kept by the Rust bridge). Each worker has its own
-- Lua state, so the request is relayed: the Admin API worker bumps a request
-- sequence in the shared dict; a light timer in every worker (a shm read per
-- 50 ms, nothing more unless asked) publishes its figures, after a full
-- garbage collection when `gc=true`; the Admin API waits for all workers.
--
-- Off unless the gateway was started with --debug (KONG_RS_DEBUG=1): then
-- these endpoints answer 404 like any path Kong does not know, and no timer
-- runs.
local json = require "kong_rs_gateway.json"

local ngx = ngx
local shared = ngx.shared
local pairs = pairs
local type = type
local pcall = pcall
local tonumber = tonumber
local collectgarbage = collectgarbage

local DICT = "kong_rs"
local REQ_KEY = "debug:req"        -- request sequence (incr)
local GC_KEY = "debug:gc"          -- highest sequence that asked for a GC
local STAT_KEY = "debug:stats:"    -- .. worker id -> JSON
local POLL = 0.05
local WAIT = 5

local _M = { enabled = false }

-- The native modules the glue loaded (kong_rs.loader keeps the list).
local function native_modules()
  return require("kong_rs.loader").modules()
end

-- The factory of native plugin `name`, from the native module exporting it.
local function factory(name)
  for _, mod in pairs(native_modules()) do
    local f = mod.plugins[name]
    if type(f) == "table" and type(f.stats) == "function" then
      return f
    end
  end
end

local function rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function native_stats()
  local out = {}
  local seen = {}
  for _, mod in pairs(native_modules()) do
    local list = mod.plugins
    if not seen[list] then
      seen[list] = true
      for name, f in pairs(list) do
        if type(f) == "table" and type(f.stats) == "function" then
          local ok, s = pcall(f.stats)
          if ok and type(s) == "table" then
            out[name] = { built = s.built, live = s.live, tasks = s.tasks or 0 }
          end
        end
      end
    end
  end
  return out
end

local last_seen = 0

local function publish(seq, gc)
  if gc then
    collectgarbage("collect")
    collectgarbage("collect")
  end
  local body = json.encode({
    id = ngx.worker.id(),
    pid = ngx.worker.pid(),
    seq = seq,
    lua_kb = collectgarbage("count"),
    rss_kb = rss_kb(),
    plugins = native_stats(),
  })
  shared[DICT]:set(STAT_KEY .. ngx.worker.id(), body)
end

local function poll(premature)
  if premature then return end
  local dict = shared[DICT]
  local seq = dict:get(REQ_KEY) or 0
  if seq ~= last_seen then
    local gc_seq = dict:get(GC_KEY) or 0
    local ok, err = pcall(publish, seq, gc_seq > last_seen)
    if not ok then
      ngx.log(ngx.ERR, "[kong-rs debug] cannot publish stats: ", err)
    end
    last_seen = seq
  end
end

function _M.init_worker()
  local dict = shared[DICT]
  if not dict then return end
  -- a request made before this worker started must not be answered late
  last_seen = dict:get(REQ_KEY) or 0
  local ok, err = ngx.timer.every(POLL, poll)
  if not ok then
    ngx.log(ngx.ERR, "[kong-rs debug] cannot start the stats timer: ", err)
  end
end

--- Collects every worker's figures. Returns a list or nil, err.
function _M.collect(gc)
  local dict = shared[DICT]
  local seq = dict:incr(REQ_KEY, 1, 0)
  if gc then
    dict:set(GC_KEY, seq)
  end
  local count = ngx.worker.count()
  local deadline = ngx.now() + WAIT
  while true do
    local workers, fresh = {}, 0
    for id = 0, count - 1 do
      local raw = dict:get(STAT_KEY .. id)
      local s = raw and json.decode(raw)
      if s and s.seq >= seq then
        fresh = fresh + 1
        workers[#workers + 1] = s
      end
    end
    if fresh == count then
      return workers
    end
    if ngx.now() > deadline then
      return nil, "only " .. fresh .. " of " .. count .. " workers answered"
    end
    ngx.sleep(POLL / 2)
    ngx.update_time()
  end
end

--- GET /kong-rs/plugins/{name}/stats: returns status, body.
function _M.plugin_stats(name, gc)
  if not factory(name) then
    return 404, { message = "No native plugin named '" .. tostring(name) .. "'" }
  end
  local workers, err = _M.collect(gc)
  if not workers then
    return 503, { message = err }
  end
  local built, live, tasks = 0, 0, 0
  local out = {}
  for _, w in ipairs(workers) do
    local p = w.plugins and w.plugins[name] or { built = 0, live = 0, tasks = 0 }
    built, live, tasks = built + p.built, live + p.live, tasks + (p.tasks or 0)
    out[#out + 1] = { id = w.id, pid = w.pid, built = p.built, live = p.live,
                      lua_kb = w.lua_kb, rss_kb = w.rss_kb }
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return 200, { name = name, built = built, live = live, tasks = tasks, workers = json.array(out) }
end

return _M
