-- Benchmark workload "headers" in Rust (tests/plugins/src/bench.rs).
return require("kong_rs.handler").new("kong_rs_test_plugins", "rs-bench-headers")
