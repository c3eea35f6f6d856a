-- rs-fault (test-only plugin): a Rust `Err` and a Rust panic in a real nginx
-- worker are each answered 500, logged with the plugin name, and the worker
-- lives on (same PIDs before and after).
local h = require "spec.support.helpers"

describe("rs-fault (integration)", function()
  local admin, proxy, plugin_id

  lazy_setup(function()
    h.start({ plugins = { "rs-fault" } })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "fault-svc", url = h.upstream_url() }))
    h.res_status(201, admin:post("/services/fault-svc/routes", { name = "fault", paths = { "/fault" } }))
    h.res_status(201, admin:post("/services/fault-svc/routes", { name = "healthy", paths = { "/healthy" } }))
    local res = admin:post("/routes/fault/plugins", { name = "rs-fault", config = { phase = "access", mode = "err" } })
    h.res_status(201, res)
    plugin_id = res.json.id
  end)

  lazy_teardown(function()
    h.stop()
  end)

  for _, mode in ipairs({ "err", "panic" }) do
    it("answers 500 when the Rust access handler fails (" .. mode .. ")", function()
      h.res_status(200, admin:patch("/plugins/" .. plugin_id, { config = { phase = "access", mode = mode } }))
      local workers = h.worker_pids()
      local log_before = #h.error_log()

      local got500 = 0
      for _ = 1, 20 do
        local res = proxy:get("/fault")
        if h.is_kong and res.status ~= 500 then
          h.sleep(0.1) -- config propagation under Kong
        else
          assert.equal(500, res.status, res.body)
          assert.same({ message = "An unexpected error occurred" }, res.json)
          got500 = got500 + 1
        end
      end
      assert.is_true(got500 > 0)

      local new_log
      h.wait_until(function()
        new_log = h.error_log():sub(log_before + 1)
        return new_log:find("rs-fault", 1, true) ~= nil
      end, 5)
      assert.matches("[error]", new_log, 1, true)

      -- the workers survived and still proxy
      h.res_status(200, proxy:get("/healthy"))
      assert.same(workers, h.worker_pids())
    end)
  end

  it("refuses a phase the plugin does not have with 400 (response is rs-fault-response's)", function()
    local res = admin:post("/plugins", { name = "rs-fault", config = { phase = "response", mode = "err" } })
    h.res_status(400, res)
    assert.matches("rs-fault has no response phase", res.body, 1, true)
  end)

  it("refuses an unknown mode with 400", function()
    local res = admin:post("/plugins", { name = "rs-fault", config = { phase = "access", mode = "explode" } })
    h.res_status(400, res)
  end)
end)
