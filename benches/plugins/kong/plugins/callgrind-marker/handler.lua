-- Bench-only (benches/instructions): a request to a route carrying this
-- plugin ends a measured interval. Its access phase has callgrind dump the
-- instruction counts since the previous mark, labelled with the request's
-- x-callgrind-mark header, and answers 204 (or 500 when nginx is not running
-- under valgrind, so a run cannot silently measure nothing).
local ffi = require("ffi")

ffi.cdef([[
void kong_rs_callgrind_dump(const char *label);
int kong_rs_callgrind_active(void);
]])

local libraries = {}

local CallgrindMarker = { PRIORITY = 1000000, VERSION = "0.1.0" }

function CallgrindMarker:access(conf)
  local lib = libraries[conf.library]
  if not lib then
    lib = ffi.load(conf.library)
    libraries[conf.library] = lib
  end
  if lib.kong_rs_callgrind_active() ~= 1 then
    return kong.response.exit(500, { message = "nginx is not running under valgrind" })
  end
  lib.kong_rs_callgrind_dump(kong.request.get_header("x-callgrind-mark") or "mark")
  return kong.response.exit(204)
end

return CallgrindMarker
