-- The glue (kong_rs/*.lua) and a native module agree on one interface
-- version (ABI in src/bridge.rs): a pair that does not is refused at load
-- with a message naming both, never half-working.
local stub = require("spec.support.kong_stub")

describe("glue / native module interface", function()
  setup(function()
    stub.install()
  end)

  after_each(function()
    package.loaded["kong_rs_test_mismatch"] = nil
  end)

  it("loads the module built from this tree: same interface version", function()
    local loader = require("kong_rs.loader")
    local native = loader.load("kong_rs_plugins")
    assert.equal(loader.ABI, native.abi)
  end)

  it("refuses a module that speaks another interface version, naming both", function()
    local real = require("kong_rs_plugins")
    package.loaded["kong_rs_test_mismatch"] = { abi = real.abi + 1, plugins = real.plugins }
    local ok, err = pcall(require("kong_rs.handler").new, "kong_rs_test_mismatch", "rs-hello")
    assert.is_false(ok)
    assert.matches("native module kong_rs_test_mismatch speaks glue interface " .. (real.abi + 1) ..
                   " but this kong_rs glue speaks " .. real.abi, err, 1, true)
    ok, err = pcall(require("kong_rs.schema").new, "kong_rs_test_mismatch", "rs-hello")
    assert.is_false(ok)
    assert.matches("speaks glue interface", err, 1, true)
  end)

  it("refuses a module that is not a kong-rs module", function()
    package.loaded["kong_rs_test_mismatch"] = { plugins = {} }
    local ok, err = pcall(require("kong_rs.handler").new, "kong_rs_test_mismatch", "rs-hello")
    assert.is_false(ok)
    assert.matches("speaks glue interface none (not a kong-rs module)", err, 1, true)
  end)

  it("resume refuses what is not one of its tasks, as a failure value", function()
    local native = require("kong_rs_plugins")
    -- Raw entry points (the module was loaded on the main thread, as nginx
    -- does) never raise; mlua's callbacks raise a conversion error.
    local raw = native.plugins["rs-hello"].raw_phases
    for _, bogus in ipairs({ {}, "task", 42, newproxy(true), io.stdout }) do
      local ok, value, status, message = pcall(native.resume, bogus, "reply", nil)
      if raw then
        assert.is_true(ok, tostring(value))
        assert.is_nil(value)
        assert.is_false(status)
        assert.matches("not a task of this module", message, 1, true)
      else
        assert.is_false(ok)
      end
    end
  end)

  it("takes Kong's phase rules from the module (one definition, in Rust)", function()
    local rules = require("kong_rs_plugins").phase_rules
    assert.same({ respond = true, body = true }, rules.access)
    assert.same({ respond = true, body = true }, rules.rewrite)
    assert.same({ respond = true, body = false }, rules.preread)
    assert.same({ respond = false, body = false }, rules.log)
    assert.same({ respond = false, body = false }, rules.body_filter)
  end)
end)
