-- Consumers through the Admin API: Kong's shapes and errors
-- (kong/db/schema/entities/consumers.lua, kong/api/routes/consumers.lua,
-- kong/api/endpoints.lua, kong/db/errors.lua), consumer-scoped plugins,
-- persistence and declarative configuration. Written to pass unchanged on
-- Kong 3.9.3 (Pongo) and on kong-rs-gateway.
local h = require "spec.support.helpers"
local cjson = require "cjson.safe"

local null = cjson.null
local PLUGINS = { "prio-low", "prio-high", "lua-auth-probe" }

local function is_uuid(s)
  return type(s) == "string" and s:match("^%x+%-%x+%-%x+%-%x+%-%x+$") ~= nil and #s == 36
end

describe("consumers Admin API", function()
  local admin

  lazy_setup(function()
    h.start({ plugins = PLUGINS })
    admin = h.admin()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  it("POST creates a consumer with Kong's shape, GET finds it by id and by username", function()
    local res = admin:post("/consumers", { username = "bob", tags = { "t1" } })
    h.res_status(201, res)
    local bob = res.json
    assert.is_true(is_uuid(bob.id))
    assert.equal("bob", bob.username)
    assert.equal(null, bob.custom_id)
    assert.same({ "t1" }, bob.tags)
    assert.is_number(bob.created_at)
    assert.is_number(bob.updated_at)
    local keys = {}
    for k in pairs(bob) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "created_at", "custom_id", "id", "tags", "updated_at", "username" }, keys)

    assert.same(bob, admin:get("/consumers/bob").json)
    assert.same(bob, admin:get("/consumers/" .. bob.id).json)
    h.res_status(404, admin:get("/consumers/nobody"))
    assert.same({ message = "Not found" }, admin:get("/consumers/00000000-0000-4000-8000-000000000000").json)
    h.res_status(204, admin:delete("/consumers/bob"))
  end)

  it("requires a username or a custom_id, with Kong's messages", function()
    local res = admin:post("/consumers", {})
    h.res_status(400, res)
    assert.same({
      code = 2,
      name = "schema violation",
      message = "schema violation (at least one of these fields must be non-empty: 'custom_id', 'username')",
      fields = { ["@entity"] = { "at least one of these fields must be non-empty: 'custom_id', 'username'" } },
    }, res.json)

    res = admin:post("/consumers", { username = "" })
    h.res_status(400, res)
    assert.equal("2 schema violations (at least one of these fields must be non-empty: 'custom_id', 'username'; " ..
                 "username: length must be at least 1)", res.json.message)

    res = admin:post("/consumers", { username = "x", foo = 1 })
    h.res_status(400, res)
    assert.same({ foo = "unknown field" }, res.json.fields)

    -- custom_id alone is enough
    res = admin:post("/consumers", { custom_id = "only-custom" })
    h.res_status(201, res)
    assert.equal(null, res.json.username)
    h.res_status(204, admin:delete("/consumers/" .. res.json.id))
  end)

  it("keeps username and custom_id unique (409)", function()
    local a = admin:post("/consumers", { username = "uniq", custom_id = "uniq-c" }).json
    local res = admin:post("/consumers", { username = "uniq" })
    h.res_status(409, res)
    assert.same({
      code = 5,
      name = "unique constraint violation",
      message = "UNIQUE violation detected on '{username=\"uniq\"}'",
      fields = { username = "uniq" },
    }, res.json)
    res = admin:post("/consumers", { username = "other", custom_id = "uniq-c" })
    h.res_status(409, res)
    assert.same({ custom_id = "uniq-c" }, res.json.fields)
    -- a PATCH onto another consumer's username too
    local b = admin:post("/consumers", { username = "uniq2" }).json
    h.res_status(409, admin:patch("/consumers/" .. b.id, { username = "uniq" }))
    h.res_status(204, admin:delete("/consumers/" .. a.id))
    h.res_status(204, admin:delete("/consumers/" .. b.id))
  end)

  it("GET /consumers?custom_id= searches by custom_id", function()
    local c = admin:post("/consumers", { custom_id = "find-me" }).json
    local res = admin:get("/consumers?custom_id=find-me")
    h.res_status(200, res)
    assert.equal(1, #res.json.data)
    assert.equal(c.id, res.json.data[1].id)
    assert.equal(null, res.json.next)
    res = admin:get("/consumers?custom_id=nobody")
    h.res_status(200, res)
    assert.equal(0, #res.json.data)
    res = admin:get("/consumers?custom_id=")
    h.res_status(400, res)
    assert.same({ message = "custom_id must be an unempty string" }, res.json)
    h.res_status(204, admin:delete("/consumers/" .. c.id))
  end)

  it("lists with paging (size, offset)", function()
    local ids = {}
    for i = 1, 5 do
      ids[admin:post("/consumers", { username = "page-" .. i }).json.id] = true
    end
    local seen, offset, pages = {}, nil, 0
    repeat
      local res = admin:send({ method = "GET", path = "/consumers", query = { size = 2, offset = offset } })
      h.res_status(200, res)
      assert.is_true(#res.json.data <= 2)
      for _, c in ipairs(res.json.data) do
        assert.is_nil(seen[c.id])
        seen[c.id] = true
      end
      offset = res.json.offset
      pages = pages + 1
    until offset == nil or pages > 10
    assert.same(ids, seen)
    assert.is_true(pages >= 3)
    for id in pairs(ids) do
      h.res_status(204, admin:delete("/consumers/" .. id))
    end
  end)

  it("PATCH merges, PUT upserts by id or username, DELETE answers 204", function()
    local c = admin:post("/consumers", { username = "pat", tags = { "a" } }).json
    local res = admin:patch("/consumers/pat", { custom_id = "pat-c" })
    h.res_status(200, res)
    assert.equal("pat", res.json.username)
    assert.equal("pat-c", res.json.custom_id)
    assert.same({ "a" }, res.json.tags)
    assert.equal(c.id, res.json.id)
    assert.equal(c.created_at, res.json.created_at)

    res = admin:patch("/consumers/" .. c.id, { username = null, custom_id = null })
    h.res_status(400, res)
    assert.equal("schema violation (when updating, at least one of these fields must be non-empty: " ..
                 "'custom_id', 'username')", res.json.message)
    h.res_status(404, admin:patch("/consumers/nobody", { custom_id = "x" }))

    -- PUT by username: created with that username, then replaced
    res = admin:put("/consumers/putter", {})
    h.res_status(200, res)
    assert.equal("putter", res.json.username)
    local putter = res.json
    res = admin:put("/consumers/putter", { custom_id = "put-c" })
    h.res_status(200, res)
    assert.equal("putter", res.json.username)
    assert.equal("put-c", res.json.custom_id)
    assert.equal(putter.id, admin:get("/consumers/putter").json.id)

    -- PUT by id
    local id = "5b6a7c8d-1111-4222-8333-444455556666"
    res = admin:put("/consumers/" .. id, { username = "by-id" })
    h.res_status(200, res)
    assert.equal(id, res.json.id)
    res = admin:put("/consumers/" .. id, { custom_id = "by-id-c" })
    h.res_status(200, res)
    assert.equal(null, res.json.username) -- replaced, not merged
    res = admin:put("/consumers/" .. id, {})
    h.res_status(400, res)
    assert.equal("schema violation (at least one of these fields must be non-empty: 'custom_id', 'username')",
                 res.json.message)

    for _, key in ipairs({ "pat", "putter", id }) do
      h.res_status(204, admin:delete("/consumers/" .. key))
      h.res_status(404, admin:get("/consumers/" .. key))
    end
    h.res_status(204, admin:delete("/consumers/pat"))
  end)

  it("/consumers/{id|username}/plugins: plugins configured for a consumer", function()
    local alice = admin:post("/consumers", { username = "alice" }).json
    local carl = admin:post("/consumers", { username = "carl" }).json
    local res = admin:post("/consumers/alice/plugins", { name = "prio-low", config = { tag = "alice" } })
    h.res_status(201, res)
    local p = res.json
    assert.same({ id = alice.id }, p.consumer)
    assert.equal(null, p.route)
    assert.equal(null, p.service)

    res = admin:get("/consumers/" .. alice.id .. "/plugins")
    h.res_status(200, res)
    assert.equal(1, #res.json.data)
    assert.equal(p.id, res.json.data[1].id)
    assert.equal(0, #admin:get("/consumers/carl/plugins").json.data)
    assert.equal(p.id, admin:get("/consumers/alice/plugins/" .. p.id).json.id)
    h.res_status(404, admin:get("/consumers/carl/plugins/" .. p.id))
    h.res_status(404, admin:get("/consumers/nobody/plugins"))
    h.res_status(404, admin:post("/consumers/nobody/plugins", { name = "prio-low" }))

    res = admin:patch("/consumers/alice/plugins/" .. p.id, { config = { tag = "alice2" } })
    h.res_status(200, res)
    assert.equal("alice2", res.json.config.tag)
    assert.same({ id = alice.id }, res.json.consumer)

    -- one plugin of a name per consumer (and route/service)
    res = admin:post("/plugins", { name = "prio-low", consumer = { id = alice.id } })
    h.res_status(409, res)
    assert.equal("unique constraint violation", res.json.name)
    assert.same({ id = alice.id }, res.json.fields.consumer)
    -- the same plugin for another consumer is fine
    h.res_status(201, admin:post("/plugins", { name = "prio-low", consumer = { id = carl.id } }))

    -- an unknown consumer
    local ghost = "00000000-0000-4000-8000-0000000000aa"
    res = admin:post("/plugins", { name = "prio-low", consumer = { id = ghost } })
    h.res_status(400, res)
    assert.equal("foreign key violation", res.json.name)
    assert.equal("the foreign key '{id=\"" .. ghost .. "\"}' does not reference an existing 'consumers' entity.",
                 res.json.message)

    -- a plugin whose schema says no_consumer
    res = admin:post("/consumers/alice/plugins", { name = "lua-auth-probe" })
    h.res_status(400, res)
    assert.equal("schema violation (consumer: value must be null)", res.json.message)

    -- deleting a consumer deletes its plugins (on_delete = "cascade")
    h.res_status(204, admin:delete("/consumers/alice"))
    h.res_status(404, admin:get("/plugins/" .. p.id))
    h.res_status(204, admin:delete("/consumers/carl"))
    assert.equal(0, #admin:get("/plugins").json.data)
  end)
end)

describe("consumers storage", function()
  after_each(function()
    h.stop()
  end)

  it("survive a restart, with the plugins configured for them", function()
    h.start({ plugins = PLUGINS })
    local admin = h.admin()
    local dora = admin:post("/consumers", { username = "dora", custom_id = "d-1" }).json
    local p = admin:post("/consumers/dora/plugins", { name = "prio-low", config = { tag = "dora" } }).json
    h.restart()
    admin = h.admin()
    assert.same(dora, admin:get("/consumers/dora").json)
    local p2 = admin:get("/plugins/" .. p.id).json
    assert.same({ id = dora.id }, p2.consumer)
    assert.equal("dora", p2.config.tag)
  end)

  it("come from a declarative file, with nested plugins and plugins naming them", function()
    -- Kong reads a declarative file by its extension (.json or .yaml)
    local tmp = os.tmpname()
    local file = tmp .. ".json"
    finally(function() os.remove(tmp); os.remove(file) end)
    local f = assert(io.open(file, "w"))
    f:write([[{
      "_format_version": "3.0",
      "consumers": [
        { "username": "decl-a", "custom_id": "da",
          "plugins": [ { "name": "prio-low", "config": { "tag": "decl-a" } } ] },
        { "username": "decl-b" }
      ],
      "plugins": [ { "name": "prio-high", "consumer": "decl-b", "config": { "tag": "decl-b" } } ]
    }]])
    f:close()
    h.start({ plugins = PLUGINS, declarative = file })
    local admin = h.admin()
    local a = admin:get("/consumers/decl-a").json
    assert.equal("da", a.custom_id)
    local b = admin:get("/consumers/decl-b").json
    assert.is_true(is_uuid(b.id))
    local pa = admin:get("/consumers/decl-a/plugins").json.data
    assert.equal(1, #pa)
    assert.equal("decl-a", pa[1].config.tag)
    local pb = admin:get("/consumers/decl-b/plugins").json.data
    assert.equal(1, #pb)
    assert.equal("prio-high", pb[1].name)
    assert.same({ id = b.id }, pb[1].consumer)
  end)
end)
