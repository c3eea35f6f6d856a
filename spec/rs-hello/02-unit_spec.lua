local PLUGIN_NAME = "rs-hello"
local stub = require("spec.support.kong_stub")
local cjson = require("cjson")


describe(PLUGIN_NAME .. ": (unit)", function()
  local handler, factory

  setup(function()
    stub.install()
    handler = require("kong.plugins." .. PLUGIN_NAME .. ".handler")
    factory = require("kong_rs_plugins").plugins[PLUGIN_NAME]
  end)

  it("takes VERSION and PRIORITY from Rust and registers only access", function()
    assert.equal("0.1.0", handler.VERSION)
    assert.equal(1000, handler.PRIORITY)
    assert.is_function(handler.access)
    for _, phase in ipairs({ "rewrite", "header_filter", "body_filter", "response", "log" }) do
      assert.is_nil(handler[phase], phase)
    end
  end)

  it("sets X-Hello-From-Rust and lets the request through", function()
    local state = stub.install()
    handler:access({ message = "hi from rust" })
    assert.equal("hi from rust", state.response_headers["x-hello-from-rust"])
    assert.same({}, state.exits)
  end)

  it("refuses a non-UTF-8 message (a config is text) naming the field", function()
    local factory_ok, err = factory.validate({ message = "caf\233" })
    assert.is_false(factory_ok)
    assert.matches("config.message: invalid value", err, nil, true)
  end)

  it("builds a refused conf once, not on every request, and answers each 500", function()
    local conf = { message = "caf\233" }
    local built = factory.stats().built
    for _ = 1, 3 do
      local state = stub.install()
      handler:access(conf)
      assert.equal(1, #state.exits)
      assert.equal(500, state.exits[1].status)
      local errors = stub.logs_at(state, "err")
      assert.matches("invalid configuration: config.message", errors[1], nil, true)
    end
    assert.equal(built + 1, factory.stats().built)
  end)

  it("performs the deferred exit with deny_status", function()
    local state = stub.install()
    handler:access({ message = "go away", deny_status = 403 })
    assert.equal(1, #state.exits)
    assert.equal(403, state.exits[1].status)
    assert.equal("go away", state.exits[1].body)
    assert.is_nil(state.response_headers["x-hello-from-rust"])
  end)

  it("treats Kong's null for an unset field as absent", function()
    local state = stub.install()
    handler:access({ message = "hi", deny_status = cjson.null })
    assert.equal("hi", state.response_headers["x-hello-from-rust"])
  end)

  it("builds once per conf table and again for a new one", function()
    stub.install()
    local before = factory.stats().built
    local conf = { message = "first" }
    for _ = 1, 5 do
      handler:access(conf)
    end
    assert.equal(before + 1, factory.stats().built)

    local state = stub.install()
    local changed = { message = "second" }
    handler:access(changed)
    assert.equal(before + 2, factory.stats().built)
    assert.equal("second", state.response_headers["x-hello-from-rust"], "no stale instance")
  end)

  it("frees the instance once Kong drops the conf table", function()
    stub.install()
    collectgarbage()
    collectgarbage()
    local live = factory.stats().live
    do
      handler:access({ message = "short-lived" })
    end
    assert.equal(live + 1, factory.stats().live)
    collectgarbage()
    collectgarbage()
    assert.equal(live, factory.stats().live)
  end)

  it("answers 500 and logs when the conf cannot build an instance", function()
    local state = stub.install()
    handler:access({ message = "x", deny_status = 200 })
    assert.equal(500, state.exits[1].status)
    local errors = stub.logs_at(state, "err")
    assert.equal(1, #errors)
    assert.matches("rs-hello", errors[1], nil, true)
    assert.matches("deny_status must be between 400 and 599, got 200", errors[1], nil, true)
  end)
end)
