-- CRUD over the in-memory configuration state, with Kong's validation and
-- error shapes (kong/db/dao/init.lua, kong/db/errors.lua). Pure Lua; the
-- caller (store.lua) serialises writes and persists the result.
local schema = require "kong_rs_gateway.schema"
local entities = require "kong_rs_gateway.entities"
local plugins = require "kong_rs_gateway.plugins"
local json = require "kong_rs_gateway.json"

local type = type
local pairs = pairs
local ipairs = ipairs
local fmt = string.format
local concat = table.concat
local remove = table.remove

local null = json.null

local _M = {}

local function now()
  return ngx and ngx.time() or os.time()
end

local function is_uuid(s)
  return type(s) == "string" and #s == 36 and
    s:lower():match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end
_M.is_uuid = is_uuid

-- Error objects carry an HTTP status next to Kong's body.
local function fail(status, body)
  return nil, { status = status, body = body }
end

local function violation(errors)
  return fail(400, schema.schema_violation(errors))
end

local function lua_literal(v)
  if v == null or v == nil then return "null" end
  if type(v) == "string" then return fmt("%q", v) end
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. lua_literal(v[k]) end
    return "{" .. concat(parts, ",") .. "}"
  end
  return tostring(v)
end

local function unique_violation(fields)
  return fail(409, {
    code = 5, name = "unique constraint violation",
    message = fmt("UNIQUE violation detected on '%s'", lua_literal(fields)),
    fields = fields,
  })
end

function _M.not_found()
  return fail(404, { message = "Not found" })
end

-- plugins_rev counts plugin writes: Kong rebuilds its plugins iterator,
-- and so every plugin's conf table, on any plugin CRUD event (kong/runloop/
-- events.lua crud_plugins_handler), cascaded deletes included. ws_id stands
-- for Kong's default workspace id (conf.__ws_id, the end of conf.__key__).
function _M.new_state()
  return { services = {}, routes = {}, consumers = {}, plugins = {}, seq = {}, next_seq = 1,
           plugins_rev = 0, ws_id = schema.uuid() }
end

-- The entity types, in the order their references allow them to be loaded.
local ETYPES = { "services", "routes", "consumers", "plugins" }
_M.ETYPES = ETYPES

-- Kong's endpoint_key of each schema: /services/{id|name},
-- /consumers/{id|username}; plugins only by id.
local ENDPOINT_KEY = { services = "name", routes = "name", consumers = "username" }
_M.ENDPOINT_KEY = ENDPOINT_KEY

--- Find an entity by id, or by its endpoint key (name, username): a key
-- that is a uuid is looked up as an id only, as Kong's endpoints do.
function _M.find(state, etype, key)
  local list = state[etype]
  if type(key) ~= "string" or not list then
    return nil
  end
  local by_id = is_uuid(key)
  local ekey = ENDPOINT_KEY[etype]
  for i, e in ipairs(list) do
    if (by_id and e.id == key:lower()) or (not by_id and ekey and e[ekey] == key) then
      return e, i
    end
  end
  return nil
end

