-- The rocks install into an empty tree with luarocks (Lua 5.1 / LuaJIT),
-- offline: the runtime rock (kong-rs-runtime, the kong_rs.* glue) once, and
-- two plugin rocks built on kong-rs next to each other on it (the bundled
-- kong-plugin-rs, and the test plugins crate packaged as
-- kong-plugin-rs-test-plugins); both load from that tree alone and both
-- serve requests through the gateway.
local h = require "spec.support.helpers"
local R = require "spec.rock.support"

local RUNTIME = "rockspec/kong-rs-runtime-2.0.0-1.rockspec"
local PLUGINS = "rockspec/kong-plugin-rs-0.1.0-1.rockspec"
local TEST_PLUGINS = "rockspec/kong-plugin-rs-test-plugins-0.0.0-1.rockspec"

if h.skip_on_kong("the rocks", "installs into a temporary luarocks tree and starts kong-rs-gateway on it") then
  return
end

local function files(tree, rock, version)
  -- what luarocks recorded as installed by this rock
  return R.must("cat " .. R.quote(tree .. "/lib/luarocks/rocks-5.1/" .. rock .. "/" .. version .. "/rock_manifest"))
end

describe("the rocks", function()
  local tree

  lazy_setup(function()
    tree = R.tempdir("tree")
  end)

  lazy_teardown(function()
    R.sh("rm -rf " .. R.quote(tree))
  end)

  it("the runtime rock installs the glue alone, versioned with its interface (ABI)", function()
    local ok, output = R.luarocks(tree, "make " .. RUNTIME)
    assert(ok, output)
    assert.matches("kong-rs-runtime 2.0.0-1 is now installed", output, nil, true)
    local manifest = files(tree, "kong-rs-runtime", "2.0.0-1")
    for _, name in ipairs({ "handler", "schema", "actions", "loader", "io" }) do
      assert.matches('["' .. name .. '.lua"]', manifest, nil, true)
    end
    -- Pure Lua: nothing under lib/.
    assert.not_matches("lib =", manifest, nil, true)
    -- The rock's major version is the glue's ABI.
    local loaded, result = R.luajit_in_tree(tree, 'io.write("abi ", require("kong_rs.loader").ABI)')
    assert(loaded, result)
    assert.equal("abi 2", result)
    -- a module of another interface is refused at load, naming both
    loaded, result = R.luajit_in_tree(tree, [[
      package.loaded.other_module = { abi = 3, plugins = {} }
      local ok, err = pcall(require("kong_rs.loader").load, "other_module")
      io.write(tostring(ok), " ", tostring(err))
    ]])
    assert(loaded, result)
    assert.matches("false .*native module other_module speaks glue interface 3 but this kong_rs glue speaks 2: " ..
                   "install the kong%-rs%-runtime", result)
  end)

  it("two plugin rocks install next to it, each depending on it, neither shipping the glue", function()
    local ok, output = R.luarocks(tree, "make " .. PLUGINS)
    assert(ok, output)
    assert.matches("kong-plugin-rs 0.1.0-1 is now installed", output, nil, true)
    ok, output = R.luarocks(tree, "make " .. TEST_PLUGINS)
    assert(ok, output)
    assert.matches("kong-plugin-rs-test-plugins 0.0.0-1 is now installed", output, nil, true)

    for _, rock in ipairs({ { "kong-plugin-rs", "0.1.0-1" }, { "kong-plugin-rs-test-plugins", "0.0.0-1" } }) do
      local manifest = files(tree, rock[1], rock[2])
      assert.not_matches("kong_rs", (manifest:gsub("kong_rs_[%w_]+%.so", "")), nil, true)
      local spec = R.must("cat " .. R.quote(tree .. "/lib/luarocks/rocks-5.1/" .. rock[1] .. "/" .. rock[2] ..
                                            "/" .. rock[1] .. "-" .. rock[2] .. ".rockspec"))
      assert.matches('"kong-rs-runtime ~> 2"', spec, nil, true)
    end
    local list = R.must("luarocks --lua-version=5.1 --tree=" .. R.quote(tree) .. " list --porcelain")
    assert.matches("kong-rs-runtime\t2.0.0-1\tinstalled", list, nil, true)
    assert.matches("kong-plugin-rs\t0.1.0-1\tinstalled", list, nil, true)
    assert.matches("kong-plugin-rs-test-plugins\t0.0.0-1\tinstalled", list, nil, true)
  end)

  it("serves the plugins of both rocks from the tree alone (plain LuaJIT)", function()
    local ok, result = R.luajit_in_tree(tree, [[
      kong = { log = {}, response = {} }
      for _, name in ipairs({ "rs-hello", "rs-file-log", "rs-version", "rs-header-ops" }) do
        local handler = require("kong.plugins." .. name .. ".handler")
        local schema = require("kong.plugins." .. name .. ".schema")
        io.write(name, " ", handler.VERSION, " ", handler.PRIORITY, " ", schema.name, "\n")
      end
      local ok, err = require("kong.plugins.rs-hello.schema").fields[1].config.custom_validator(
        { message = "x", deny_status = 200 })
      io.write("validator ", tostring(ok), " ", tostring(err), "\n")
      io.write("rs-fault ", tostring(require("kong_rs_plugins").plugins["rs-fault"]), "\n")
      local modules = {}
      for name in pairs(require("kong_rs.loader").modules()) do modules[#modules + 1] = name end
      table.sort(modules)
      io.write("modules ", table.concat(modules, " "), "\n")
    ]])
    assert(ok, result)
    assert.matches("rs-hello 0.1.0 1000 rs-hello", result, nil, true)
    assert.matches("rs-file-log 0.1.0 9 rs-file-log", result, nil, true)
    assert.matches("rs-version 1.0.0 10 rs-version", result, nil, true)
    assert.matches("rs%-header%-ops [%d.]+ %-?%d+ rs%-header%-ops", result)
    assert.matches("validator nil deny_status must be between 400 and 599, got 200", result, nil, true)
    assert.matches("rs-fault nil", result, nil, true, "test-only plugin not shipped in kong-plugin-rs")
    assert.matches("modules kong_rs_plugins kong_rs_test_plugins", result, nil, true)
  end)

  describe("through the gateway", function()
    local admin, proxy

    lazy_setup(function()
      R.start_on_tree(tree, { plugins = { "rs-hello", "rs-version" }, workers = 1 })
      admin, proxy = h.admin(), h.proxy()
    end)

    lazy_teardown(function()
      h.stop()
    end)

    it("enables a plugin of each rock through the Admin API and runs both on one request", function()
      h.res_status(201, admin:post("/services", { name = "rocks", url = h.upstream_url() }))
      h.res_status(201, admin:post("/services/rocks/routes", { name = "rocks", paths = { "/rocks" } }))
      h.res_status(201, admin:post("/routes/rocks/plugins", { name = "rs-hello", config = { message = "from the tree" } }))
      h.res_status(201, admin:post("/plugins", { name = "rs-version" }))
      -- the Admin API validates with the tree's Rust constructor
      local bad = admin:post("/plugins", { name = "rs-hello", config = { message = "x", deny_status = 200 } })
      assert.equal(400, bad.status, bad.body)

      local res = proxy:get("/rocks/x")
      h.res_status(200, res)
      assert.equal("from the tree", res.headers["x-hello-from-rust"])
      assert.equal("1.0.0", res.headers["x-rs-version"])

      -- the worker runs the libraries of the tree, not the checkout's build/lib
      local maps = R.worker_maps()
      assert.matches(tree .. "/lib/lua/5.1/kong_rs_plugins.so", maps, nil, true)
      assert.matches(tree .. "/lib/lua/5.1/kong_rs_test_plugins.so", maps, nil, true)
      assert.not_matches(R.ROOT .. "/build/lib/", maps, nil, true)
    end)
  end)
end)
