-- rs-rate-limiting: counting and headers run in Rust (src/plugins/rate_limiting.rs,
-- an async access phase); see kong_rs/handler.lua. A refusal is answered
-- here with kong.response.error, as Kong's rate-limiting does: Kong's own
-- error body (content negotiation, request_id, custom error templates).
local handler = require("kong_rs.handler").new("kong_rs_plugins", "rs-rate-limiting")

local REFUSED = "rs_rate_limiting_refused" -- REFUSED_CTX_KEY in Rust
local rust_access = handler.access

function handler:access(conf)
  rust_access(self, conf)
  local ctx = kong.ctx.plugin
  if ctx[REFUSED] then
    ctx[REFUSED] = nil
    return kong.response.error(conf.error_code, conf.error_message)
  end
end

return handler
