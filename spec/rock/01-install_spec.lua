-- The rock installs into an empty tree with luarocks (Lua 5.1 / LuaJIT),
-- offline, and both bundled plugins load from that tree alone.

-- The repository root, from this file's path (specs may run from another
-- directory: Kong's bin/busted runs in Kong's checkout).
local ROOT = debug.getinfo(1, "S").source:sub(2):match("^(.*)/spec/rock/[^/]+$") or "."
local ROCKSPEC = "rockspec/kong-plugin-rs-0.1.0-1.rockspec"


local function run(command)
  local pipe = assert(io.popen(command .. " 2>&1"))
  local output = pipe:read("*a")
  local ok, _, code = pipe:close()
  return ok == true or code == 0, output
end


describe("the rock", function()
  local tree

  setup(function()
    tree = os.tmpname()
    os.remove(tree)
  end)

  teardown(function()
    os.execute("rm -rf '" .. tree .. "'")
  end)

  it("installs with luarocks make and serves both plugins from the tree alone", function()
    local ok, output = run("cd '" .. ROOT .. "' && luarocks --lua-version=5.1 --tree='" .. tree ..
                           "' make " .. ROCKSPEC)
    assert(ok, output)
    assert.matches("kong-plugin-rs 0.1.0-1 is now installed", output, nil, true)

    -- A fresh LuaJIT whose search paths hold only the tree (and system cjson
    -- is not needed): nothing may come from the working copy.
    local script = [[
      package.path = TREE .. "/share/lua/5.1/?.lua"
      package.cpath = TREE .. "/lib/lua/5.1/?.so"
      kong = { log = {}, response = {} }
      for _, name in ipairs({ "rs-hello", "rs-file-log" }) do
        local handler = require("kong.plugins." .. name .. ".handler")
        local schema = require("kong.plugins." .. name .. ".schema")
        io.write(name, " ", handler.VERSION, " ", handler.PRIORITY, " ", schema.name, "\n")
      end
      local ok, err = require("kong.plugins.rs-hello.schema").fields[1].config.custom_validator(
        { message = "x", deny_status = 200 })
      io.write("validator ", tostring(ok), " ", tostring(err), "\n")
      io.write("rs-fault ", tostring(require("kong_rs_plugins").plugins["rs-fault"]), "\n")
    ]]
    local script_file = tree .. "/check.lua"
    local file = assert(io.open(script_file, "w"))
    file:write("TREE = '" .. tree .. "'\n", script)
    file:close()
    local loaded, result = run("cd /tmp && luajit '" .. script_file .. "'")
    assert(loaded, result)
    assert.matches("rs-hello 0.1.0 1000 rs-hello", result, nil, true)
    assert.matches("rs-file-log 0.1.0 9 rs-file-log", result, nil, true)
    assert.matches("validator nil deny_status must be between 400 and 599, got 200", result, nil, true)
    assert.matches("rs-fault nil", result, nil, true, "test-only plugin not shipped")
  end)
end)
