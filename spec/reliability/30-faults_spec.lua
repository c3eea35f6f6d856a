-- Faults (issue 4): rs-fault (and rs-fault-response for the `response`
-- phase: Kong refuses one plugin with `response` and the filters) fails on
-- purpose in every phase, three ways
-- (a Rust Err, a Rust panic, a Lua error raised by a PDK call made from
-- Rust). Each is answered as Kong answers a failed plugin in that phase:
-- 500 where the response can still change, logged where it cannot; a
-- failure before the upstream call never lets the request through (the echo
-- upstream's hit counter does not move); the workers live on.
local h = require "spec.support.helpers"
local S = require "spec.reliability.support"

-- phase -> { status the client gets, whether the upstream was called }
local EXPECT = {
  rewrite       = { status = 500, upstream = false },
  access        = { status = 500, upstream = false },
  response      = { status = 500, upstream = true },
  header_filter = { status = 500, upstream = true },
  body_filter   = { status = 200, upstream = true },  -- headers already sent: logged only
  log           = { status = 200, upstream = true },  -- response already sent: logged only
}
local ORDER = { "rewrite", "access", "response", "header_filter", "body_filter", "log" }
local MODES = { "err", "panic", "pdk_error" }
local N = 6 -- requests per case (spread over both workers)

local function plugin_for(phase)
  return phase == "response" and "rs-fault-response" or "rs-fault"
end

describe("reliability: a failing plugin in every phase", function()
  local admin, proxy, workers

  lazy_setup(function()
    h.start({ plugins = { "rs-fault", "rs-fault-response" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "svc", url = h.upstream_url() }))
    -- Where the upstream must never be called: a closed port, so a request
    -- that got through would be a 502, not the plugin's 500 (on both
    -- backends; the gateway also counts the echo upstream's hits).
    h.res_status(201, admin:post("/services", { name = "closed", url = "http://127.0.0.1:1/" }))
    h.res_status(201, admin:post("/services/svc/routes", { name = "healthy", paths = { "/healthy" } }))
    for _, phase in ipairs(ORDER) do
      for _, mode in ipairs(MODES) do
        local name = phase .. "-" .. mode
        local service = EXPECT[phase].upstream and "svc" or "closed"
        h.res_status(201, admin:post("/services/" .. service .. "/routes", { name = name, paths = { "/" .. name } }))
        if phase ~= "rewrite" then
          h.res_status(201, admin:post("/routes/" .. name .. "/plugins",
                                       { name = plugin_for(phase), config = { phase = phase, mode = mode } }))
        end
      end
    end
    h.settle()
    workers = h.worker_pids()
  end)

  lazy_teardown(function()
    h.stop()
  end)

  for _, phase in ipairs(ORDER) do
    for _, mode in ipairs(MODES) do
      local expect = EXPECT[phase]
      it(phase .. " / " .. mode .. ": " .. expect.status .. (expect.upstream and "" or ", upstream never called") .. ", logged, workers alive", function()
        local global_id
        local function remove_global()
          if global_id then
            h.res_status(204, admin:delete("/plugins/" .. global_id))
            global_id = nil
            -- Kong's probe (h.settle) cannot pass a global failing plugin:
            -- wait for the healthy route instead
            h.wait_until(function() return proxy:get("/healthy").status == 200 end, 20)
          end
        end
        if phase == "rewrite" then
          -- rewrite runs global plugins only (as in Kong)
          local res = admin:post("/plugins", { name = "rs-fault", config = { phase = "rewrite", mode = mode } })
          h.res_status(201, res)
          global_id = res.json.id
          finally(remove_global) -- even when an assertion fails
          h.wait_until(function() return proxy:get("/" .. phase .. "-" .. mode).status == 500 end, 20)
        end
        local log_before = #h.error_log()
        local hits_before = not h.is_kong and S.upstream_hits(admin)
        for _ = 1, N do
          local res = proxy:get("/" .. phase .. "-" .. mode)
          assert.equal(expect.status, res.status, res.body)
          if expect.status == 500 then
            assert.same({ message = "An unexpected error occurred" }, res.json)
          end
        end
        if hits_before then
          local hits = S.upstream_hits(admin) - hits_before
          assert.equal(expect.upstream and N or 0, hits, "upstream calls")
        end

        local needle = "plugin " .. plugin_for(phase) .. " failed in " .. phase .. " phase: "
        local new_log
        h.wait_until(function()
          new_log = h.error_log():sub(log_before + 1)
          local count = select(2, new_log:gsub(needle:gsub("%p", "%%%0"), ""))
          return count >= N
        end, 5)
        if mode == "pdk_error" then
          -- the Lua error raised by kong.response.set_status(0) reached Rust as an Err
          assert.is_nil(new_log:find(needle .. "rs-fault: deliberate", 1, true), new_log)
          assert.truthy(new_log:find(needle .. "kong.response.set_status", 1, true), new_log)
        else
          assert.truthy(new_log:find(needle, 1, true) and
                        new_log:find("rs-fault: deliberate " .. (mode == "panic" and "panic" or "error") .. " in " .. phase, 1, true),
                        new_log)
        end
        remove_global()
        h.res_status(200, proxy:get("/healthy"))
        assert.same(workers, h.worker_pids())
        assert.falsy(S.log_has_death(h.error_log()))
      end)
    end
  end
end)
