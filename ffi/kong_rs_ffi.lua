-- kong_rs_ffi: loads the FFI fast path of a kong-rs native module.
-- The declarations mirror ffi/kong_rs.h (spec/ffi/01-abi_spec.lua compares them).
--
--   local lib = require("kong_rs_ffi").load("kong_rs_plugins")
--   lib.kong_rs_ffi_call(...)

local ffi = require("ffi")

local package = package
local error = error

local CDEF = [[
typedef struct kong_rs_instance kong_rs_instance_t;

int32_t kong_rs_ffi_call(kong_rs_instance_t *instance, int32_t phase, int32_t n_inputs,
                         const char *in1, size_t len1, const char *in2, size_t len2,
                         const char *in3, size_t len3, const char *in4, size_t len4,
                         uint8_t *buf, int32_t buf_size, int32_t *lengths);

int32_t kong_rs_ffi_output(kong_rs_instance_t *instance, uint8_t *buf, int32_t buf_size,
                           int32_t *lengths);

void kong_rs_ffi_instance_free(kong_rs_instance_t *instance);
]]
ffi.cdef(CDEF)

local _M = {
  CDEF = CDEF,
  OK = 0,
  FAILED = 1,
  BAD_CALL = 2,
  SHORT = 3,
  MAX_INPUTS = 4,
  -- Phase ids of kong_rs_ffi_call.
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
