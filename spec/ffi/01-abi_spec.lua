-- The Lua cdef of the FFI fast path must declare exactly what the C header
-- declares (ffi/kong_rs.h is the reference for other FFI users).

local kong_rs_ffi = require("kong_rs_ffi")


-- Declarations only: no comments, preprocessor lines or layout.
local function declarations(text)
  text = text:gsub("/%*.-%*/", ""):gsub("%-%-[^\n]*", "")
  local kept = {}
  for line in text:gmatch("[^\n]+") do
    if not line:match("^%s*#") then
      kept[#kept + 1] = line
    end
  end
  return (table.concat(kept, " "):gsub("%s+", " "):gsub("%s*([%(%)%{%};,%*])%s*", "%1"))
end


describe("FFI ABI", function()
  it("the Lua cdef matches ffi/kong_rs.h", function()
    local file = assert(io.open("ffi/kong_rs.h"))
    local header = file:read("*a")
    file:close()
    assert.equal(declarations(header), declarations(kong_rs_ffi.CDEF))
  end)

  it("return codes match the header's defines", function()
    local file = assert(io.open("ffi/kong_rs.h"))
    local header = file:read("*a")
    file:close()
    assert.equal(tonumber(header:match("#define KONG_RS_OK (%d+)")), kong_rs_ffi.OK)
    assert.equal(tonumber(header:match("#define KONG_RS_FAILED (%d+)")), kong_rs_ffi.FAILED)
    assert.equal(tonumber(header:match("#define KONG_RS_BAD_CALL (%d+)")), kong_rs_ffi.BAD_CALL)
    assert.equal(tonumber(header:match("#define KONG_RS_SHORT (%d+)")), kong_rs_ffi.SHORT)
  end)

  it("loads the native module's symbols", function()
    local lib = kong_rs_ffi.load("kong_rs_plugins")
    assert.is_not_nil(lib.kong_rs_ffi_call)
    assert.is_not_nil(lib.kong_rs_ffi_output)
    assert.is_not_nil(lib.kong_rs_ffi_instance_free)
  end)
end)
