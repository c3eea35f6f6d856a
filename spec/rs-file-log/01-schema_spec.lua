local PLUGIN_NAME = "rs-file-log"
local validator = require("spec.support.validator")
local schema_def = require("kong.plugins." .. PLUGIN_NAME .. ".schema")

local function validate(config)
  return validator.validate(config, schema_def)
end


describe(PLUGIN_NAME .. ": (schema)", function()
  it("accepts an absolute path and fills reopen's default", function()
    local entity, err = validate({ path = "/tmp/kong-rs.log" })
    assert.is_nil(err)
    assert.equal("/tmp/kong-rs.log", entity.config.path)
    assert.is_false(entity.config.reopen)
  end)

  it("requires path", function()
    local entity, err = validate({ reopen = true })
    assert.is_nil(entity)
    assert.same({ path = "required field missing" }, err.config)
  end)

  it("refuses a relative path with the Rust constructor's message", function()
    local entity, err = validate({ path = "relative.log" })
    assert.is_nil(entity)
    assert.matches('path must be an absolute file path, got "relative.log"',
                   validator.messages(err), nil, true)
  end)

  it("refuses a non-boolean reopen", function()
    local entity, err = validate({ path = "/tmp/x.log", reopen = "yes" })
    assert.is_nil(entity)
    assert.matches("expected a boolean", validator.messages(err.config), nil, true)
  end)
end)
