-- __NAME__: the schema generated from the Rust config type, validated as
-- Kong validates a plugin config (Kong's validator under Pongo).
local PLUGIN_NAME = "__NAME__"
local validator = require("spec.support.validator")
local schema_def = require("kong.plugins." .. PLUGIN_NAME .. ".schema")

local function validate(config)
  return validator.validate(config, schema_def)
end

describe(PLUGIN_NAME .. ": (schema)", function()
  it("accepts a message", function()
    local entity, err = validate({ message = "hello" })
    assert.is_nil(err)
    assert.equal("hello", entity.config.message)
  end)

  it("requires message", function()
    local entity, err = validate({})
    assert.is_nil(entity)
    assert.same({ message = "required field missing" }, err.config)
  end)

  it("refuses a deny_status outside 400-599 (range from the Rust type)", function()
    local entity, err = validate({ message = "x", deny_status = 200 })
    assert.is_nil(entity)
    assert.matches("between 400 and 599", validator.messages(err.config), nil, true)
  end)

  it("refuses what the Rust constructor refuses", function()
    local entity, err = validate({ message = "" })
    assert.is_nil(entity)
    assert.matches("message must be non-empty", validator.messages(err), nil, true)
  end)
end)
