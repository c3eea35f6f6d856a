-- Upgrading the binary is never silent (issue 12): after the native module's
-- .so is replaced on disk (as `luarocks make` replaces it: a new file moved
-- over the old path) a reload (HUP, what `kong reload` sends) runs the new
-- code. Without kong_rs.loader the master's old library is found again by
-- its path name and every new worker runs the old code.
--
-- The spec builds a second library whose test plugin rs-version reports
-- 2.0.0 (KONG_RS_TEST_VERSION at build time), swaps it in, sends a HUP,
-- and checks VERSION in the Admin API's `GET /`, the plugin's behaviour and
-- the log line naming both versions.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"

local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1; echo \"__rc=$?\"")
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  return rc == 0, out:gsub("__rc=%d+%s*$", "")
end

local function available_version(admin, name)
  local res = admin:get("/")
  assert.equal(200, res.status, res.body)
  local plugin = res.json.plugins.available_on_server[name]
  return plugin and plugin.version
end

describe("a native module replaced on disk, then a reload (kong reload / HUP)", function()
  local admin, proxy, libdir, variant

  lazy_setup(function()
    local ok, out = sh("mktemp -d")
    assert(ok, out)
    libdir = out:gsub("%s+$", "")
    assert(sh("chmod 755 '" .. libdir .. "'"))
    -- The library the gateway starts with: the one every spec uses (1.0.0).
    assert(sh("cp '" .. S.ROOT .. "/build/lib/kong_rs_test_plugins.so' '" .. libdir .. "/kong_rs_test_plugins.so'"))
    -- The replacement: the same crate built with rs-version at 2.0.0 (a
    -- dev build, separate from the release build the other specs use).
    ok, out = sh("cd '" .. S.ROOT .. "' && KONG_RS_TEST_VERSION=2.0.0 cargo build --quiet --lib " ..
                 "-p kong-rs-test-plugins --features module --target-dir target/upgrade-spec")
    assert(ok, out)
    variant = S.ROOT .. "/target/upgrade-spec/debug/libkong_rs_test_plugins.so"

    h.start({ plugins = { "rs-version" }, lua_cpath = libdir .. "/?.so" })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "r", paths = { "/v" } }))
    h.res_status(201, admin:post("/routes/r/plugins", { name = "rs-version" }))
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if libdir then
      sh("rm -rf '" .. libdir .. "'")
    end
  end)

  local reload = h.reload

  local function proxied_version()
    local res = proxy:get("/v")
    assert.equal(200, res.status, res.body)
    return res.headers["x-rs-version"]
  end

  it("runs the old library before the swap", function()
    assert.equal("1.0.0", available_version(admin, "rs-version"))
    assert.equal("1.0.0", proxied_version())
  end)

  it("runs the new library after the swap and a reload, and says so in the log", function()
    -- As luarocks installs: a new file moved over the path (new inode).
    assert(sh("cp '" .. variant .. "' '" .. libdir .. "/kong_rs_test_plugins.so.new' && " ..
              "mv -f '" .. libdir .. "/kong_rs_test_plugins.so.new' '" .. libdir .. "/kong_rs_test_plugins.so'"))
    local log_before = #h.error_log()
    reload()
    h.wait_until(function()
      return available_version(admin, "rs-version") == "2.0.0"
    end, 10)
    for _ = 1, 6 do -- both workers
      assert.equal("2.0.0", proxied_version())
    end
    local log = h.error_log():sub(log_before + 1)
    assert.matches("was replaced on disk since this process loaded it; loaded the new file (", log, 1, true)
    assert.matches("rs-version 2.0.0", log, 1, true)
    assert.matches("was .*rs%-version 1%.0%.0", log)
  end)

  it("keeps the new library, quietly, on a reload without a change", function()
    local log_before = #h.error_log()
    reload()
    assert.equal("2.0.0", available_version(admin, "rs-version"))
    assert.equal("2.0.0", proxied_version())
    local log = h.error_log():sub(log_before + 1)
    assert.is_nil(log:find("replaced on disk", 1, true), log)
  end)
end)
