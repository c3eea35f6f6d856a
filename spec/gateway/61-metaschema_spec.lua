-- The gateway's port of Kong's plugin metaschema (kong/db/schema/
-- metaschema.lua MetaSubSchema), outside nginx: what it accepts and the
-- errors it gives, shaped as Kong's.
local h = require "spec.support.helpers"

if h.skip_on_kong("gateway metaschema", "gateway only: a module of the gateway, no server") then
  return
end

local metaschema = require "kong_rs_gateway.metaschema"

local function plugin(config_fields, extra)
  local def = { name = "p", fields = { { config = { type = "record", fields = config_fields } } } }
  for k, v in pairs(extra or {}) do def[k] = v end
  return def
end

local function errors_of(def)
  local ok, errors = metaschema.validate_subschema(def)
  assert.is_nil(ok)
  return errors
end

describe("gateway metaschema", function()
  it("accepts the fixture schemas and a schema using every kind of attribute", function()
    for _, name in ipairs({ "echo-conf", "pdk-probe", "lua-header-ops", "resp-phase" }) do
      assert.is_true(metaschema.validate_subschema(require("kong.plugins." .. name .. ".schema")), name)
    end
    assert.is_true(metaschema.validate_subschema(plugin({
      { a = { type = "string", description = "ten bytes!", default = "x", one_of = { "x", "y" },
              len_min = 1, len_max = 5, match = "^%a$", referenceable = true } },
      { b = { type = "integer", between = { 1, 9 }, default = 3 } },
      { c = { type = "array", elements = { type = "string" }, default = {} } },
      { d = { type = "map", keys = { type = "string" }, values = { type = "number", gt = 0 } } },
      { e = { type = "record", fields = { { f = { type = "boolean", required = true, default = false } } } } },
    }, { entity_checks = { { at_least_one_of = { "config.a", "config.b" } } } })))
  end)

  it("refuses descriptions outside 10..500 bytes", function()
    assert.same({ fields = { { fields = { { description = "length must be at least 10" } } } } },
                errors_of(plugin({ { a = { type = "string", description = "short" } } })))
    assert.same({ fields = { { fields = { { description = "length must be at most 500" } } } } },
                errors_of(plugin({ { a = { type = "string", description = string.rep("d", 501) } } })))
  end)

  it("refuses unknown attributes and unknown top-level keys", function()
    assert.same({ fields = { { fields = { { colour = "unknown field" } } } } },
                errors_of(plugin({ { a = { type = "string", colour = "red" } } })))
    assert.same({ version = "unknown field" }, errors_of(plugin({}, { version = "1.0" })))
  end)

  it("refuses attributes a type cannot have, and missing required ones", function()
    assert.same({ a = "field of type 'boolean' cannot have attribute 'one_of'" },
                errors_of(plugin({ { a = { type = "boolean", one_of = { true } } } })))
    assert.same({ a = "field of type 'array' must declare 'elements'" },
                errors_of(plugin({ { a = { type = "array" } } })))
    local errors = errors_of(plugin({ { a = { required = true } } }))
    assert.equal("missing type declaration", errors.a)
    assert.same({ { fields = { { type = "required field missing" } } } }, errors.fields)
  end)

  it("checks a default against its field, and the type of attributes", function()
    assert.same({ fields = { { fields = { { default = "expected a string" } } } } },
                errors_of(plugin({ { a = { type = "string", default = 5 } } })))
    assert.same({ fields = { { fields = { { required = "expected a boolean" } } } } },
                errors_of(plugin({ { a = { type = "string", required = "yes" } } })))
  end)

  it("needs a name and fields", function()
    local errors = errors_of({ fields = {} })
    assert.equal("field required for entity check", errors.name)
    errors = errors_of({ name = "p" })
    assert.equal("field required for entity check", errors.fields)
  end)

  it("allows one checker per entity check", function()
    local errors = errors_of(plugin({}, { entity_checks = {
      { at_least_one_of = { "config" }, only_one_of = { "config" } } } }))
    assert.matches("exactly one of these fields must be non-empty", errors.entity_checks[1]["@entity"][1], 1, true)
  end)
end)
