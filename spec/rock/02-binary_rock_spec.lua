-- The binary rocks: what a Kong host (or `FROM kong:3.9` image) installs
-- with luarocks alone, no compiler, no cargo, no network.
--
-- 1. Always (CI): the Dockerfile recipe of the README replayed on the
--    gateway. The rocks are packed the way scripts/package packs them, but
--    from the library scripts/build-native already built (the glibc 2.28
--    zig build takes minutes; set KONG_RS_BINARY_ROCKS=build/dist to use
--    scripts/package's rocks instead), then `luarocks install`ed from the
--    .rock files into a fresh tree with a PATH holding no cargo, and
--    served: start, enable through the Admin API, request.
-- 2. When scripts/package has run (build/dist holds its rocks): the library
--    in the rock needs no GLIBC_ symbol version above 2.28, and carries no
--    debug info.
-- 3. When a Debian 11 root exists (/opt/deb11-root, or KONG_RS_DEBIAN_ROOT;
--    see scripts/check-binary-rock): scripts/check-binary-rock installs and
--    loads the rocks inside it. Otherwise the test is reported pending,
--    naming what is missing.
local h = require "spec.support.helpers"
local R = require "spec.rock.support"

if h.skip_on_kong("the binary rocks", "installs into a temporary luarocks tree and starts kong-rs-gateway on it") then
  return
end

local RUNTIME = "rockspec/kong-rs-runtime-2.0.0-1.rockspec"
local PLUGINS = "rockspec/kong-plugin-rs-0.1.0-1.rockspec"
local ARCH = R.must("uname -m"):gsub("%s+$", "")
local RUNTIME_ROCK = "kong-rs-runtime-2.0.0-1.all.rock"
local PLUGIN_ROCK = "kong-plugin-rs-0.1.0-1.linux-" .. ARCH .. ".rock"
local GLIBC_LIMIT = "2.28"

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function absolute(path)
  return path:sub(1, 1) == "/" and path or (R.ROOT .. "/" .. path)
end

local PACKAGED = absolute(os.getenv("KONG_RS_BINARY_ROCKS") or "build/dist")
local packaged = exists(PACKAGED .. "/" .. PLUGIN_ROCK) and exists(PACKAGED .. "/" .. RUNTIME_ROCK)

describe("the binary rocks", function()
  local dist, tree

  lazy_setup(function()
    tree = R.tempdir("bintree")
    if os.getenv("KONG_RS_BINARY_ROCKS") then
      assert(packaged, "KONG_RS_BINARY_ROCKS=" .. os.getenv("KONG_RS_BINARY_ROCKS") .. " holds no " .. PLUGIN_ROCK)
      dist = PACKAGED
      return
    end
    -- pack as scripts/package does, from the host build
    dist = R.tempdir("dist")
    local build_tree = dist .. "/tree"
    local lib = R.ROOT .. "/build/lib/kong_rs_plugins.so"
    assert(exists(lib), "run scripts/build-native first")
    assert(R.luarocks(build_tree, "make " .. RUNTIME))
    local ok, out = R.sh("cd " .. R.quote(R.ROOT) .. " && KONG_RS_SO=" .. R.quote(lib) ..
                         " luarocks --lua-version=5.1 --tree=" .. R.quote(build_tree) .. " make " .. PLUGINS)
    assert(ok, out)
    R.must("cd " .. R.quote(dist) .. " && luarocks --lua-version=5.1 --tree=" .. R.quote(build_tree) ..
           " pack kong-rs-runtime 2.0.0-1 && luarocks --lua-version=5.1 --tree=" .. R.quote(build_tree) ..
           " pack kong-plugin-rs 0.1.0-1")
  end)

  lazy_teardown(function()
    R.sh("rm -rf " .. R.quote(tree))
    if dist ~= PACKAGED then
      R.sh("rm -rf " .. R.quote(dist))
    end
  end)

  it("install with luarocks alone: no cargo on PATH, nothing built, only the .rock files", function()
    -- The Dockerfile's steps: `luarocks install` each .rock file.
    local env = "cd /tmp && env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp "
    R.must(env .. "sh -c '! command -v cargo'")
    for _, rock in ipairs({ RUNTIME_ROCK, PLUGIN_ROCK }) do
      local ok, out = R.sh(env .. "luarocks --lua-version=5.1 --tree=" .. R.quote(tree) ..
                           " install " .. R.quote(dist .. "/" .. rock))
      assert(ok, out)
      assert.matches("is now installed", out, nil, true)
      assert.not_matches("cargo", out, nil, true)
    end
    assert(exists(tree .. "/lib/lua/5.1/kong_rs_plugins.so"))
    assert(exists(tree .. "/share/lua/5.1/kong_rs/loader.lua"))
  end)

  describe("served by the gateway from that tree (KONG_PLUGINS=bundled,rs-hello,rs-file-log)", function()
    local admin, proxy

    lazy_setup(function()
      R.start_on_tree(tree, { plugins = { "bundled" }, workers = 1 })
      admin, proxy = h.admin(), h.proxy()
    end)

    lazy_teardown(function()
      h.stop()
    end)

    it("enables rs-hello through the Admin API and answers with its header", function()
      local res = admin:get("/plugins/enabled")
      h.res_status(200, res)
      assert.matches("rs-hello", res.body, nil, true)
      assert.matches("rs-file-log", res.body, nil, true)
      h.res_status(201, admin:post("/services", { name = "bin", url = h.upstream_url() }))
      h.res_status(201, admin:post("/services/bin/routes", { name = "bin", paths = { "/bin" } }))
      h.res_status(201, admin:post("/services/bin/plugins", { name = "rs-hello", config = { message = "binary rock" } }))
      res = proxy:get("/bin")
      h.res_status(200, res)
      assert.equal("binary rock", res.headers["x-hello-from-rust"])
      assert.matches(tree .. "/lib/lua/5.1/kong_rs_plugins.so", R.worker_maps(), nil, true)
    end)
  end)

  if packaged then
    it("scripts/package's library needs glibc <= " .. GLIBC_LIMIT .. " and carries no debug info", function()
      local so = tree .. "/packaged.so"
      R.must("unzip -p " .. R.quote(PACKAGED .. "/" .. PLUGIN_ROCK) .. " lib/kong_rs_plugins.so > " .. R.quote(so))
      local versions = R.must("objdump -T " .. R.quote(so) .. " | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n 1")
      local need = versions:match("GLIBC_([%d.]+)")
      assert(need, "no GLIBC_ versions found")
      local highest = R.must("printf '%s\\n%s\\n' " .. need .. " " .. GLIBC_LIMIT .. " | sort -V | tail -n 1")
      assert.equal(GLIBC_LIMIT, (highest:gsub("%s+$", "")), "needs GLIBC_" .. need)
      assert.not_matches("%.debug_info", R.must("readelf -S " .. R.quote(so)))
    end)
  else
    pending("glibc check of scripts/package's rock: SKIPPED, no " .. PLUGIN_ROCK .. " in " .. PACKAGED ..
            " (run scripts/package)")
  end

  local debian = os.getenv("KONG_RS_DEBIAN_ROOT") or "/opt/deb11-root"
  if packaged and exists(debian .. "/usr/bin/luajit") then
    it("installs and loads inside Debian 11 (scripts/check-binary-rock " .. debian .. ")", function()
      local ok, out = R.sh(R.quote(R.ROOT .. "/scripts/check-binary-rock") .. " " .. R.quote(debian) .. " " ..
                           R.quote(PACKAGED))
      assert(ok, out)
      assert.matches("check-binary-rock: PASSED", out, nil, true)
    end)
  else
    pending("Debian 11 load check: SKIPPED, " ..
            (packaged and ("no Debian root at " .. debian .. " (see scripts/check-binary-rock)")
                       or ("no " .. PLUGIN_ROCK .. " in " .. PACKAGED .. " (run scripts/package)")))
  end
end)
