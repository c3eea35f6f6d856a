-- Smoke run of the in-worker micro-benchmarks (benches/inworker/run): a few
-- thousand iterations, so the harness cannot rot. Figures are not checked
-- here (timing belongs in benchmarks), only that every one was produced.

local h = require "spec.support.helpers"

if h.skip_on_kong("in-worker benchmarks (smoke)", "gateway only: benches/inworker/run starts " ..
                  "its own kong-rs-gateway") then
  return
end

describe("in-worker benchmarks (smoke)", function()
  it("runs inside a real worker and reports every figure", function()
    local json = os.tmpname()
    local pipe = assert(io.popen("benches/inworker/run --smoke --json " .. json .. " 2>&1"))
    local output = pipe:read("*a")
    local ok, _, code = pipe:close()
    assert(ok == true or code == 0, output)

    local file = assert(io.open(json))
    local report = require("cjson").decode(file:read("*a"))
    file:close()
    os.remove(json)

    local names = {}
    for _, result in ipairs(report.results) do
      assert.is_number(result.ns, result.name)
      assert.is_true(result.ns >= 0, result.name)
      names[result.name] = true
    end
    for _, expected in ipairs({
      "dispatch: factory.access(id) of an empty Rust phase",
      "lua: kong.request.get_header",
      "rust: get_header",
      "rust: set_header",
      "rust: ctx_set",
      "rust: ctx_get",
    }) do
      assert.is_true(names[expected], expected)
    end
    assert.matches("ratio rust/lua get_header", output, nil, true)
  end)
end)
