-- Kong's load-time rules for plugins (kong/db/dao/plugins.lua load_plugin,
-- kong/db/schema/plugin_loader.lua load_subschema with the metaschema of
-- kong/db/schema/metaschema.lua): a plugin that breaks one is not loaded and
-- Kong refuses to start, saying which plugin and why. Runs on both
-- backends: the messages are Kong's.
local h = require "spec.support.helpers"
local pretty = require("pl.pretty").write

local PREFIX = "error loading plugin schemas: on plugin '"

local function refused(plugin)
  local ok, err = h.try_start({ plugins = { plugin } })
  h.stop()
  assert.is_false(ok, plugin .. " was loaded")
  return err
end

describe("plugin loading (Kong's rules)", function()
  after_each(function()
    h.stop()
  end)

  it("refuses a plugin that implements both `response` and `header_filter`", function()
    local err = refused("bad-phases")
    assert.matches(PREFIX .. "bad-phases': Plugin \"bad-phases\" can't be loaded because it implements " ..
                   "both `response` and `header_filter` or `body_filter` methods.", err, 1, true)
  end)

  it("refuses a schema whose field description is shorter than 10 bytes", function()
    local err = refused("bad-description")
    local detail = pretty({ fields = { { description = "length must be at least 10" } } })
    -- (Kong puts the database strategy in front: "[postgres] schema violation")
    assert.matches(PREFIX .. "bad-description': ", err, 1, true)
    assert.matches("schema violation (fields.1: " .. detail .. ")", err, 1, true)
  end)

  it("refuses an attribute the field's type cannot have, and an unknown one", function()
    local err = refused("bad-attribute")
    local detail = pretty({ fields = { [2] = { flavour = "unknown field" } } })
    assert.matches(PREFIX .. "bad-attribute': ", err, 1, true)
    assert.matches("2 schema violations (fields.1: " .. detail ..
                   "; size: field of type 'string' cannot have attribute 'between')", err, 1, true)
  end)

  it("names every refused plugin at once", function()
    local ok, err = h.try_start({ plugins = { "bad-phases", "bad-description" } })
    h.stop()
    assert.is_false(ok)
    -- (Kong goes through a set of names: in no fixed order)
    assert.matches("on plugin 'bad-phases': ", err, 1, true)
    assert.matches("on plugin 'bad-description': ", err, 1, true)
    assert.matches("; on plugin '", err, 1, true)
  end)

  it("loads plugins that follow the rules (the bundled ones, fixtures with every phase)", function()
    assert.is_true((h.try_start({ plugins = { "bundled", "echo-conf", "resp-phase", "pdk-probe" } })))
  end)
end)
