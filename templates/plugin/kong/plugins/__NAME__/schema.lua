-- __NAME__: the schema is generated from the Rust config type (src/lib.rs),
-- and the Admin API validates with the Rust constructor.
return require("kong_rs.schema").new("__MODULE__", "__NAME__")
