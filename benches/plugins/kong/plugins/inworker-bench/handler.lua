-- In-worker micro-benchmarks (benches/inworker/run): timed loops inside a
-- real access phase of the gateway, with the real PDK. A request with
-- header `x-inworker: 1` gets the results as JSON; others pass through.
--
-- Each figure is the median over `repeats` runs of `iterations` calls,
-- timed with os.clock (CPU time of the worker), in ns per call.

local cjson = require("cjson.safe")

local clock = os.clock
local sort = table.sort

local InWorkerBench = { PRIORITY = 2000, VERSION = "0.1.0" }


local function median_ns(repeats, iterations, run)
  local samples = {}
  for r = 1, repeats do
    local started = clock()
    run(iterations)
    samples[r] = (clock() - started) / iterations * 1e9
  end
  sort(samples)
  return samples[math.floor((repeats + 1) / 2)]
end


function InWorkerBench:access(conf)
  if kong.request.get_header("x-inworker") == nil then
    return
  end
  local n, repeats = conf.iterations, conf.repeats
  local native = require("kong_rs_plugins")
  local results = {}

  local function record(name, ns)
    results[#results + 1] = { name = name, ns = math.floor(ns * 10 + 0.5) / 10 }
  end

  -- Dispatch: Lua -> Rust -> Lua, empty handler.
  local empty = native.plugins["rs-bench-empty"].new({})
  local empty_access = empty.access
  record("dispatch: instance.access() of an empty Rust phase",
         median_ns(repeats, n, function(k) for _ = 1, k do empty_access() end end))

  -- The whole handler: instance cache hit + pcall + dispatch.
  local handler = require("kong.plugins.rs-bench-empty.handler")
  local empty_conf = {}
  handler:access(empty_conf)
  record("handler:access(conf): cache hit + pcall + dispatch",
         median_ns(repeats, n, function(k) for _ = 1, k do handler:access(empty_conf) end end))

  -- A Lua loop, for reference.
  record("baseline: empty Lua loop iteration",
         median_ns(repeats, n, function(k) for _ = 1, k do end end))

  -- PDK calls from Lua.
  local get_header = kong.request.get_header
  local set_header = kong.service.request.set_header
  local shared = kong.ctx.shared
  record("lua: kong.request.get_header",
         median_ns(repeats, n, function(k) for _ = 1, k do get_header("x-bench-a") end end))
  record("lua: kong.service.request.set_header",
         median_ns(repeats, n, function(k) for _ = 1, k do set_header("x-bench-set", "value") end end))
  record("lua: kong.ctx.shared set",
         median_ns(repeats, n, function(k) for _ = 1, k do kong.ctx.shared.bench = "value" end end))
  record("lua: kong.ctx.shared get",
         median_ns(repeats, n, function(k) local x for _ = 1, k do x = kong.ctx.shared.bench end return x end))
  shared.bench = nil

  -- The same calls from Rust: one dispatch runs `n` calls in a Rust loop.
  -- Deferred writes are applied as the glue applies them: their cost counts.
  local apply_actions = require("kong_rs.actions").apply
  local inworker = native.plugins["rs-inworker"]
  for _, op in ipairs({ "noop", "get_header", "set_header", "ctx_set", "ctx_get" }) do
    local instance = assert(inworker.new({ op = op, iterations = n }))
    local run = instance.access
    record("rust: " .. op, median_ns(repeats, 1, function()
      local actions, failed, err = run()
      if failed == false then error(err) end
      if actions then apply_actions(actions) end
    end) / n)
  end

  return kong.response.exit(200, cjson.encode({ iterations = n, repeats = repeats, results = results }),
                            { ["content-type"] = "application/json" })
end


return InWorkerBench
