-- wrk script: counts responses that lack the expected header value (env
-- EXPECT_HEADER=name, EXPECT_VALUES=comma list of accepted values) or whose
-- status is not 2xx; prints "unexpected: N" and "checked: N" at the end.
local name = os.getenv("EXPECT_HEADER") or "X-Hello-From-Rust"
local accepted = {}
for v in (os.getenv("EXPECT_VALUES") or ""):gmatch("[^,]+") do accepted[v] = true end

local pattern = os.getenv("EXPECT_PATTERN")
local per_thread = tonumber(os.getenv("REQUESTS_PER_THREAD") or "")

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init() unexpected, checked, first_bad = 0, 0, "" end
function response(status, headers, body)
  checked = checked + 1
  local v = headers[name]
  if per_thread and checked >= per_thread then
    wrk.thread:stop()
  end
  if status < 200 or status > 299 or (next(accepted) and not accepted[v or ""])
     or (pattern and not (v or ""):match(pattern)) then
    unexpected = unexpected + 1
    if first_bad == "" then first_bad = status .. " " .. tostring(v) .. " " .. tostring(body):sub(1, 80) end
  end
end
function done()
  local u, c, bad = 0, 0, ""
  for _, t in ipairs(threads) do
    u = u + t:get("unexpected")
    c = c + t:get("checked")
    if bad == "" then bad = t:get("first_bad") end
  end
  io.write("unexpected: " .. u .. "\nchecked: " .. c .. "\nfirst_unexpected: " .. bad .. "\n")
end
