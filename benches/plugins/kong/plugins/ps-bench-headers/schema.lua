-- ps-bench-headers: the "headers" workload in a MODEL of the plugin-server mechanism
-- (benches/plugin-server), not Kong's plugin server. `socket` is the unix
-- socket kong-rs-plugin-server listens on.
return {
  name = "ps-bench-headers",
  fields = {
    { config = {
        type = "record",
        fields = {
          { socket = { type = "string", required = true } },
        },
    } },
  },
}
