-- Shared by the spec/rock specs: a temporary luarocks tree, shell commands
-- with their exit status, and starting the gateway on what a tree holds.
local ffi = require "ffi"
local h = require "spec.support.helpers"

ffi.cdef([[
  int setenv(const char *name, const char *value, int overwrite);
  int unsetenv(const char *name);
]])

local R = {}

R.ROOT = h.root

function R.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command: ok, output (stdout and stderr).
function R.sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc == 0, (out:gsub("__rc=%d+%s*$", ""))
end

--- Runs a shell command that must succeed; returns its output.
function R.must(cmd)
  local ok, out = R.sh(cmd)
  assert(ok, "command failed: " .. cmd .. "\n" .. out)
  return out
end

--- A new empty directory (readable by the gateway's workers, which run as
-- nobody when the specs run as root).
function R.tempdir(tag)
  local dir = R.must("mktemp -d \"${TMPDIR:-/tmp}/kong-rs-" .. (tag or "rock") .. ".XXXXXX\""):gsub("%s+$", "")
  R.must("chmod 755 " .. R.quote(dir))
  return dir
end

--- `luarocks --lua-version=5.1 --tree=TREE <args>` (offline: nothing may
-- come from a server), from directory `dir` (default: the checkout).
function R.luarocks(tree, args, dir)
  return R.sh("cd " .. R.quote(dir or R.ROOT) .. " && luarocks --lua-version=5.1 --tree=" .. R.quote(tree) ..
              " " .. args)
end

--- Lua search paths holding only the tree.
function R.paths(tree)
  return tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua",
         tree .. "/lib/lua/5.1/?.so"
end

--- Runs `script` in a fresh LuaJIT whose search paths hold only the tree
-- (nothing from the working copy); returns ok, output.
function R.luajit_in_tree(tree, script)
  local lpath, cpath = R.paths(tree)
  local file = tree .. "/check-" .. tostring(math.random(1e9)) .. ".lua"
  local f = assert(io.open(file, "w"))
  f:write("package.path = ", string.format("%q", lpath), "\n",
          "package.cpath = ", string.format("%q", cpath), "\n", script)
  f:close()
  local ok, out = R.sh("cd /tmp && luajit " .. R.quote(file))
  os.remove(file)
  return ok, out
end

function R.setenv(name, value)
  if value == nil then
    ffi.C.unsetenv(name)
  else
    ffi.C.setenv(name, value, 1)
  end
end

--- Starts the gateway (helpers' h.start) with the tree's Lua and native
-- modules searched before anything of the checkout.
function R.start_on_tree(tree, opts)
  local lpath, cpath = R.paths(tree)
  opts.lua_cpath = cpath
  R.setenv("KONG_RS_LUA_PATH", lpath)
  local ok, err = pcall(h.start, opts)
  R.setenv("KONG_RS_LUA_PATH", nil)
  assert(ok, err)
end

--- The files of shared libraries mapped by the gateway's workers (which
-- .so each worker really loaded), as one string.
function R.worker_maps()
  local out = {}
  for _, pid in ipairs(h.worker_pids()) do
    local f = io.open("/proc/" .. pid .. "/maps")
    if f then
      out[#out + 1] = f:read("*a")
      f:close()
    end
  end
  return table.concat(out, "\n")
end

return R
