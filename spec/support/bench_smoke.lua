-- What the benchmark smoke specs (spec/benches/*_smoke_spec.lua) share:
-- run a benchmark script in its smoke mode, then check that its report names
-- every configuration, that its raw results were kept, and that it left
-- nothing running.
local assert = require "luassert"

local M = {}

local function has(cmd)
  local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
  return r == 0 or r == true
end

--- The first of `tools` that is not installed, or nil.
function M.missing_tool(tools)
  for _, tool in ipairs(tools) do
    if not has(tool) then
      return tool
    end
  end
end

--- Runs `command` with `--results <a new temporary path>`; returns its
-- output, its exit status and that path (remove it with M.remove).
function M.run(command)
  local results = os.tmpname()
  os.remove(results)
  local p = assert(io.popen(command .. " --results '" .. results .. "' 2>&1; echo \"EXIT:$?\""))
  local output = p:read("*a")
  p:close()
  return output, tonumber(output:match("EXIT:(%d+)%s*$")), results
end

function M.remove(results)
  if results then
    os.execute("rm -rf '" .. results .. "'")
  end
end

--- Every configuration has a report line with a positive req/s.
function M.assert_reported(output, configs)
  for _, name in ipairs(configs) do
    local rps = output:match("\n| " .. name:gsub("%-", "%%-") .. " | ([%d.]+) |")
    assert.is_truthy(rps, "no report line for " .. name .. "\n" .. output)
    assert.is_true(tonumber(rps) > 0, name .. ": " .. rps)
  end
end

--- The raw numbers are kept: a .tsv and a .md in `results`.
function M.assert_results_kept(results)
  local p = io.popen("ls '" .. results .. "'")
  local files = p:read("*a")
  p:close()
  assert.matches("%.tsv", files)
  assert.matches("%.md", files)
end

--- No process of the run's temporary prefix (printed as "prefix <path>",
-- `prefix_pattern` matching the path) is left, and the prefix is gone.
function M.assert_nothing_left(output, prefix_pattern)
  local prefix = output:match("prefix (" .. prefix_pattern .. ")")
  assert.is_truthy(prefix, output)
  local p = io.popen("ps -eo args | grep -F '" .. prefix .. "' | grep -v grep")
  local left = p:read("*a")
  p:close()
  assert.equals("", left)
  assert.is_falsy(io.open(prefix .. "/nginx.conf", "r"))
end

return M
