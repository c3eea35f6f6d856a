-- luajit benches/e2e/report.lua RAW.tsv
-- Turns the raw per-round wrk numbers written by benches/e2e/run into the
-- report: medians per configuration, the cost each plugin adds per request
-- (1/rps(plugin) - 1/rps(no plugin), from the medians), ratios, the issue 5
-- targets (PASS/MISS) and the raw req/s per round.
local path = assert(arg[1], "usage: report.lua RAW.tsv")

-- configuration order, workload and baseline (the no-plugin configuration
-- sending the same request)
local ORDER = {
  { "none", nil }, { "lua-empty", "none" }, { "rs-empty", "none" }, { "c-noop-empty", "none" },
  { "ps-empty", "none" },
  { "lua-headers", "none" }, { "rs-headers", "none" }, { "ps-headers", "none" },
  { "none-json", nil }, { "lua-json", "none-json" }, { "rs-json", "none-json" }, { "ps-json", "none-json" },
}

local header = {}
local rows = {}      -- config -> list of { round, rps, p50, p99 }
local by_round = {}  -- round -> config -> rps
local cpu_by_round = {}  -- round -> config -> CPU µs/request
local max_round = 0
for line in io.lines(path) do
  if line:sub(1, 1) == "#" then
    header[#header + 1] = line:sub(3)
  elseif not line:match("^round\t") and line ~= "" then
    local f = {}
    for field in line:gmatch("[^\t]+") do f[#f + 1] = field end
    local round, config = tonumber(f[1]), f[3]
    if round and config then
      local r = { round = round, rps = tonumber(f[4]), p50 = tonumber(f[5]), p99 = tonumber(f[6]),
                  cpu = f[10] and (tonumber(f[10]) + (tonumber(f[11]) or 0)) }
      rows[config] = rows[config] or {}
      table.insert(rows[config], r)
      by_round[round] = by_round[round] or {}
      by_round[round][config] = r.rps
      cpu_by_round[round] = cpu_by_round[round] or {}
      cpu_by_round[round][config] = r.cpu
      if round > max_round then max_round = round end
    end
  end
end

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local function column(config, field)
  local out = {}
  for i, r in ipairs(rows[config] or {}) do out[i] = r[field] end
  return out
end

local med = {}
for _, c in ipairs(ORDER) do
  local name = c[1]
  if rows[name] then
    med[name] = {
      rps = median(column(name, "rps")),
      p50 = median(column(name, "p50")),
      p99 = median(column(name, "p99")),
      cpu = median(column(name, "cpu")),
      n = #rows[name],
    }
  end
end

local function cost(name, base)
  if not (med[name] and med[base]) then return nil end
  return 1e6 / med[name].rps - 1e6 / med[base].rps
end

-- median over rounds of the per-round difference (same round, so the same
-- machine state): a second view, less sensitive to drift across the run
local function paired_cost(name, base)
  local d = {}
  for round = 1, max_round do
    local a, b = by_round[round] and by_round[round][name], by_round[round] and by_round[round][base]
    if a and b then d[#d + 1] = 1e6 / a - 1e6 / b end
  end
  return median(d)
end

-- the same for CPU µs/request
local function paired_cpu_cost(name, base)
  local d = {}
  for round = 1, max_round do
    local a, b = cpu_by_round[round] and cpu_by_round[round][name], cpu_by_round[round] and cpu_by_round[round][base]
    if a and b then d[#d + 1] = a - b end
  end
  return median(d)
end

local function f(v, fmt)
  if v == nil then return "n/a" end
  return string.format(fmt, v)
end

local out = {}
local function p(...) out[#out + 1] = table.concat({ ... }) end

p("## kong-rs end-to-end benchmark (benches/e2e/run)")
p("")
for _, h in ipairs(header) do p("- ", h) end
p("- ps-* = a model of the plugin-server mechanism (benches/plugin-server), not Kong's plugin server")
p("- cost = 1/rps(plugin) - 1/rps(no plugin) from the median req/s (µs per request);",
  " paired = median over rounds of the same difference within one round")
p("- CPU = CPU time per request of the nginx worker (it also serves the echo upstream;",
  " scheduler ns) plus the plugin server's (10 ms ticks); CPU cost = its difference to no",
  " plugin, paired = within each round. Less sensitive than req/s to other processes",
  " taking the CPU, not immune (shared caches)")
p("")
p("| config | req/s (median) | p50 µs | p99 µs | cost µs/req | cost paired | vs no plugin | CPU µs/req | CPU cost µs/req | CPU cost paired | rounds |")
p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, c in ipairs(ORDER) do
  local name, base = c[1], c[2]
  local m = med[name]
  if m then
    p("| ", name, " | ", f(m.rps, "%.0f"), " | ", f(m.p50, "%.0f"), " | ", f(m.p99, "%.0f"), " | ",
      base and f(cost(name, base), "%.2f") or "-", " | ",
      base and f(paired_cost(name, base), "%.2f") or "-", " | ",
      base and f(med[base] and m.rps / med[base].rps * 100, "%.1f%%") or "100%", " | ",
      f(m.cpu, "%.2f"), " | ",
      base and f(m.cpu and med[base] and med[base].cpu and m.cpu - med[base].cpu, "%.2f") or "-", " | ",
      base and f(paired_cpu_cost(name, base), "%.2f") or "-", " | ",
      m.n, " |")
  end
end

local function ratio(a, b)
  if a == nil or b == nil or b == 0 then return nil end
  return a / b
end

local function rps(name) return med[name] and med[name].rps end

p("")
p("Ratios:")
for _, w in ipairs({ { "empty", "none" }, { "headers", "none" }, { "json", "none-json" } }) do
  local wl, base = w[1], w[2]
  local lc, rc, pc = cost("lua-" .. wl, base), cost("rs-" .. wl, base), cost("ps-" .. wl, base)
  local cr = (lc and rc and lc > 0) and f(rc / lc, "%.2f") or "n/a (Lua cost <= 0, within noise)"
  p("- ", wl, ": cost rs/lua = ", cr,
    "; throughput rs/none = ", f(ratio(rps("rs-" .. wl), rps(base)), "%.3f"),
    ", rs/lua = ", f(ratio(rps("rs-" .. wl), rps("lua-" .. wl)), "%.3f"),
    ", rs/ps = ", f(ratio(rps("rs-" .. wl), rps("ps-" .. wl)), "%.2f"),
    "; cost µs lua ", f(lc, "%.2f"), ", rs ", f(rc, "%.2f"), ", ps ", f(pc, "%.2f"))
end

local function verdict(ok) if ok == nil then return "n/a " end return ok and "PASS" or "MISS" end

p("")
p("Targets (issue 5), from this run:")
local c_empty = cost("rs-empty", "none")
p("- ", verdict(c_empty and c_empty <= 0.3), " empty: rs adds <= 0.3 µs/request: ", f(c_empty, "%.2f"),
  " µs (worker CPU, paired: rs ", f(paired_cpu_cost("rs-empty", "none"), "%.2f"), ", lua ",
  f(paired_cpu_cost("lua-empty", "none"), "%.2f"), ", rs - lua ",
  f(paired_cpu_cost("rs-empty", "lua-empty"), "%.2f"), " µs)")
local h_none = ratio(rps("rs-headers"), rps("none"))
p("- ", verdict(h_none and h_none >= 0.95), " headers: rs >= 95% of no-plugin throughput: ",
  f(h_none and h_none * 100, "%.1f%%"))
local h_ps = ratio(rps("rs-headers"), rps("ps-headers"))
p("- ", verdict(h_ps and h_ps >= 3), " headers: rs >= 3x the plugin-server model's throughput: ",
  f(h_ps, "%.2fx"))
local jl, jr = cost("lua-json", "none-json"), cost("rs-json", "none-json")
local j_ok
if jl and jr then j_ok = jl > 0 and jr <= jl / 3 end
p("- ", verdict(j_ok), " json: rs adds <= 1/3 of the Lua plugin's cost: rs ", f(jr, "%.2f"),
  " µs vs lua ", f(jl, "%.2f"), " µs (", f(jl and jr and jl ~= 0 and jr / jl, "%.2f"), ")")

local nr = column("none", "rps")
if #nr >= 2 then
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(nr) do lo = math.min(lo, v); hi = math.max(hi, v) end
  local m = med.none.rps
  p("")
  p(string.format("Noise: no-plugin req/s over %d rounds %.0f..%.0f (%.1f%% .. +%.1f%% of the median);"
    .. " at %.0f req/s, 1%% of throughput is %.2f µs/request.",
    #nr, lo, hi, (lo / m - 1) * 100, (hi / m - 1) * 100, m, 1e6 / m * 0.01))
end

p("")
p("Raw req/s per round (each round measures every configuration once, rotated order):")
p("")
local head = { "| round |" }
local sep = { "|---:|" }
for _, c in ipairs(ORDER) do
  if rows[c[1]] then head[#head + 1] = " " .. c[1] .. " |"; sep[#sep + 1] = "---:|" end
end
p(table.concat(head))
p(table.concat(sep))
for round = 1, max_round do
  local line = { "| ", round, " |" }
  for _, c in ipairs(ORDER) do
    if rows[c[1]] then
      local v = by_round[round] and by_round[round][c[1]]
      line[#line + 1] = " " .. f(v, "%.0f") .. " |"
    end
  end
  p(table.concat(line))
end

print(table.concat(out, "\n"))
