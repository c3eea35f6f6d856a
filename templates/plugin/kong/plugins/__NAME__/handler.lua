-- __NAME__: the handler runs in Rust (src/lib.rs); the kong_rs glue comes
-- from the kong-rs-runtime rock.
return require("kong_rs.handler").new("__MODULE__", "__NAME__")