--- Find by another unique field (consumers' custom_id).
function _M.find_by(state, etype, field, value)
  for i, e in ipairs(state[etype] or {}) do
    if e[field] == value then
      return e, i
    end
  end
  return nil
end

local function bump_plugins(state)
  state.plugins_rev = (state.plugins_rev or 0) + 1
end

local function bump(state, e, etype)
  state.seq[e.id] = state.next_seq
  state.next_seq = state.next_seq + 1
  if etype == "plugins" then
    bump_plugins(state)
  end
end

-- Resolve a foreign reference given as {id=...} or {name=...} to {id=...}.
local function resolve_foreign(state, field, ref, target)
  if ref == nil or ref == null then
    return null
  end
  local key = ref.id or ref[ENDPOINT_KEY[target] or "name"]
  local found = _M.find(state, target, key)
  if not found then
    return nil, {
      code = 4, name = "foreign key violation",
      message = fmt("the foreign key '%s' does not reference an existing '%s' entity.",
                    lua_literal(ref), target),
      fields = { [field] = ref },
    }
  end
  return { id = found.id }
end

local definitions = { services = entities.services, routes = entities.routes,
                      consumers = entities.consumers }

-- The unique fields of each entity type (besides id).
local UNIQUE = { services = { "name" }, routes = { "name" }, consumers = { "username", "custom_id" } }

-- Validate a full entity (after defaults/merge) for its type.
local function validate(state, etype, e, self_id, updating)
  local def = definitions[etype]
  local processed, errs
  if etype == "plugins" then
    if type(e.name) ~= "string" then
      return violation({ name = schema.errors.REQUIRED })
    end
    local p = plugins.get(e.name)
    if not p then
      return violation({ name = fmt("plugin '%s' not enabled; add it to the 'plugins' configuration property", e.name) })
    end
    processed, errs = schema.process_plugin_entity(p.schema, e)
  else
    processed = schema.fill_record(def, e)
    local ok
    ok, errs = schema.validate_record(def, processed)
    if ok and etype == "routes" then
      ok, errs = entities.check_route(processed)
    elseif etype == "consumers" then
      -- at_least_one_of runs with invalid fields too (Kong's entity checker
      -- run_with_invalid_fields): its error joins the fields' errors
      local cok, cerrs = entities.check_consumer(processed, updating)
      if not cok then
        errs = errs or {}
        errs["@entity"] = cerrs["@entity"]
        ok = false
      end
    end
    if not ok then
      processed = nil
    end
  end
  if not processed then
    return violation(errs)
  end

  -- foreign keys
  local fks = etype == "routes" and { service = "services" }
           or etype == "plugins" and { service = "services", route = "routes", consumer = "consumers" }
           or {}
  for field, target in pairs(fks) do
    if processed[field] ~= null and processed[field] ~= nil then
      local ref, err = resolve_foreign(state, field, processed[field], target)
      if not ref then
        return fail(400, err)
      end
      processed[field] = ref
    end
  end

  -- uniqueness
  if etype ~= "plugins" then
    for _, ufield in ipairs(UNIQUE[etype]) do
      local v = processed[ufield]
      if v ~= null and v ~= nil then
        for _, other in ipairs(state[etype]) do
          if other.id ~= self_id and other[ufield] == v then
            return unique_violation({ [ufield] = v })
          end
        end
      end
    end
  else
    -- kong/db/schema/entities/plugins.lua cache_key: name, route, service, consumer
    local function fk(v) return v ~= null and v.id or null end
    for _, other in ipairs(state.plugins) do
      if other.id ~= self_id and other.name == processed.name
         and fk(other.route) == fk(processed.route)
         and fk(other.service) == fk(processed.service)
         and fk(other.consumer) == fk(processed.consumer) then
        return unique_violation({
          name = processed.name,
          consumer = processed.consumer ~= null and processed.consumer or null,
          route = processed.route ~= null and processed.route or null,
          service = processed.service ~= null and processed.service or null,
        })
      end
    end
  end
  return processed
end

local function prepare_input(etype, input)
  if type(input) ~= "table" or json.is_array(input) then
    return nil, { status = 400, body = { message = "Cannot parse JSON body" } }
  end
  if etype == "services" then
    local ok, errs = entities.expand_service_url(input)
    if not ok then
      return violation(errs)
    end
  end
  return input
end

--- Insert; `input` is a decoded body. Returns the entity or nil, err.
function _M.insert(state, etype, input, id)
  local e, err = prepare_input(etype, input)
  if not e then return nil, err end
  if e.id ~= nil and e.id ~= null then
    if not is_uuid(e.id) then
      return violation({ id = schema.errors.UUID })
    end
    if _M.find(state, etype, e.id) then
      return fail(400, { code = 3, name = "primary key violation",
                         message = fmt("primary key violation on key '{id=%q}'", e.id),
                         fields = { id = e.id } })
    end
  end
  e.id = (id or (e.id ~= null and e.id) or schema.uuid()):lower()
  local t = now()
  e.created_at = t
  e.updated_at = t
  local processed
  processed, err = validate(state, etype, e)
  if not processed then return nil, err end
  local list = state[etype]
  list[#list + 1] = processed
  bump(state, processed, etype)
  return processed
end

--- PATCH: merge records, replace the rest, validate the whole.
function _M.update(state, etype, entity, patch)
  local p, err = prepare_input(etype, patch)
  if not p then return nil, err end
  p.id, p.created_at = nil, nil
  local def = etype == "plugins" and schema.plugin_entity_def(plugins.get(entity.name).schema)
              or definitions[etype]
  if p.name ~= nil and etype == "plugins" and p.name ~= entity.name then
    -- a different plugin: validate against its own schema from scratch
    def = nil
  end
  local merged = schema.merge(def, entity, p)
  merged.id = entity.id
  merged.created_at = entity.created_at
  merged.updated_at = now()
  local processed
  processed, err = validate(state, etype, merged, entity.id, true)
  if not processed then return nil, err end
  local _, i = _M.find(state, etype, entity.id)
  state[etype][i] = processed
  bump(state, processed, etype)
  return processed
end

--- PUT: replace (or create) the entity named/identified by `key`.
function _M.upsert(state, etype, key, input, nested)
  local e, err = prepare_input(etype, input)
  if not e then return nil, err end
  local existing = _M.find(state, etype, key)
  if nested then
    for k, v in pairs(nested) do e[k] = v end
  end
  if existing then
    e.id = existing.id
    e.created_at = existing.created_at
    e.updated_at = now()
    local ekey = ENDPOINT_KEY[etype]
    if ekey and not is_uuid(key) and (e[ekey] == nil or e[ekey] == null) then
      e[ekey] = key
    end
    local processed
    processed, err = validate(state, etype, e, existing.id)
    if not processed then return nil, err end
    local _, i = _M.find(state, etype, existing.id)
    state[etype][i] = processed
    bump(state, processed, etype)
    return processed
  end
  if is_uuid(key) then
    e.id = key
    return _M.insert(state, etype, e, key:lower())
  end
  if etype == "plugins" then
    return violation({ id = schema.errors.UUID })
  end
  local ekey = ENDPOINT_KEY[etype]
  e[ekey] = e[ekey] ~= nil and e[ekey] ~= null and e[ekey] or key
  return _M.insert(state, etype, e)
end

local function refs(entity, field, id)
  local v = entity[field]
  return type(v) == "table" and v.id == id
end

--- DELETE; cascades plugins; refuses a service still used by routes.
function _M.delete(state, etype, entity)
  if etype == "services" then
    for _, r in ipairs(state.routes) do
      if refs(r, "service", entity.id) then
        return fail(400, { code = 4, name = "foreign key violation",
                           message = "an existing 'routes' entity references this 'services' entity",
                           fields = { ["@referenced_by"] = "routes" } })
      end
    end
  end
  -- plugins.route/service/consumer are on_delete = "cascade"
  local field = etype == "services" and "service" or etype == "routes" and "route"
                or etype == "consumers" and "consumer"
  if field then
    for i = #state.plugins, 1, -1 do
      if refs(state.plugins[i], field, entity.id) then
        state.seq[state.plugins[i].id] = nil
        remove(state.plugins, i)
        bump_plugins(state)
      end
    end
  end
  local _, i = _M.find(state, etype, entity.id)
  if i then
    remove(state[etype], i)
    state.seq[entity.id] = nil
    if etype == "plugins" then
      bump_plugins(state)
    end
  end
  return true
end

--- Entities of a type, optionally filtered by a foreign key.
function _M.list(state, etype, field, id)
  local out = json.array()
  for _, e in ipairs(state[etype]) do
    if not field or refs(e, field, id) then
      out[#out + 1] = e
    end
  end
  return out
end

--- Re-mark arrays after a JSON round trip (empty arrays decode as {}).
function _M.normalize(state)
  for _, etype in ipairs(ETYPES) do
    local list = state[etype] or {}
    state[etype] = list
    for i, e in ipairs(list) do
      local def = definitions[etype]
      if etype == "plugins" then
        local p = plugins.get(e.name)
        def = p and schema.plugin_entity_def(p.schema)
      end
      if def then
        list[i] = schema.fill_record(def, e)
      end
    end
  end
  state.seq = state.seq or {}
  state.next_seq = state.next_seq or 1
  state.plugins_rev = state.plugins_rev or 0
  return state
end

--- Validate a whole state (used at start): true or nil, message.
function _M.check_state(state)
  local fresh = _M.new_state()
  for _, etype in ipairs(ETYPES) do
    for _, e in ipairs(state[etype]) do
      local copy = schema.deepcopy(e)
      local created, updated = copy.created_at, copy.updated_at
      local ok, err = _M.insert(fresh, etype, copy, copy.id)
      if not ok then
        return nil, fmt("invalid %s entity %s: %s", etype, tostring(e.id or e.name),
                        err.body.message or "error")
      end
      ok.created_at = created ~= null and created or ok.created_at
      ok.updated_at = updated ~= null and updated or ok.updated_at
    end
  end
  fresh.seq = state.seq or fresh.seq
  fresh.next_seq = math.max(state.next_seq or 1, fresh.next_seq)
  fresh.ws_id = is_uuid(state.ws_id) and state.ws_id or fresh.ws_id
  return fresh
end

return _M
