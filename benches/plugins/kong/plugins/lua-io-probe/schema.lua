-- lua-io-probe: the config of rs-io-probe's Redis modes.
return {
  name = "lua-io-probe",
  fields = {
    { protocols = { type = "set", elements = { type = "string", one_of = { "http", "https" } },
                    default = { "http", "https" } } },
    { config = {
        type = "record",
        fields = {
          { mode = { type = "string", required = true, one_of = { "exit", "redis_get", "redis_incr", "http" } } },
          { host = { type = "string", required = true } },
          { port = { type = "integer", required = true } },
          { timeout_ms = { type = "integer", default = 2000 } },
          { url = { type = "string" } }, -- rs-io-probe's field; the twin uses host and port
        },
    } },
  },
}
