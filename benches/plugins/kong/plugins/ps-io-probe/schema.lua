-- ps-io-probe: the config of rs-io-probe's Redis modes (as lua-io-probe), for
-- a MODEL of the plugin-server mechanism (benches/plugin-server), not Kong's
-- plugin server. `socket` is the unix socket kong-rs-plugin-server listens
-- on; host and port are Redis's, used by the server itself.
return {
  name = "ps-io-probe",
  fields = {
    { protocols = { type = "set", elements = { type = "string", one_of = { "http", "https" } },
                    default = { "http", "https" } } },
    { config = {
        type = "record",
        fields = {
          { socket = { type = "string", required = true } },
          { mode = { type = "string", required = true, one_of = { "exit", "redis_get", "redis_incr" } } },
          { host = { type = "string", required = true } },
          { port = { type = "integer", required = true, between = { 1, 65535 } } },
          { timeout_ms = { type = "integer", default = 2000 } },
        },
    } },
  },
}
