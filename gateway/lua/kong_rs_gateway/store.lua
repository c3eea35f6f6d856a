-- The configuration store. The authoritative copy lives in a
-- lua_shared_dict (JSON + a version counter) so that every worker sees a
-- write on its next request; writes are serialised across workers with a
-- shdict lock and persisted to <prefix>/data/kong-rs-config.json (atomic
-- rename), which is loaded again at start. data/ belongs to the workers'
-- user: the worker serving the Admin API writes there.
local json = require "kong_rs_gateway.json"
local dao = require "kong_rs_gateway.dao"

local ngx = ngx
local shared = ngx.shared
local sleep = ngx.sleep
local now = ngx.now
local update_time = ngx.update_time
local worker_pid = ngx.worker.pid
local fmt = string.format

local DICT = "kong_rs"
local KEY_CONFIG = "config"
local KEY_VERSION = "version"
local KEY_LOCK = "admin_lock"
local LOCK_TTL = 10      -- seconds; a crashed holder frees it by expiry
local LOCK_WAIT = 5      -- seconds we wait for it

local _M = {}

local prefix

local function dict()
  local d = shared[DICT]
  if not d then
    error("lua_shared_dict '" .. DICT .. "' is not configured")
  end
  return d
end

local function config_path()
  return prefix .. "/data/kong-rs-config.json"
end

local function persist(encoded)
  local path = config_path()
  local tmp = path .. ".tmp." .. worker_pid()
  local f, err = io.open(tmp, "wb")
  if not f then
    return nil, "cannot write " .. tmp .. ": " .. tostring(err)
  end
  local ok, werr = f:write(encoded, "\n")
  f:close()
  if not ok then
    os.remove(tmp)
    return nil, "cannot write " .. tmp .. ": " .. tostring(werr)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    return nil, "cannot rename to " .. path .. ": " .. tostring(rerr)
  end
  return true
end

local function publish(state)
  local encoded, err = json.encode(state)
  if not encoded then
    return nil, "cannot encode configuration: " .. err
  end
  local ok, perr = persist(encoded)
  if not ok then
    return nil, perr
  end
  local d = dict()
  local sok, serr = d:set(KEY_CONFIG, encoded)
  if not sok then
    return nil, "cannot store configuration in shm: " .. tostring(serr)
  end
  local v, ierr = d:incr(KEY_VERSION, 1, 0)
  if not v then
    return nil, "cannot bump configuration version: " .. tostring(ierr)
  end
  return v
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("*a")
  f:close()
  return s
end

--- init_by_lua: load persisted or declarative configuration into the shm.
function _M.init(opts)
  prefix = opts.prefix
  local state, err
  if opts.declarative and opts.declarative ~= "" then
    state, err = require("kong_rs_gateway.declarative").load(opts.declarative)
    if not state then
      return nil, err
    end
  else
    local s = read_file(config_path())
    if s then
      local decoded, derr = json.decode(s)
      if type(decoded) ~= "table" then
        return nil, fmt("cannot parse %s: %s", config_path(), tostring(derr))
      end
      state, err = dao.check_state(dao.normalize(decoded))
      if not state then
        return nil, fmt("%s: %s", config_path(), err)
      end
    else
      state = dao.new_state()
    end
  end
  dict():delete(KEY_LOCK)
  local v, perr = publish(state)
  if not v then
    return nil, perr
  end
  return true
end

function _M.set_prefix(p)
  prefix = p
end

--- The current version number (cheap: one shdict get).
function _M.version()
  return dict():get(KEY_VERSION)
end

--- Decode the current configuration: state, version.
function _M.current()
  local d = dict()
  local v = d:get(KEY_VERSION)
  local s = d:get(KEY_CONFIG)
  if not s then
    return nil, "no configuration in shm"
  end
  local state, err = json.decode(s)
  if not state then
    return nil, "cannot decode configuration: " .. tostring(err)
  end
  return dao.normalize(state), v
end

local function lock()
  local d = dict()
  local deadline = now() + LOCK_WAIT
  local wait = 0.001
  while true do
    local ok, err = d:add(KEY_LOCK, worker_pid(), LOCK_TTL)
    if ok then
      return true
    end
    if err ~= "exists" then
      return nil, err
    end
    update_time()
    if now() > deadline then
      return nil, "timeout waiting for the configuration lock"
    end
    sleep(wait)
    wait = math.min(wait * 2, 0.05)
  end
end

--- Run fn(state) under the cross-worker write lock. fn returns
-- (result, changed) or (nil, err). When changed, the new state is persisted
-- and published. Returns fn's results.
function _M.transaction(fn)
  local ok, lerr = lock()
  if not ok then
    return nil, { status = 500, body = { message = "An unexpected error occurred" }, log = lerr }
  end
  local state, err = _M.current()
  local res, ferr, changed
  if state then
    err = nil
    local pok
    pok, res, ferr = pcall(fn, state)
    if not pok then
      err = res
      res = nil
    elseif res ~= nil then
      changed = ferr ~= false
      if changed then
        local v, perr = publish(state)
        if not v then
          err = perr
          res = nil
        end
      end
      ferr = nil
    end
  end
  dict():delete(KEY_LOCK)
  if err then
    return nil, { status = 500, body = { message = "An unexpected error occurred" }, log = tostring(err) }
  end
  return res, ferr
end

return _M
