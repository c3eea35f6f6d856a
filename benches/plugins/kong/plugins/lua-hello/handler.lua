-- rs-hello's twin in Lua, for side-by-side benchmarks.
local LuaHello = { PRIORITY = 1000, VERSION = "0.1.0" }

function LuaHello:access(conf)
  if conf.deny_status ~= nil and conf.deny_status ~= ngx.null then
    return kong.response.exit(conf.deny_status, conf.message)
  end
  kong.response.set_header("X-Hello-From-Rust", conf.message)
end

return LuaHello
