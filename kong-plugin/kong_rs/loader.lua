-- kong_rs.loader: `require` for a native module, which also picks up a
-- library replaced on disk since this process first loaded it.
--
--   local native = require("kong_rs.loader").load("kong_rs_plugins")
--
-- nginx's master process keeps the libraries it loaded at its first start.
-- After a new rock replaced the `.so` and `kong reload` (a HUP) made a new
-- Lua state, a plain `require` gets the *old* library back: glibc's dlopen
-- matches a library already loaded under the same path name, whatever is
-- on disk now, and every new worker runs the old code. So: load as usual,
-- ask the module whether the file at its path is still the one it was
-- loaded from (device and inode, src/library.rs) and, when it is not, open
-- the path under another spelling (`dir/./name.so`, `dir/././name.so`, …):
-- glibc matches no loaded library by that name, opens the file, and loads
-- it unless it is the very file of a loaded one.

local package = package
local require = require
local pairs = pairs
local tostring = tostring
local type = type
local ngx = ngx

local MAX_SPELLINGS = 64

-- The interface this glue speaks with native modules (`ABI` in
-- src/bridge.rs): a module built against another kong-rs is refused.
local ABI = 2

local _M = {}


-- ngx.log where there is one (nginx), stderr elsewhere (plain LuaJIT).
local function log(level, ...)
  if ngx and ngx.log then
    ngx.log(ngx[level], ...)
  else
    io.stderr:write(level, ": ", table.concat({ ... }), "\n")
  end
end


local function versions(native)
  local out = {}
  for name, factory in pairs(native.plugins or {}) do
    out[#out + 1] = name .. " " .. tostring(factory.version)
  end
  table.sort(out)
  return table.concat(out, ", ")
end


_M.ABI = ABI

-- The native modules loaded through here, by name: what tools (the test
-- gateway's stats endpoint) list, instead of guessing from package.loaded.
local modules = {}


--- The native modules loaded so far: a table name -> module (a copy).
function _M.modules()
  local out = {}
  for name, native in pairs(modules) do
    out[name] = native
  end
  return out
end


-- The module, or an error naming both interface versions.
local function checked(name, native)
  if type(native) ~= "table" or native.abi ~= ABI then
    local theirs = type(native) == "table" and native.abi ~= nil and tostring(native.abi)
                   or "none (not a kong-rs module)"
    error("kong-rs: native module " .. name .. " speaks glue interface " .. theirs ..
          " but this kong_rs glue speaks " .. ABI .. ": install the kong-rs-runtime " ..
          "(kong_rs/*.lua) that matches the kong-rs version the module was built with", 3)
  end
  modules[name] = native
  return native
end


--- Returns the native module `name` (as `require` would), loaded from the
-- file now at its path on `package.cpath`. Raises when the module speaks
-- another glue interface version.
function _M.load(name)
  local native = package.loaded[name]
  if native then
    return checked(name, native)
  end
  native = require(name)
  local path = package.searchpath(name, package.cpath)
  if not path or type(native) ~= "table" or not native.is_current
     or native.is_current(path) ~= false
  then
    return checked(name, native)
  end

  local dir, file = path:match("^(.*)/([^/]+)$")
  if not dir then
    dir, file = ".", path
  end
  local entry = "luaopen_" .. name:gsub("%.", "_")
  local old = versions(native)
  for i = 1, MAX_SPELLINGS do
    local spelled = dir .. ("/."):rep(i) .. "/" .. file
    local open = package.loadlib(spelled, entry)
    if open then
      local fresh = open(name)
      if type(fresh) == "table" and fresh.is_current and fresh.is_current(path) then
        -- Opened before: an earlier reload already loaded this file.
        if fresh.opens == 1 then
          log("NOTICE", "kong-rs: ", path, " was replaced on disk since this process loaded it; ",
              "loaded the new file (", versions(fresh), "; was ", old, ")")
        end
        package.loaded[name] = fresh
        return checked(name, fresh)
      end
    end
  end
  -- Loud, never silent: the old code keeps running until a restart.
  log("ERR", "kong-rs: ", path, " was replaced on disk but the new file could not be ",
      "loaded; still running ", old, ": restart Kong (kong restart) to run the new one")
  return checked(name, native)
end


return _M
