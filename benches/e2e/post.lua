-- wrk script: POST the JSON document named by $BENCH_BODY_FILE
-- (benches/data/valid.json) on every request.
local path = os.getenv("BENCH_BODY_FILE")
local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
