return require("kong_rs.schema").new("kong_rs_test_plugins", "rs-bench-json")
