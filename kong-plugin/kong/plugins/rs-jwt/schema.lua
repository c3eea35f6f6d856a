-- rs-jwt: the schema is generated from the Rust config type; see kong_rs/schema.lua.
return require("kong_rs.schema").new("kong_rs_plugins", "rs-jwt")
