-- rs-hello: the handler runs in Rust (src/plugins/); see kong_rs/handler.lua.
return require("kong_rs.handler").new("kong_rs_plugins", "rs-hello")
