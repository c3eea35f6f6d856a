local PLUGIN_NAME = "rs-hello"
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

  it("accepts a deny_status between 400 and 599", function()
    local entity, err = validate({ message = "no", deny_status = 403 })
    assert.is_nil(err)
    assert.equal(403, entity.config.deny_status)
  end)

  it("requires message", function()
    local entity, err = validate({})
    assert.is_nil(entity)
    assert.same({ message = "required field missing" }, err.config)
  end)

  it("refuses a deny_status outside 400-599 (range generated from the Rust type)", function()
    local entity, err = validate({ message = "x", deny_status = 200 })
    assert.is_nil(entity)
    assert.matches("between 400 and 599", validator.messages(err.config), nil, true)
  end)

  it("refuses a wrong type", function()
    local entity, err = validate({ message = 42 })
    assert.is_nil(entity)
    assert.matches("expected a string", validator.messages(err.config), nil, true)
  end)

  it("refuses unknown fields", function()
    local entity, err = validate({ message = "x", colour = "blue" })
    assert.is_nil(entity)
    assert.matches("unknown field", validator.messages(err.config), nil, true)
  end)

  it("refuses what the Rust constructor refuses, with its message", function()
    local entity, err = validate({ message = "a\r\nSet-Cookie: x=1" })
    assert.is_nil(entity)
    assert.matches("message must not contain CR or LF", validator.messages(err), nil, true)
  end)

  it("describes the fields from the Rust doc comments", function()
    local config
    for _, field in ipairs(schema_def.fields) do
      config = config or field.config
    end
    assert.equal("record", config.type)
    local message = config.fields[1].message
    assert.equal("string", message.type)
    assert.is_true(message.required)
    assert.matches("X-Hello-From-Rust", message.description, nil, true)
  end)
end)
