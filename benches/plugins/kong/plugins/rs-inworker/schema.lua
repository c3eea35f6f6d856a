return require("kong_rs.schema").new("kong_rs_plugins", "rs-inworker")
