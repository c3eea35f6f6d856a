-- kong_rs_ffi: loads the FFI fast path of a kong-rs native module.
-- The declarations mirror ffi/kong_rs.h (a spec compares them).
--
--   local lib = require("kong_rs_ffi").load("kong_rs_plugins")
--   lib.kong_rs_ffi_run(...)

local ffi = require("ffi")

local package = package
local error = error

local CDEF = [[
typedef struct {
    const char *ptr;
    size_t len;
} kong_rs_bytes_t;

typedef struct {
    kong_rs_bytes_t actions;
    kong_rs_bytes_t body;
    int32_t status;
} kong_rs_output_t;

typedef struct kong_rs_instance kong_rs_instance_t;

int32_t kong_rs_ffi_run(kong_rs_instance_t *instance, int32_t phase,
                        const kong_rs_bytes_t *inputs, size_t n_inputs,
                        kong_rs_output_t *out, char *errbuf, size_t *errbuf_len);

void kong_rs_ffi_instance_free(kong_rs_instance_t *instance);
]]
ffi.cdef(CDEF)

local _M = {
  CDEF = CDEF,
  OK = 0,
  FAILED = 1,
  BAD_CALL = 2,
  -- Phase ids of kong_rs_ffi_run.
  PHASES = { rewrite = 1, access = 2, header_filter = 3, log = 6 },
  instance_type = ffi.typeof("kong_rs_instance_t *"),
}

local loaded = {}


--- The FFI library of native module `native_name`, found on package.cpath
-- (the same file `require` loaded; dlopen returns the same handle).
function _M.load(native_name)
  local lib = loaded[native_name]
  if lib then
    return lib
  end
  local path, err = package.searchpath(native_name, package.cpath)
  if not path then
    error("kong_rs_ffi: cannot find " .. native_name .. ": " .. err, 2)
  end
  lib = ffi.load(path)
  loaded[native_name] = lib
  return lib
end


return _M
