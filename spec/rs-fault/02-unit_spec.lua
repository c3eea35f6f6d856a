-- rs-fault fails on purpose: every failure must end in a 500 (where the
-- response can still change) and a log line naming plugin and phase.
local PLUGIN_NAME = "rs-fault"
local stub = require("spec.support.kong_stub")
local cjson = require("cjson")

local UNEXPECTED = { message = "An unexpected error occurred" }

local EXPECTED_LOG = {
  err = "deliberate error",
  panic = "panicked: rs-fault: deliberate panic",
  pdk_error = "code must be a number between 100 and 599",
}


describe(PLUGIN_NAME .. ": (unit)", function()
  local handler, response_handler

  setup(function()
    stub.install()
    handler = require("kong.plugins." .. PLUGIN_NAME .. ".handler")
    -- `response` lives in a plugin of its own: Kong refuses a plugin that
    -- implements it together with header_filter or body_filter.
    response_handler = require("kong.plugins.rs-fault-response.handler")
  end)

  it("keeps `response` apart from the filters, as Kong requires", function()
    assert.is_nil(handler.response)
    assert.is_function(handler.header_filter)
    assert.is_function(response_handler.response)
    assert.is_nil(response_handler.header_filter)
    assert.is_nil(response_handler.body_filter)
  end)

  for _, phase in ipairs({ "rewrite", "access", "header_filter", "response" }) do
    for mode, expected in pairs(EXPECTED_LOG) do
      it("answers 500 and logs when " .. phase .. " fails with " .. mode, function()
        local state = stub.install()
        local plugin = phase == "response" and response_handler or handler
        local name = phase == "response" and "rs-fault-response" or "rs-fault"
        plugin[phase](plugin, { phase = phase, mode = mode })
        assert.equal(1, #state.exits)
        assert.equal(500, state.exits[1].status)
        assert.same(UNEXPECTED, cjson.decode(state.exits[1].body))
        local errors = stub.logs_at(state, "err")
        assert.equal(1, #errors)
        assert.matches("plugin " .. name .. " failed in " .. phase .. " phase", errors[1], nil, true)
        assert.matches(expected, errors[1], nil, true)
      end)
    end
  end

  for _, phase in ipairs({ "body_filter", "log" }) do
    it("logs a failure in " .. phase .. ", where the response is already sent", function()
      local state = stub.install({ chunk = "body", eof = true })
      handler[phase](handler, { phase = phase, mode = "panic" })
      assert.same({}, state.exits)
      local errors = stub.logs_at(state, "err")
      assert.equal(1, #errors)
      assert.matches("failed in " .. phase .. " phase: panicked", errors[1], nil, true)
      assert.equal("body", ngx.arg[1], "chunk untouched")
    end)
  end

  it("does nothing in the phases that are not configured to fail", function()
    local state = stub.install()
    handler:access({ phase = "log", mode = "err" })
    handler:header_filter({ phase = "log", mode = "err" })
    assert.same({}, state.exits)
    assert.same({}, state.logs)
  end)
end)
