-- Your own plugin from the template, end to end: scripts/new-plugin
-- generates a crate into a temporary directory; there, `cargo test` passes,
-- scripts/build and the crate's own busted specs pass (its .busted and its
-- spec/support/helpers.lua reference this checkout); its rockspec builds a
-- binary rock (the library handed in through KONG_RS_SO, as its
-- scripts/package does) that `luarocks install` puts into a fresh tree next
-- to kong-rs-runtime and the bundled kong-plugin-rs; the gateway started on
-- that tree serves it: enabled through the Admin API, a request shows its
-- header. CARGO_TARGET_DIR is this checkout's target/, so kong-rs and its
-- dependencies are not compiled again.
local h = require "spec.support.helpers"
local R = require "spec.rock.support"

if h.skip_on_kong("the plugin template", "generates and builds a crate, starts kong-rs-gateway on a luarocks tree") then
  return
end

local NAME = "my-greeting"
local ROCK = "kong-plugin-" .. NAME .. "-0.1.0-1"

describe("scripts/new-plugin", function()
  local base, dir, tree, dist

  -- a command in the generated crate, building into this checkout's target/
  local function in_crate(cmd)
    return R.sh("cd " .. R.quote(dir) .. " && CARGO_TARGET_DIR=" .. R.quote(R.ROOT .. "/target") .. " " .. cmd)
  end

  lazy_setup(function()
    base = R.tempdir("template")
    dir = base .. "/kong-plugin-" .. NAME
    tree = base .. "/tree"
    dist = base .. "/dist"
  end)

  lazy_teardown(function()
    R.sh("rm -rf " .. R.quote(base))
  end)

  it("generates the crate: Cargo.toml, src/lib.rs, Lua files, rockspec, specs, .busted, .pongo, README", function()
    local out = R.must(R.quote(R.ROOT .. "/scripts/new-plugin") .. " " .. NAME .. " " .. R.quote(dir))
    assert.matches("plugin my-greeting (Rust type MyGreeting, native module kong_plugin_my_greeting.so)", out, nil, true)
    for _, file in ipairs({ "Cargo.toml", "Cargo.lock", "src/lib.rs", "kong/plugins/my-greeting/handler.lua",
                            "kong/plugins/my-greeting/schema.lua", ROCK .. ".rockspec", "scripts/build",
                            "scripts/package", "spec/my-greeting/01-schema_spec.lua",
                            "spec/my-greeting/10-integration_spec.lua", "spec/support/helpers.lua", ".busted",
                            ".pongo/pongorc", ".pongo/pongo-setup.sh", "README.md" }) do
      assert(io.open(dir .. "/" .. file), "missing " .. file)
    end
    local cargo = R.must("cat " .. R.quote(dir .. "/Cargo.toml"))
    assert.matches('kong-rs = { path = "' .. R.ROOT .. '" }', cargo, nil, true)
    local lib = R.must("cat " .. R.quote(dir .. "/src/lib.rs"))
    assert.matches("#[kong_rs::plugin]", lib, nil, true)
    assert.matches("kong_rs::export_plugins!(luaopen_kong_plugin_my_greeting: MyGreeting);", lib, nil, true)
    assert.not_matches("__%u+__", lib)
    assert.matches('"kong-rs-runtime ~> 2"', R.must("cat " .. R.quote(dir .. "/" .. ROCK .. ".rockspec")), nil, true)
    -- refuses a bad name and an existing directory
    assert.is_false((R.sh(R.quote(R.ROOT .. "/scripts/new-plugin") .. " Bad_Name " .. R.quote(base .. "/x"))))
    assert.is_false((R.sh(R.quote(R.ROOT .. "/scripts/new-plugin") .. " " .. NAME .. " " .. R.quote(dir))))
  end)

  it("passes cargo test (the mock PDK and Kong's load-time rules)", function()
    local ok, out = in_crate("cargo test 2>&1")
    assert(ok, out)
    assert.matches("test tests::sets_the_header ... ok", out, nil, true)
    assert.matches("test kong_rs_load_rules_my_greeting ... ok", out, nil, true)
  end)

  it("builds, and its own busted specs pass on the gateway (schema + integration)", function()
    local ok, out = in_crate("scripts/build")
    assert(ok, out)
    ok, out = in_crate("busted -o TAP")
    assert(ok, out)
    assert.matches("1..7", out, nil, true)
    assert.not_matches("not ok", out, nil, true)
  end)

  it("its binary rock installs with luarocks next to the runtime and kong-plugin-rs", function()
    -- the rock, packed as its scripts/package packs it (from the library
    -- scripts/build made instead of the zig build)
    local build_tree = base .. "/build-tree"
    R.must("mkdir -p " .. R.quote(dist))
    assert(R.luarocks(build_tree, "make rockspec/kong-rs-runtime-2.0.0-1.rockspec"))
    local ok, out = in_crate("KONG_RS_SO=" .. R.quote(dir .. "/build/kong_plugin_my_greeting.so") ..
                             " luarocks --lua-version=5.1 --tree=" .. R.quote(build_tree) .. " make " .. ROCK ..
                             ".rockspec")
    assert(ok, out)
    R.must("cd " .. R.quote(dist) .. " && luarocks --lua-version=5.1 --tree=" .. R.quote(build_tree) ..
           " pack kong-plugin-" .. NAME .. " 0.1.0-1 && luarocks --lua-version=5.1 --tree=" ..
           R.quote(build_tree) .. " pack kong-rs-runtime 2.0.0-1")

    -- the serving tree: the runtime rock, the bundled plugins, the new one
    assert(R.luarocks(tree, "install " .. R.quote(dist .. "/kong-rs-runtime-2.0.0-1.all.rock")))
    ok, out = R.luarocks(tree, "make rockspec/kong-plugin-rs-0.1.0-1.rockspec")
    assert(ok, out)
    ok, out = R.luarocks(tree, "install " .. R.quote(dist .. "/" .. ROCK .. ".linux-" ..
                                                    R.must("uname -m"):gsub("%s+$", "") .. ".rock"))
    assert(ok, out)
    assert.matches("kong-plugin-my-greeting 0.1.0-1 is now installed", out, nil, true)
  end)

  describe("served by the gateway from the tree", function()
    local admin, proxy

    lazy_setup(function()
      R.start_on_tree(tree, { plugins = { NAME, "rs-hello" }, workers = 1 })
      admin, proxy = h.admin(), h.proxy()
    end)

    lazy_teardown(function()
      h.stop()
    end)

    it("enabled through the Admin API, it answers with its header; a bad config is a 400", function()
      h.res_status(201, admin:post("/services", { name = "mine", url = h.upstream_url() }))
      h.res_status(201, admin:post("/services/mine/routes", { name = "mine", paths = { "/mine" } }))
      h.res_status(201, admin:post("/routes/mine/plugins", { name = NAME, config = { message = "my own plugin" } }))
      h.res_status(201, admin:post("/routes/mine/plugins", { name = "rs-hello", config = { message = "bundled" } }))
      local bad = admin:post("/plugins", { name = NAME, config = { message = "" } })
      assert.equal(400, bad.status, bad.body)
      assert.matches("message must be non-empty", bad.body, nil, true)

      local res = proxy:get("/mine")
      h.res_status(200, res)
      assert.equal("my own plugin", res.headers["x-my-greeting"])
      assert.equal("bundled", res.headers["x-hello-from-rust"])
      assert.matches(tree .. "/lib/lua/5.1/kong_plugin_my_greeting.so", R.worker_maps(), nil, true)
    end)
  end)
end)
