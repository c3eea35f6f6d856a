-- The mock upstream: answers every request with the request it received,
-- as JSON. GET /status/<code> answers that status (still echoing).
local json = require "kong_rs_gateway.json"

local ngx = ngx
local req = ngx.req
local var = ngx.var

local _M = {}

-- The mock upstream's own counter of the requests it answered (all
-- workers), for the specs: GET /__kong_rs_echo/hits on the upstream port
-- (or GET /kong-rs/upstream on the Admin API with --debug) proves whether a
-- request reached the upstream at all. Not counted itself.
local HITS_PATH = "/__kong_rs_echo/hits"

function _M.serve()
  local dict = ngx.shared.kong_rs
  if var.uri == HITS_PATH then
    ngx.header["Content-Type"] = "application/json"
    ngx.print(json.encode({ hits = dict and dict:get("echo:hits") or 0 }))
    return
  end
  if dict then dict:incr("echo:hits", 1, 0) end
  req.read_body()
  local body = req.get_body_data()
  if not body and req.get_body_file() then
    local f = io.open(req.get_body_file(), "rb")
    body = f and f:read("*a")
    if f then f:close() end
  end
  local uri = var.request_uri
  local path = uri:match("^[^?]*")
  local out = {
    method = req.get_method(),
    path = path,
    uri = uri,
    query = var.args or "",
    args = req.get_uri_args(100),
    headers = req.get_headers(200),
    body = body or "",
    http_version = req.http_version(),
    -- the proxy worker that handled the client (the gateway sends its pid;
    -- any worker may accept the upstream connection itself)
    worker_pid = tonumber(req.get_headers()["x-kong-rs-worker-pid"]) or ngx.worker.pid(),
    echo_worker_pid = ngx.worker.pid(),
  }
  local encoded, err = json.encode(out)
  if not encoded then
    encoded = json.encode({ error = err, worker_pid = ngx.worker.pid() })
  end
  local code = tonumber(path:match("^/status/(%d%d%d)$"))
  ngx.status = code or 200
  ngx.header["Content-Type"] = "application/json"
  ngx.header["X-Echo-Worker-Pid"] = ngx.worker.pid()
  ngx.print(encoded)
end

return _M
