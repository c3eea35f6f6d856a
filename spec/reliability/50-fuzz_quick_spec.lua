-- The quick, bounded fuzz run (issue 4) in the test flow: the same target
-- functions libFuzzer drives (fuzz/src/lib.rs), over the seed corpus and
-- fixed-seed generated inputs, as a plain stable `cargo test`
-- (fuzz/tests/quick.rs). The long coverage-guided run is reliability/fuzz.
local S = require "spec.reliability.support"

describe("reliability: fuzz targets, quick bounded run", function()
  it("every target survives its corpus and 100,000 generated inputs, every branch reached", function()
    local cmd = "cd '" .. S.ROOT .. "' && RUST_BACKTRACE=0 cargo test -q --manifest-path fuzz/Cargo.toml"
                .. " --release --test quick -- --nocapture 2>&1; echo __rc=$?"
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("__rc=(%d+)%s*$"))
    assert.equal(0, rc, out:sub(-4000))
    for _, target in ipairs({ "config_hello", "config_file_log", "request_hello", "request_file_log", "request_json", "jwt_token" }) do
      assert.matches("fuzz quick: " .. target .. ": %d+ corpus %+ %d+ generated inputs, no crash", out)
    end
    -- shown in the busted output, for the record
    for line in out:gmatch("fuzz quick: [^\n]+") do
      io.stdout:write("\n    ", line)
    end
    io.stdout:write("\n")
  end)
end)
