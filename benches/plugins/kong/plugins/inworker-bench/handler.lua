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
  -- `x-jit-log: /path` writes LuaJIT's trace log there (jit.v), to find aborts.
  local jit_log = kong.request.get_header("x-jit-log")
  if jit_log then
    package.path = package.path .. ";/usr/share/luajit-2.1/?.lua"
    require("jit.v").on(jit_log)
  end
  local n, repeats = conf.iterations, conf.repeats
  local native = require("kong_rs_test_plugins")
  local results = {}

  local function record(name, ns)
    results[#results + 1] = { name = name, ns = math.floor(ns * 10 + 0.5) / 10 }
  end

  -- Dispatch: Lua -> Rust -> Lua, empty handler.
  local empty_factory = native.plugins["rs-bench-empty"]
  local empty = empty_factory.new({})
  local empty_access, empty_id = empty_factory.access, empty.id
  record("dispatch: factory.access(id) of an empty Rust phase",
         median_ns(repeats, n, function(k) for _ = 1, k do empty_access(empty_id) end end))

  -- The whole handler: instance cache hit + pcall + dispatch (compiled;
  -- measured before the PDK loops below, whose many side traces can leave
  -- later loops uncompiled, and before the interpreted rows).
  local empty_conf = {}
  local mlua_empty = require("kong.plugins.rs-bench-empty.handler")
  mlua_empty:access(empty_conf)
  record("handler:access(conf): cache hit + mlua dispatch (rs-bench-empty)",
         median_ns(repeats, n, function(k) for _ = 1, k do mlua_empty:access(empty_conf) end end))

  local get_header_bench = kong.request.get_header
  -- The headers workload (3 header reads, 3 writes) on each path, writes applied.
  local apply_actions = require("kong_rs.actions").new(native.ops)
  local headers_factory = native.plugins["rs-bench-headers"]
  local headers_instance = headers_factory.new({})
  local headers_mlua, headers_id = headers_factory.access, headers_instance.id
  record("headers workload, mlua path (Rust calls kong.*)",
         median_ns(repeats, n / 10, function(k)
           for _ = 1, k do
             local actions = headers_mlua(headers_id)
             if actions then apply_actions(actions) end
           end
         end))
  local headers_conf = {}
  record("  piece: 3 x kong.request.get_header from Lua",
         median_ns(repeats, n / 10, function(k)
           for _ = 1, k do
             get_header_bench("x-bench-a"); get_header_bench("x-bench-b"); get_header_bench("x-bench-c")
           end
         end))
  local lua_headers = require("kong.plugins.lua-bench-headers.handler")
  record("headers workload, Lua twin (handler:access)",
         median_ns(repeats, n / 10, function(k)
           for _ = 1, k do lua_headers:access(headers_conf) end
         end))

  -- The same handlers with the JIT off: nginx enters each phase from C, so a
  -- real request path is not always compiled; this is the other bound.
  local mlua_handler = require("kong.plugins.rs-bench-empty.handler")
  local function interpreted(name, handler_to_run, conf, k_div)
    -- jit.off() alone keeps running traces already compiled: flush them too.
    jit.off()
    jit.flush()
    record(name, median_ns(repeats, n / k_div, function(k)
      for _ = 1, k do handler_to_run:access(conf) end
    end))
    jit.on()
  end
  -- The pieces of the interpreted mlua handler: the bare phase call, the
  -- same under pcall, and mlua's callback floor (a function with a trivial body).
  local function interpreted_loop(name, k_div, body)
    jit.off()
    jit.flush()
    record(name, median_ns(repeats, n / k_div, body))
    jit.on()
  end
  interpreted_loop("interpreted: factory.access(id), empty Rust phase", 10, function(k)
    for _ = 1, k do empty_access(empty_id) end
  end)
  interpreted_loop("interpreted: pcall(factory.access, id), empty Rust phase", 10, function(k)
    for _ = 1, k do pcall(empty_access, empty_id) end
  end)
  local direct_calls = native.direct_calls
  interpreted_loop("interpreted: mlua callback floor (native.direct_calls(true))", 10, function(k)
    for _ = 1, k do direct_calls(true) end
  end)
  local lua_empty_fn = function() end
  interpreted_loop("interpreted: empty Lua function call", 10, function(k)
    for _ = 1, k do lua_empty_fn() end
  end)
  interpreted("interpreted: rs-bench-empty handler:access, mlua path", mlua_handler, {}, 10)
  interpreted("interpreted: lua-bench-empty handler:access",
              require("kong.plugins.lua-bench-empty.handler"), {}, 10)
  local headers_mlua_handler = require("kong.plugins.rs-bench-headers.handler")
  interpreted("interpreted: headers workload, mlua path", headers_mlua_handler, {}, 10)
  -- Rust's header reads and writes through kong.* instead of straight
  -- through nginx.
  native.direct_calls(false)
  interpreted("interpreted: headers workload, mlua path, direct calls off",
              headers_mlua_handler, {}, 10)
  native.direct_calls(true)
  interpreted("interpreted: headers workload, Lua twin",
              require("kong.plugins.lua-bench-headers.handler"), {}, 10)

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
  local inworker = native.plugins["rs-inworker"]
  for _, op in ipairs({ "noop", "get_header", "set_header", "ctx_set", "ctx_get" }) do
    local instance = assert(inworker.new({ op = op, iterations = n }))
    local id = instance.id
    local run = function() return inworker.access(id) end
    record("rust: " .. op, median_ns(repeats, 1, function()
      local actions, failed, err = run()
      if failed == false then error(err) end
      if actions then apply_actions(actions) end
    end) / n)
    if op == "get_header" or op == "set_header" then
      -- the same calls through kong.* (direct calls off)
      assert(native.direct_calls(false), "direct nginx calls unavailable in the worker")
      record("rust: " .. op .. " via kong.* (direct calls off)", median_ns(repeats, 1, function()
        local actions, failed, err = run()
        if failed == false then error(err) end
        if actions then apply_actions(actions) end
      end) / n)
      native.direct_calls(true)
    end
  end

  return kong.response.exit(200, cjson.encode({ iterations = n, repeats = repeats, results = results }),
                            { ["content-type"] = "application/json" })
end


return InWorkerBench
