-- rs-jwt: token lookup, verification, claims and consumer mapping run in Rust
-- (src/plugins/jwt.rs, an async access phase: JWKS fetches and consumer
-- loads are awaited); see kong_rs/handler.lua.
return require("kong_rs.handler").new("kong_rs_plugins", "rs-jwt")
