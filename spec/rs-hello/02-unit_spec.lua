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

describe("rs-hello: (FFI fast path)", function()
  local fast_handler = require("kong_rs.handler").new("kong_rs_plugins", PLUGIN_NAME,
                                                      { fast_path = true })

  it("sets the header and performs exits through the FFI path too", function()
    local state = stub.install()
    fast_handler:access({ message = "via ffi" })
    assert.equal("via ffi", state.response_headers["x-hello-from-rust"])
    assert.same({}, state.exits)

    state = stub.install()
    fast_handler:access({ message = "no entry", deny_status = 451 })
    assert.equal(451, state.exits[1].status)
    assert.equal("no entry", state.exits[1].body)
  end)

  it("answers 500 and logs when the instance cannot be built", function()
    local state = stub.install()
    fast_handler:access({ message = "x", deny_status = 200 })
    assert.equal(500, state.exits[1].status)
    assert.matches("deny_status must be between 400 and 599", stub.logs_at(state, "err")[1], nil, true)
  end)

  it("runs access through the FFI handle, owned by the GC", function()
    stub.install()
    local factory = require("kong_rs_plugins").plugins["rs-hello"]
    assert.is_nil(factory.new({ message = "x" }).fast, "no handle unless asked for")
    local instance = factory.new({ message = "x" }, true)
    assert.equal("userdata", type(instance.fast), "raw handle before the glue wraps it")
    assert.same({}, instance.fast_headers)
    require("kong_rs_ffi").load("kong_rs_plugins").kong_rs_ffi_instance_free(
      require("ffi").cast("kong_rs_instance_t *", instance.fast))
  end)
end)
