-- In-worker benchmark helper (src/plugins/bench.rs).
return require("kong_rs.handler").new("kong_rs_plugins", "rs-inworker")
